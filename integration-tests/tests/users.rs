//! Users and groups resolved at every spawn, from `/etc/passwd` and `/etc/group` only. The
//! tests that change those files run steward in a mount namespace of its own where they are
//! bind mounts of copies in the test's directory (and so is `/etc/nsswitch.conf`): the host's
//! `/etc` is read, never touched.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use steward_integration_tests::*;

/// A steward whose `/etc/passwd` and `/etc/group` are `etc/passwd` and `etc/group` of its test
/// directory, copies of the host's to begin with.
struct Isolated {
    s: Steward,
    etc: PathBuf,
}

impl Isolated {
    /// Writes `config` (`@DIR@` replaced) and starts steward on it in a mount namespace of its
    /// own. `nsswitch` is the text of its `/etc/nsswitch.conf`, if it gets a copy; `before` is
    /// shell run in the namespace before steward (more mounts, a control experiment); `trace`
    /// runs steward under `strace -f -e trace=open,openat -o TRACE` (rustix opens with open(2)
    /// on x86-64, glibc's dlopen with openat(2)).
    fn start(config: &str, nsswitch: Option<&str>, before: &str, trace: Option<&Path>) -> Isolated {
        let dir = temp_dir();
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        for file in ["passwd", "group"] {
            std::fs::copy(Path::new("/etc").join(file), etc.join(file)).unwrap();
        }
        let mut script = String::from("set -e\n");
        let mut mounts = vec!["passwd", "group"];
        if let Some(text) = nsswitch {
            std::fs::write(etc.join("nsswitch.conf"), text).unwrap();
            mounts.push("nsswitch.conf");
        }
        for file in mounts {
            script.push_str(&format!(
                "mount --bind '{}' /etc/{file}\n",
                etc.join(file).display()
            ));
        }
        script.push_str(before);
        script.push_str("\nset +e\n");
        match trace {
            Some(out) => script.push_str(&format!(
                "exec strace -f -qq -e trace=open,openat -o '{}' \"$0\" \"$@\"\n",
                out.display()
            )),
            None => script.push_str("exec \"$0\" \"$@\"\n"),
        }
        let path = dir.path().join("steward.toml");
        let text = config.replace("@DIR@", dir.path().to_str().expect("utf-8 temp dir"));
        std::fs::write(&path, text).unwrap();
        let cmd = Steward::command_under(
            &[
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                &script,
            ],
            &bin("steward"),
            &path,
            dir.path(),
        );
        Isolated {
            s: Steward::spawn(cmd, dir),
            etc,
        }
    }

    /// Appends `line` to the namespace's `/etc/NAME`, in place (a bind mount holds the inode, so
    /// a replacement by rename would not be seen through it).
    fn append(&self, name: &str, line: &str) {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.etc.join(name))
            .unwrap();
        writeln!(file, "{line}").unwrap();
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.s.dir.path().join(name)).unwrap_or_default()
    }

    /// The manager's pid, from its start line (under strace, the harness's child is strace).
    fn manager_pid(&self) -> i32 {
        self.s
            .wait_for("version")
            .split("(pid ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|pid| pid.parse().ok())
            .expect("the start line names the manager's pid")
    }
}

/// `stewardctl status NAME`: its `last failure:` line.
fn last_failure(s: &Steward, name: &str) -> String {
    let (_, out, err) = s.ctl(&["status", name]);
    out.lines()
        .find_map(|l| l.trim().strip_prefix("last failure: "))
        .unwrap_or_else(|| panic!("no last failure for {name}:\n{out}{err}"))
        .to_string()
}

/// A service unknown to both the host and the config's load fails at the step of what is
/// missing, with systemd's status for it, and counts as any failed start. No root needed: the
/// spawn fails before the executor runs.
#[test]
fn an_unknown_user_fails_at_user_217_and_an_unknown_group_at_group_216() {
    let s = Steward::start(
        r#"
[service.nouser]
exec = ["/bin/true"]
user = "steward-test-no-such-user"

[service.nogroup]
exec = ["/bin/true"]
group = "steward-test-no-such-group"

[service.again]
exec = ["/bin/true"]
user = "steward-test-no-such-user"
keep_alive = true
restart_delay = "0"
start_limit_burst = 2
start_limit_cooldown = "none"
"#,
    );
    s.wait_for("warning: unknown user \"steward-test-no-such-user\"");
    s.wait_for("warning: unknown group \"steward-test-no-such-group\"");
    s.wait_for("nouser: failed at user: unknown user \"steward-test-no-such-user\"");
    s.wait_for("nogroup: failed at group: unknown group \"steward-test-no-such-group\"");
    s.wait_state("nouser", "failed");
    s.wait_state("nogroup", "failed");
    assert_eq!(
        last_failure(&s, "nouser"),
        "failed at user: unknown user \"steward-test-no-such-user\" (status 217)"
    );
    assert_eq!(
        last_failure(&s, "nogroup"),
        "failed at group: unknown group \"steward-test-no-such-group\" (status 216)"
    );
    let json = s.service("nouser");
    assert_eq!(json["failure"]["step"], "user");
    assert_eq!(json["failure"]["status"], 217);
    // Counted against the start limit like any failed start: the first try and 2 restarts.
    s.wait_for("again: start limit reached");
    s.wait_state("again", "failed");
    assert_eq!(s.count("again: failed at user"), 3);
}

