//! `stewardctl import` on Debian's own unit files, as the installed packages ship them
//! (openssh-server, dbus, cron, rsyslog, rsync, lighttpd, uuid-runtime, util-linux; `.ci/run`
//! installs them): each config it prints is accepted by `steward --check`, and every
//! directive of every file read appears in it with its file and line, carried over or not.
//! Then specifiers, drop-ins, optional environment files, templates and bad input, on units
//! written into a root of the test's own.

use std::path::{Path, PathBuf};
use std::process::Command;

use steward_integration_tests::*;

/// `stewardctl import ARGS`: (exit code, stdout, stderr).
fn import(args: &[&str]) -> (i32, String, String) {
    let (status, out, err) = run(Command::new(bin("stewardctl")).arg("import").args(args));
    let code = status
        .code()
        .unwrap_or_else(|| panic!("stewardctl import {args:?} was killed: {status:?}\n{err}"));
    (code, out, err)
}

/// `steward --check` on `text`: (exit code, stdout, stderr).
fn check(dir: &Path, text: &str) -> (i32, String, String) {
    let path = dir.join("imported.toml");
    std::fs::write(&path, text).unwrap();
    let (status, out, err) = run(Command::new(bin("steward"))
        .arg("--check")
        .arg("--config")
        .arg(&path));
    (status.code().unwrap_or(-1), out, err)
}

/// The `Key=value` lines of a unit file, by line number (continuations belong to the line
/// their key is on).
fn directive_lines(path: &Path) -> Vec<usize> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = Vec::new();
    let mut continued = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        let was_continued = continued;
        continued = trimmed.ends_with('\\') && !trimmed.starts_with(['#', ';']);
        if was_continued
            || trimmed.is_empty()
            || trimmed.starts_with(['#', ';', '['])
            || !trimmed.contains('=')
        {
            continue;
        }
        lines.push(i + 1);
    }
    lines
}

/// The unit files of Debian's packages that each import reads.
const DEBIAN: &[(&str, &[&str])] = &[
    ("ssh.socket", &["ssh.socket", "ssh.service"]),
    ("ssh.service", &["ssh.service", "ssh.socket"]),
    ("dbus.socket", &["dbus.socket", "dbus.service"]),
    ("cron.service", &["cron.service"]),
    ("rsyslog.service", &["rsyslog.service", "syslog.socket"]),
    ("getty@ttyS0.service", &["getty@.service"]),
    ("rsync.service", &["rsync.service"]),
    ("lighttpd.service", &["lighttpd.service"]),
    ("uuidd.socket", &["uuidd.socket", "uuidd.service"]),
];

fn installed(file: &str) -> PathBuf {
    let path = Path::new("/lib/systemd/system").join(file);
    // Named as the importer names it: the real file a symlink (merged /usr) leads to.
    std::fs::canonicalize(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: install the Debian packages .ci/run lists",
            path.display()
        )
    })
}

#[test]
fn debian_units_import_to_configs_steward_accepts_with_every_directive_accounted_for() {
    let dir = temp_dir();
    for (unit, files) in DEBIAN {
        let (code, out, err) = import(&[unit]);
        // Each of them has something steward does not do (sandboxing, ExecReload, …).
        assert_eq!(code, 1, "stewardctl import {unit}: {err}\n{out}");
        assert!(err.contains("not imported"), "{unit}: {err}");
        let (code, listed, check_err) = check(dir.path(), &out);
        assert_eq!(
            code, 0,
            "steward --check refused the import of {unit}:\n{check_err}\n{out}"
        );
        assert!(!listed.is_empty(), "{unit}: --check listed no service");
        for file in *files {
            let path = installed(file);
            for line in directive_lines(&path) {
                let at = format!("({}:{line})", path.display());
                assert!(
                    out.contains(&at),
                    "stewardctl import {unit}: the directive at {at} is not in the output:\n{out}"
                );
            }
        }
        let not_imported = out.matches("# not imported: ").count();
        assert!(
            err.contains(&format!("{not_imported} directive")),
            "{unit}: the count on stderr is not the comments' ({not_imported}): {err}"
        );
    }
}