/// A user created after steward started (an earlier boot step's `useradd`) works at the next
/// spawn, without a reload, with its primary group and its environment from the new entry.
#[test]
#[ignore = "needs root"]
fn a_user_appended_after_start_runs_at_the_next_spawn() {
    let mut t = Isolated::start(
        r#"
[service.late]
exec = ["/bin/sh", "-c", "id -u; id -g; id -G; echo $HOME $USER $LOGNAME"]
user = "late-steward-test"
supplementary_groups = ["latesup-steward-test"]
autostart = false
stdio = "@DIR@/out"
"#,
        None,
        "",
        None,
    );
    t.s.wait_for("warning: unknown user \"late-steward-test\"");
    t.s.wait_for("warning: unknown group \"latesup-steward-test\"");
    let (code, _, err) = t.s.ctl(&["start", "late"]);
    assert_ne!(code, 0, "{err}");
    assert_eq!(
        last_failure(&t.s, "late"),
        "failed at user: unknown user \"late-steward-test\" (status 217)"
    );
    t.append(
        "passwd",
        "late-steward-test:x:4242:4243::/home/late-steward-test:/bin/sh",
    );
    let (code, _, err) = t.s.ctl(&["start", "late"]);
    assert_ne!(code, 0, "{err}");
    assert_eq!(
        last_failure(&t.s, "late"),
        "failed at group: unknown group \"latesup-steward-test\" (status 216)"
    );
    t.append("group", "latesup-steward-test:x:4244:");
    let (code, _, err) = t.s.ctl(&["start", "late"]);
    assert_eq!(code, 0, "{err}");
    t.s.wait_for("late: exited with status 0");
    assert_eq!(
        t.read("out"),
        "4242\n4243\n4243 4244\n/home/late-steward-test late-steward-test late-steward-test\n"
    );
    assert!(t.s.terminate().success());
}

/// Accept-mode instances and lazy activations resolve at their spawn too: a client of an
/// accept service whose user does not exist yet waits in the backlog (the failure in
/// `status`), and is served once the user is appended; a lazy service then runs as it.
#[test]
#[ignore = "needs root"]
fn accept_instances_and_lazy_activations_resolve_at_their_spawn() {
    let mut t = Isolated::start(
        r#"
[service.acc]
exec = ["/bin/sh", "-c", "id -u"]
accept = true
stdio = "socket"
user = "late-steward-test"
[[service.acc.socket]]
path = "@DIR@/acc.sock"

[service.lazy]
exec = ["/bin/sh", "-c", "id -u"]
stdio = "@DIR@/lazy-out"
lazy = true
user = "late-steward-test"
[[service.lazy.socket]]
path = "@DIR@/lazy.sock"
"#,
        None,
        "",
        None,
    );
    t.s.wait_state("acc", "listening");
    let mut client = UnixStream::connect(t.s.dir.path().join("acc.sock")).unwrap();
    t.s.wait_for(
        "acc: cannot start an instance: failed at user: unknown user \"late-steward-test\"",
    );
    assert_eq!(
        last_failure(&t.s, "acc"),
        "failed at user: unknown user \"late-steward-test\" (status 217)"
    );
    t.append(
        "passwd",
        "late-steward-test:x:4242:4242::/home/late-steward-test:/bin/sh",
    );
    // The waiting client is served by the next try, as the new user.
    let line = read_first_line(&mut client, DEADLINE).unwrap();
    assert_eq!(line, "4242\n");
    let _waiting = UnixStream::connect(t.s.dir.path().join("lazy.sock")).unwrap();
    t.s.wait_for("lazy: exited with status 0");
    assert_eq!(t.read("lazy-out"), "4242\n");
    assert!(t.s.terminate().success());
}

/// A shared object whose `_nss_hesiod_*` lookups never return, built with the system's C
/// compiler: what a name service that waits for a server PID 1 has not started looks like.
fn hanging_nss_module(dir: &Path) -> PathBuf {
    let source = dir.join("hang.c");
    std::fs::write(
        &source,
        "#include <unistd.h>\n\
         static int hang(void) { for (;;) pause(); }\n\
         int _nss_hesiod_getpwnam_r(void) { return hang(); }\n\
         int _nss_hesiod_getpwuid_r(void) { return hang(); }\n\
         int _nss_hesiod_getgrnam_r(void) { return hang(); }\n\
         int _nss_hesiod_getgrgid_r(void) { return hang(); }\n",
    )
    .unwrap();
    let module = dir.join("libnss_hang.so.2");
    let (status, _, err) = run(Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&module)
        .arg(&source));
    assert!(status.success(), "building the hanging NSS module: {err}");
    module
}