#[test]
fn the_ssh_socket_and_service_carry_over_as_steward_keys() {
    let (_, out, _) = import(&["ssh.socket"]);
    for want in [
        "[service.ssh-pre]",
        "exec = [\"/usr/sbin/sshd\", \"-t\"]",
        "ready = \"exit\"",
        "[service.ssh]",
        "requires = [\"ssh-pre\"]",
        "exec = [\"/usr/sbin/sshd\", \"-D\"]",
        "ready = \"notify\"",
        "runtime_directory = [\"sshd\"]",
        "lazy = true",
        "keep_alive = true",
        "[[service.ssh.socket]]",
        "listen = \"[::]:22\"",
        "name = \"ssh.socket\"",
        "# not imported: KillMode=process",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
    let (_, getty, _) = import(&["getty@ttyS0.service"]);
    for want in [
        "[service.getty-ttyS0]",
        "stdio = \"/dev/ttyS0\"",
        "keep_alive = true",
        "restart_delay = \"0\"",
        "TERM = \"vt220\"",
        "exec = [\"/sbin/agetty\", \"-o\", '-p -- \\u', \"--noclear\", \"-\", \"vt220\"]",
    ] {
        assert!(getty.contains(want), "no {want:?} in:\n{getty}");
    }
}

/// A root of the test's own with unit files in its /etc/systemd/system.
struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    fn new() -> Root {
        let root = Root { dir: temp_dir() };
        root.write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
        root
    }

    fn write(&self, path: &str, text: &str) -> PathBuf {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, text).unwrap();
        full
    }

    fn unit(&self, name: &str, text: &str) -> PathBuf {
        self.write(&format!("etc/systemd/system/{name}"), text)
    }

    fn import(&self, units: &[&str]) -> (i32, String, String) {
        let root = self.dir.path().to_str().unwrap();
        let mut args = vec!["--root", root];
        args.extend_from_slice(units);
        import(&args)
    }

    /// An import that must succeed and check.
    fn imported(&self, units: &[&str]) -> String {
        let (code, out, err) = self.import(units);
        assert!(
            code == 0 || code == 1,
            "import {units:?}: exit {code}: {err}\n{out}"
        );
        let (code, _, check_err) = check(self.dir.path(), &out);
        assert_eq!(code, 0, "--check: {check_err}\n{out}");
        out
    }
}