/// The NSS module that a manager using libc's getpwnam would load, in the order glibc tries
/// them: `hang` (no such module) and `hesiod`, which in this namespace is a module that never
/// answers. A control lookup with getent in the same namespace hangs; steward spawns the
/// service with a name at once, and strace shows it never even looks for an NSS library.
#[test]
#[ignore = "needs root"]
fn an_nsswitch_naming_a_hanging_module_does_not_slow_a_spawn() {
    let build = temp_dir();
    let module = hanging_nss_module(build.path());
    let hesiod = Path::new("/lib/x86_64-linux-gnu/libnss_hesiod.so.2");
    // Where Debian keeps it; elsewhere the nonexistent `hang` still shows any NSS use.
    let hang_hesiod = if hesiod.exists() {
        format!(
            "mount --bind '{}' '{}'\n\
             code=0; timeout 1 getent passwd late-steward-test >/dev/null || code=$?\n\
             echo \"control: getent exited $code\" >&2\n",
            module.display(),
            hesiod.display()
        )
    } else {
        String::new()
    };
    let trace_dir = temp_dir();
    let trace = trace_dir.path().join("trace");
    let mut t = Isolated::start(
        r#"
[service.named]
exec = ["/bin/sh", "-c", "id -u"]
stdio = "@DIR@/out"
user = "late-steward-test"
group = "latesup-steward-test"
autostart = false
"#,
        Some("passwd: hang hesiod files\ngroup: hang hesiod files\nshadow: files\n"),
        &hang_hesiod,
        Some(&trace),
    );
    if hesiod.exists() {
        // timeout's status: the lookup through NSS would have hung.
        t.s.wait_for("control: getent exited 124");
    }
    let manager = t.manager_pid();
    t.append(
        "passwd",
        "late-steward-test:x:4242:4243::/home/late-steward-test:/bin/sh",
    );
    t.append("group", "latesup-steward-test:x:4243:");
    let started = Instant::now();
    let (code, _, err) = t.s.ctl(&["start", "named"]);
    assert_eq!(code, 0, "{err}");
    t.s.wait_for("named: exited with status 0");
    // Prompt even under strace: a hung lookup would never end.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the spawn took {:?}",
        started.elapsed()
    );
    assert_eq!(t.read("out"), "4242\n");
    send_signal(manager, libc::SIGTERM).unwrap();
    assert!(t.s.wait_exit().success());
    let trace = std::fs::read_to_string(&trace).unwrap();
    let by_manager: Vec<&str> = trace
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(&manager.to_string()))
        .collect();
    assert!(
        by_manager.iter().any(|l| l.contains("/etc/passwd")),
        "the trace should show the manager reading /etc/passwd:\n{trace}"
    );
    let nss: Vec<&&str> = by_manager
        .iter()
        .filter(|l| l.contains("libnss_") || l.contains("nsswitch.conf"))
        .collect();
    assert!(nss.is_empty(), "the manager looked at NSS: {nss:#?}");
}

/// A socket file is made at load, so its `owner` and `group` resolve then: the service's user
/// and primary group by default, its own when set, and the manager's (with a warning) for a
/// name unknown at that moment, rather than a guess.
#[test]
#[ignore = "needs root"]
fn socket_files_are_owned_as_the_names_resolve_at_load() {
    use std::os::unix::fs::MetadataExt;
    let s = Steward::start(
        r#"
[service.web]
exec = ["/bin/true"]
user = "nobody"
lazy = true
keep_alive = true
[[service.web.socket]]
path = "@DIR@/default.sock"
[[service.web.socket]]
path = "@DIR@/named.sock"
owner = "root"
group = "users"
[[service.web.socket]]
path = "@DIR@/unknown.sock"
owner = "steward-test-no-such-user"
group = "steward-test-no-such-group"
"#,
    );
    s.wait_for("warning: unknown user \"steward-test-no-such-user\": the socket file keeps the manager's user until a reload");
    s.wait_for("warning: unknown group \"steward-test-no-such-group\": the socket file keeps the manager's group until a reload");
    s.wait_state("web", "listening");
    let id = |args: &[&str]| -> u32 {
        let out = run(Command::new("id").args(args)).1;
        out.trim().parse().unwrap()
    };
    let users = run(Command::new("getent").args(["group", "users"])).1;
    let users: u32 = users.split(':').nth(2).unwrap().parse().unwrap();
    let owner = |name: &str| {
        let meta = std::fs::metadata(s.dir.path().join(name)).unwrap();
        (meta.uid(), meta.gid())
    };
    assert_eq!(
        owner("default.sock"),
        (id(&["-u", "nobody"]), id(&["-g", "nobody"]))
    );
    assert_eq!(owner("named.sock"), (0, users));
    assert_eq!(owner("unknown.sock"), (id(&["-u"]), id(&["-g"])));
}