#[test]
fn specifiers_resolve_for_a_template_instance() {
    let root = Root::new();
    root.unit(
        "echo@.service",
        "[Unit]\nDescription=echo on %I\n[Service]\nExecStart=/bin/echo %i %I %n %N %p %P %u %h 100%%\nRuntimeDirectory=%p-%i\n",
    );
    let out = root.imported(&["echo@a\\x2db.service"]);
    assert!(out.contains("[service.echo-a-b]"), "{out}");
    let exec = r#"exec = ["/bin/echo", 'a\x2db', "a-b", 'echo@a\x2db.service', 'echo@a\x2db', "echo", "echo", "root", "/root", "100%"]"#;
    assert!(out.contains(exec), "{out}");
    assert!(
        out.contains(r#"runtime_directory = ['echo-a\x2db']"#),
        "{out}"
    );
}

#[test]
fn a_drop_in_changes_exec_start_and_environment() {
    let root = Root::new();
    root.unit(
        "app.service",
        "[Service]\nEnvironment=MODE=slow LEVEL=1\nExecStart=/usr/bin/app --mode $MODE\n",
    );
    let dropin = root.unit(
        "app.service.d/override.conf",
        "[Service]\nEnvironment=MODE=fast\nExecStart=\nExecStart=/usr/bin/app --mode ${MODE} --level $LEVEL\n",
    );
    let out = root.imported(&["app.service"]);
    assert!(
        out.contains("exec = [\"/usr/bin/app\", \"--mode\", \"fast\", \"--level\", \"1\"]"),
        "{out}"
    );
    assert!(
        out.contains("environment = { MODE = \"fast\", LEVEL = \"1\" }"),
        "{out}"
    );
    let dropin = std::fs::canonicalize(dropin).unwrap();
    assert!(out.contains(&format!("({}:3)", dropin.display())), "{out}");
    // The first command line is there as overridden, not lost.
    assert!(
        out.contains("# ExecStart=/usr/bin/app --mode $MODE ("),
        "{out}"
    );
}

#[test]
fn a_missing_optional_environment_file_is_said_and_its_variables_go_to_sh() {
    let root = Root::new();
    root.unit(
        "opt.service",
        "[Service]\nEnvironmentFile=-/etc/default/opt\nExecStart=/usr/sbin/optd $OPTD_ARGS\n",
    );
    let out = root.imported(&["opt.service"]);
    assert!(
        out.contains("# optional; missing at import: nothing read"),
        "{out}"
    );
    assert!(
        out.contains("exec = [\"/bin/sh\", \"-c\", \"exec /usr/sbin/optd $OPTD_ARGS\"]"),
        "{out}"
    );
    assert!(out.contains("$OPTD_ARGS not set by the unit"), "{out}");
    // Not optional and missing: an error naming the line.
    let unit = root.unit(
        "must.service",
        "[Service]\nEnvironmentFile=/etc/default/must\nExecStart=/bin/true\n",
    );
    let (code, out, err) = root.import(&["must.service"]);
    assert_eq!(code, 2, "{out}{err}");
    let unit = std::fs::canonicalize(unit).unwrap();
    assert!(err.contains(&format!("{}:2", unit.display())), "{err}");
}

#[test]
fn a_template_without_an_instance_is_refused() {
    let root = Root::new();
    root.unit("worker@.service", "[Service]\nExecStart=/bin/true %i\n");
    let (code, out, err) = root.import(&["worker@.service"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("worker@.service"), "{err}");
}

#[test]
fn bad_unit_files_are_errors_naming_file_and_line_never_a_panic() {
    let root = Root::new();
    let mut long = String::from("[Service]\nExecStart=/bin/true\nDescription=");
    long.push_str(&"x".repeat(1 << 20));
    long.push('\n');
    let mut garbage: Vec<u8> = b"[Service]\n".to_vec();
    garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let cases: &[(&str, &[u8], &str)] = &[
        (
            "syntax.service",
            b"[Service]\nExecStart=/bin/true\n[Unit\n",
            ":3",
        ),
        (
            "section.service",
            b"[Service]\nExecStart=/bin/true\n[Sevrice]\nUser=x\n",
            ":3",
        ),
        ("long.service", long.as_bytes(), ":3"),
        ("garbage.service", &garbage, ":2"),
    ];
    for (name, text, line) in cases {
        let path = root.dir.path().join("etc/systemd/system").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        let (code, out, err) = root.import(&[name]);
        assert_eq!(code, 2, "{name}: {out}{err}");
        assert!(out.is_empty(), "{name}: printed {out}");
        let path = std::fs::canonicalize(&path).unwrap();
        assert!(
            err.contains(&format!("{}{line}", path.display())),
            "{name}: {err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
}

/// Every directive the issue lists as carried over, in units of the test's own: each
/// becomes its key, between units of the import dependencies become `after`/`requires`, and
/// the whole checks.
#[test]
fn every_carried_directive_becomes_its_key() {
    let root = Root::new();
    root.write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000::/srv:/bin/sh\n",
    );
    root.write("etc/group", "root:x:0:\nweb:x:1000:\nadm:x:4:\n");
    root.unit(
        "db.service",
        "[Unit]\nDescription=a database\n[Service]\nType=notify\nExecStart=/usr/bin/db\n\
         WatchdogSec=30\nWatchdogSignal=SIGQUIT\nNotifyAccess=all\nFileDescriptorStoreMax=4\n\
         TimeoutSec=2min\nKillSignal=SIGINT\n",
    );
    root.unit(
        "web.service",
        "[Unit]\nAfter=db.service network.target\nRequires=db.service\nWants=cache.service\n\
         [Service]\nExecStart=@/usr/bin/web web-main --port 8080\nRestart=always\nRestartSec=250ms\n\
         StartLimitBurst=3\nStartLimitIntervalSec=1min\nTimeoutStartSec=infinity\nTimeoutStopSec=7\n\
         User=web\nGroup=web\nSupplementaryGroups=adm\nWorkingDirectory=/srv\nUMask=027\n\
         LimitNOFILE=4096\nLimitCORE=infinity\nMemoryMax=512M\nTasksMax=64\nStandardOutput=null\n\
         StandardError=null\nStateDirectory=web\nCacheDirectory=web\nLogsDirectory=web\n\
         StateDirectoryMode=0750\n",
    );
    root.unit(
        "cache.service",
        "[Unit]\nBefore=web.service\n[Service]\nType=oneshot\nExecStart=/bin/mkdir -p /tmp/c\nExecStart=/bin/touch /tmp/c/ok\n",
    );
    root.unit(
        "echo.socket",
        "[Socket]\nListenStream=[::1]:7000\nListenDatagram=127.0.0.1:7001\nAccept=yes\nMaxConnections=5\nBacklog=32\n",
    );
    root.unit(
        "echo@.service",
        "[Service]\nExecStart=/usr/bin/echo-server\nStandardInput=socket\n",
    );
    root.unit(
        "ctl.socket",
        "[Socket]\nListenSequentialPacket=/run/ctl.sock\nSocketMode=0660\nSocketUser=web\nSocketGroup=adm\nFileDescriptorName=control\n",
    );
    root.unit("ctl.service", "[Service]\nExecStart=/usr/bin/ctld\n");
    root.unit(
        "forking.service",
        "[Service]\nType=forking\nExecStart=/usr/sbin/forkd\n",
    );
    let (code, out, err) = root.import(&[
        "db.service",
        "web.service",
        "cache.service",
        "ctl.socket",
        "forking.service",
    ]);
    assert_eq!(code, 1, "{err}\n{out}");
    let (code, _, check_err) = check(root.dir.path(), &out);
    // echo.socket's datagram listener is refused by steward with Accept=yes: checked below.
    assert_eq!(code, 0, "{check_err}\n{out}");
    for want in [
        "ready = \"notify\"",
        "watchdog = \"30s\"",
        "watchdog_signal = \"SIGQUIT\"",
        "notify_access = \"all\"",
        "fd_store = 4",
        "start_timeout = \"2m\"",
        "stop_timeout = \"2m\"",
        "stop_signal = \"SIGINT\"",
        "after = [\"db\", \"cache\"]",
        "requires = [\"db\"]",
        "exec = [\"/usr/bin/web\", \"--port\", \"8080\"]",
        "# the `@` prefix: steward passes the path as argv[0], not \"web-main\"",
        "keep_alive = true",
        "restart_delay = \"250ms\"",
        "start_limit_burst = 3",
        "start_limit_interval = \"1m\"",
        "start_timeout = \"infinity\"",
        "stop_timeout = \"7s\"",
        "user = \"web\"",
        "group = \"web\"",
        "supplementary_groups = [\"adm\"]",
        "working_directory = \"/srv\"",
        "umask = \"0027\"",
        "limits = { nofile = 4096, core = \"infinity\" }",
        "memory_max = \"512M\"",
        "tasks_max = 64",
        "stdio = \"null\"",
        "state_directory = [\"web\"]",
        "cache_directory = [\"web\"]",
        "logs_directory = [\"web\"]",
        "directory_mode = \"0750\"",
        "ready = \"exit\"",
        "exec = [\"/bin/sh\", \"-c\", \"/bin/mkdir -p /tmp/c && /bin/touch /tmp/c/ok\"]",
        "path = \"/run/ctl.sock\"",
        "type = \"seqpacket\"",
        "mode = \"0660\"",
        "owner = \"web\"",
        "group = \"adm\"",
        "name = \"control\"",
        "# not imported: Type=forking (",
        "run the daemon in the foreground",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }

    let (code, out, err) = root.import(&["echo.socket"]);
    assert!(code == 0 || code == 1, "{err}\n{out}");
    for want in [
        "[service.echo]",
        "accept = true",
        "max_connections = 5",
        "stdio = \"socket\"",
        "listen = \"[::1]:7000\"",
        "backlog = 32",
    ] {
        assert!(out.contains(want), "no {want:?} in:\n{out}");
    }
}

/// `--unit-path DIR` is searched before the system's directories: its unit shadows theirs,
/// and a partner it lacks is still found in them.
#[test]
fn a_unit_path_is_searched_first() {
    let root = Root::new();
    root.unit("svc.service", "[Service]\nExecStart=/usr/bin/system-one\n");
    root.unit("svc.socket", "[Socket]\nListenStream=/run/svc.sock\n");
    let extra = temp_dir();
    std::fs::write(
        extra.path().join("svc.service"),
        "[Service]\nExecStart=/usr/bin/mine\n",
    )
    .unwrap();
    let (code, out, err) =
        root.import(&["--unit-path", extra.path().to_str().unwrap(), "svc.socket"]);
    assert!(code == 0 || code == 1, "{err}\n{out}");
    assert!(out.contains("exec = [\"/usr/bin/mine\"]"), "{out}");
    assert!(out.contains("path = \"/run/svc.sock\""), "{out}");
    assert!(!out.contains("system-one"), "{out}");
}
