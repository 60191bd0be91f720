//! `import`'s unit reader on Debian's own unit files (`tests/fixtures/units/`, copied from
//! bookworm), installed in a root laid out as Debian's: every fixture reads with its provenance,
//! pairs with its partner, and resolves its command lines; drop-ins, optional environment
//! files, templates and specifiers behave as in systemd; bad files fail naming file and line.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use stewardctl::import::{
    self, Error, Import, Loader, Request, Section, Unit, UserSpecifiers, read_environment_file,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/units");
const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/unit_file");

/// A Debian-like root in a private directory, removed at the end: the fixtures in
/// /usr/lib/systemd/system (reached as /lib through the merged-/usr link), the aliases and
/// enablement links `systemctl enable` makes in /etc/systemd/system, and an /etc/passwd.
struct Root(PathBuf);

impl Root {
    fn new() -> Root {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "stewardctl-import-fixtures-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let lib = root.join("usr/lib/systemd/system");
        fs::create_dir_all(&lib).unwrap();
        for fixture in fixtures() {
            fs::copy(Path::new(FIXTURES).join(&fixture), lib.join(&fixture)).unwrap();
        }
        symlink("usr/lib", root.join("lib")).unwrap();
        let root = Root(root);
        root.link(
            "etc/systemd/system/sshd.service",
            "/lib/systemd/system/ssh.service",
        );
        root.link(
            "etc/systemd/system/syslog.service",
            "/lib/systemd/system/rsyslog.service",
        );
        root.link(
            "etc/systemd/system/multi-user.target.wants/ssh.service",
            "/lib/systemd/system/ssh.service",
        );
        root.link(
            "etc/systemd/system/getty.target.wants/getty@tty1.service",
            "/lib/systemd/system/getty@.service",
        );
        root.write(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nuuidd:x:100:101::/run/uuidd:/usr/sbin/nologin\n",
        );
        root
    }

    fn write(&self, path: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let full = self.0.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        fs::write(&full, text).unwrap();
        full
    }

    fn link(&self, path: &str, target: &str) {
        let full = self.0.join(path);
        fs::create_dir_all(full.parent().unwrap()).unwrap();
        symlink(target, full).unwrap();
    }

    fn loader(&self) -> Loader {
        Loader::new(&self.0, &[], UserSpecifiers::Manager).unwrap()
    }

    fn load(&self, units: &[&str]) -> Result<Vec<Import>, Error> {
        let request = Request {
            root: self.0.clone(),
            units: units.iter().map(|u| u.to_string()).collect(),
            ..Request::default()
        };
        import::load(&request).map(|loaded| loaded.imports)
    }

    fn lib(&self, name: &str) -> PathBuf {
        self.0.join("usr/lib/systemd/system").join(name)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The fixture unit files, by name.
fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(FIXTURES)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".service") || n.ends_with(".socket"))
        .collect();
    names.sort();
    names
}

/// How many entries a unit has in each section.
fn per_section(unit: &Unit) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for entry in &unit.entries {
        *counts.entry(entry.section.name()).or_default() += 1;
    }
    counts
}

/// The values of `key` in `[Service]` that count, as a list directive reads them: those after
/// the last reset.
fn effective<'a>(unit: &'a Unit, key: &str) -> Vec<&'a import::Entry> {
    let all: Vec<_> = unit.get(&Section::Service, key).collect();
    let start = all.iter().rposition(|e| e.is_reset()).map_or(0, |i| i + 1);
    all[start..].to_vec()
}

#[test]
fn every_fixture_reads_with_its_provenance() {
    let root = Root::new();
    let loader = root.loader();
    // unit (instances for the templates): [Unit], [Service] or [Socket], [Install] entries.
    let expected: &[(&str, [usize; 3])] = &[
        ("cron.service", [3, 5, 1]),
        ("dbus.service", [3, 5, 0]),
        ("dbus.socket", [1, 1, 0]),
        ("getty@tty1.service", [10, 14, 2]),
        ("lighttpd.service", [2, 6, 1]),
        ("rsync.service", [4, 6, 1]),
        ("rsyslog.service", [5, 5, 2]),
        ("serial-getty@ttyS0.service", [10, 11, 1]),
        ("ssh.service", [4, 11, 2]),
        ("ssh.socket", [3, 2, 1]),
        ("syslog.socket", [9, 5, 0]),
        ("uuidd.service", [3, 14, 1]),
        ("uuidd.socket", [1, 1, 1]),
    ];
    assert_eq!(expected.len(), fixtures().len(), "one row per fixture");
    for (name, [unit_n, own_n, install_n]) in expected {
        let unit = loader.unit(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let own = match unit.kind() {
            import::UnitKind::Service => "Service",
            import::UnitKind::Socket => "Socket",
        };
        let counts = per_section(&unit);
        let count = |s: &str| counts.get(s).copied().unwrap_or(0);
        assert_eq!(
            [count("Unit"), count(own), count("Install")],
            [*unit_n, *own_n, *install_n],
            "{name}: {counts:?}"
        );
        assert_eq!(unit.entries.len(), unit_n + own_n + install_n, "{name}");
        // Every entry names the file it is in and a line of it that says so.
        let text = fs::read_to_string(&unit.fragment).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for entry in &unit.entries {
            assert_eq!(entry.origin.file.as_ref(), unit.fragment, "{name}");
            let line = lines[entry.origin.line - 1];
            assert!(
                line.starts_with(&format!("{}=", entry.key)),
                "{name}: {line}"
            );
            // No fixture uses a specifier the import cannot resolve.
            unit.expand(entry).unwrap_or_else(|e| panic!("{name}: {e}"));
            if entry.key.starts_with("Exec") {
                let commands = unit.commands(entry).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(commands.len(), 1, "{name}: {}", entry.value);
            }
        }
    }
}

#[test]
fn the_command_lines_of_the_fixtures() {
    let root = Root::new();
    let loader = root.loader();
    let argv = |unit: &str, key: &str| -> Vec<Vec<String>> {
        let unit = loader.unit(unit).unwrap();
        unit.get(&Section::Service, key)
            .flat_map(|e| unit.commands(e).unwrap())
            .map(|c| c.argv)
            .collect()
    };
    assert_eq!(
        argv("ssh.service", "ExecStart"),
        [["/usr/sbin/sshd", "-D", "$SSHD_OPTS"]]
    );
    assert_eq!(
        argv("ssh.service", "ExecReload"),
        [
            vec!["/usr/sbin/sshd", "-t"],
            vec!["/bin/kill", "-HUP", "$MAINPID"]
        ]
    );
    let getty = loader.unit("getty@tty1.service").unwrap();
    let start = getty.last(&Section::Service, "ExecStart").unwrap();
    let command = &getty.commands(start).unwrap()[0];
    assert!(command.prefixes.ignore_failure);
    assert_eq!(command.path, "/sbin/agetty");
    assert_eq!(
        command.argv,
        ["/sbin/agetty", "-o", r"-p -- \u", "--noclear", "-", "$TERM"]
    );
    // $TERM is not set by the unit: it expands to nothing, as in systemd.
    assert_eq!(command.expand(|_| None).len(), 5);
    assert_eq!(
        argv("dbus.service", "ExecStart")[0][1..],
        [
            "--system",
            "--address=systemd:",
            "--nofork",
            "--nopidfile",
            "--systemd-activation",
            "--syslog-only"
        ]
    );
}

fn names(units: &[Unit]) -> Vec<String> {
    units.iter().map(|u| u.name.to_string()).collect()
}

fn summary(imports: &[Import]) -> Vec<(String, Vec<String>)> {
    imports
        .iter()
        .map(|i| (i.service.name.to_string(), names(&i.sockets)))
        .collect()
}

fn pair(service: &str, sockets: &[&str]) -> (String, Vec<String>) {
    (
        service.to_string(),
        sockets.iter().map(|s| s.to_string()).collect(),
    )
}

#[test]
fn sockets_and_services_pair_both_ways() {
    let root = Root::new();
    assert_eq!(
        summary(&root.load(&["ssh.socket"]).unwrap()),
        [pair("ssh.service", &["ssh.socket"])]
    );
    // Asking for the service finds its socket; asking for both gives one import.
    assert_eq!(
        summary(&root.load(&["ssh.service", "ssh.socket", "sshd"]).unwrap()),
        [pair("ssh.service", &["ssh.socket"])]
    );
    assert_eq!(
        summary(
            &root
                .load(&["dbus.service", "uuidd.socket", "cron.service"])
                .unwrap()
        ),
        [
            pair("dbus.service", &["dbus.socket"]),
            pair("uuidd.service", &["uuidd.socket"]),
            pair("cron.service", &[]),
        ]
    );
    // syslog.socket activates syslog.service, which Debian links to rsyslog.service.
    assert_eq!(
        summary(&root.load(&["syslog.socket"]).unwrap()),
        [pair("rsyslog.service", &["syslog.socket"])]
    );
    assert_eq!(
        summary(&root.load(&["rsyslog.service"]).unwrap()),
        [pair("rsyslog.service", &["syslog.socket"])]
    );
    let ssh = &root.load(&["sshd.service"]).unwrap()[0];
    assert_eq!(ssh.requested, "sshd.service");
    assert_eq!(names(std::slice::from_ref(&ssh.service)), ["ssh.service"]);
    assert_eq!(ssh.service.wanted_by, ["multi-user.target"]);
    // ssh.socket exists but is not enabled: the mapper can tell.
    assert!(ssh.sockets[0].wanted_by.is_empty());
}

#[test]
fn accept_yes_pairs_with_the_template() {
    let root = Root::new();
    // Accept=yes in a drop-in turns ssh.socket into an inetd-style socket, whose template
    // bookworm does not ship.
    root.write(
        "etc/systemd/system/ssh.socket.d/accept.conf",
        "[Socket]\nAccept=yes\n",
    );
    let e = root.load(&["ssh.socket"]).unwrap_err();
    assert!(
        e.to_string().starts_with("ssh@.service: no such unit in "),
        "{e}"
    );
    // The ssh@.service older Debian releases shipped.
    root.write(
        "etc/systemd/system/ssh@.service",
        "[Unit]\nDescription=OpenBSD Secure Shell server per-connection daemon\n\
         [Service]\nEnvironmentFile=-/etc/default/ssh\n\
         ExecStart=-/usr/sbin/sshd -i $SSHD_OPTS\nStandardInput=socket\n",
    );
    let imports = root.load(&["ssh.socket"]).unwrap();
    assert_eq!(summary(&imports), [pair("ssh@.service", &["ssh.socket"])]);
    let service = &imports[0].service;
    let start = service.last(&Section::Service, "ExecStart").unwrap();
    assert_eq!(
        service.commands(start).unwrap()[0].argv,
        ["/usr/sbin/sshd", "-i", "$SSHD_OPTS"]
    );
    // Asked from the service side, an instance finds the same socket.
    assert_eq!(
        summary(
            &root
                .load(&["ssh@1-10.0.0.1:22-10.0.0.2:5000.service"])
                .unwrap()
        ),
        [pair(
            "ssh@1-10.0.0.1:22-10.0.0.2:5000.service",
            &["ssh.socket"]
        )]
    );
}

#[test]
fn a_dropin_overrides_exec_start_and_environment() {
    let root = Root::new();
    let dropin = root.write(
        "etc/systemd/system/ssh.service.d/override.conf",
        "[Service]\nExecStart=\nExecStart=/usr/sbin/sshd -D -o LogLevel=VERBOSE $SSHD_OPTS\n\
         Environment=SSHD_OPTS=-4 \"MOTD=hello world\"\n",
    );
    let unit = root.loader().unit("ssh.service").unwrap();
    assert_eq!(unit.dropins, std::slice::from_ref(&dropin));
    // Every ExecStart= is kept in order, the reset included...
    let all: Vec<_> = unit
        .get(&Section::Service, "ExecStart")
        .map(|e| (e.value.as_str(), e.origin.to_string()))
        .collect();
    let fragment = root.lib("ssh.service");
    assert_eq!(
        all,
        [
            (
                "/usr/sbin/sshd -D $SSHD_OPTS",
                format!("{}:10", fragment.display())
            ),
            ("", format!("{}:2", dropin.display())),
            (
                "/usr/sbin/sshd -D -o LogLevel=VERBOSE $SSHD_OPTS",
                format!("{}:3", dropin.display())
            ),
        ]
    );
    // ...and read as systemd does, the one after the reset counts.
    let start = effective(&unit, "ExecStart");
    assert_eq!(start.len(), 1);
    let command = &unit.commands(start[0]).unwrap()[0];
    assert_eq!(
        command.argv[1..],
        ["-D", "-o", "LogLevel=VERBOSE", "$SSHD_OPTS"]
    );
    let environment = unit
        .assignments(unit.last(&Section::Service, "Environment").unwrap())
        .unwrap();
    let vars: Vec<_> = environment
        .vars
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str(), v.origin.line))
        .collect();
    assert_eq!(vars, [("SSHD_OPTS", "-4", 4), ("MOTD", "hello world", 4)]);
    let env = |name: &str| {
        environment
            .vars
            .iter()
            .find(|v| v.name == name)
            .map(|v| v.value.clone())
    };
    assert_eq!(
        command.expand(env),
        ["/usr/sbin/sshd", "-D", "-o", "LogLevel=VERBOSE", "-4"]
    );
}

#[test]
fn a_missing_optional_environment_file() {
    let root = Root::new();
    let unit = root.loader().unit("ssh.service").unwrap();
    let entry = unit.last(&Section::Service, "EnvironmentFile").unwrap();
    let file = unit.environment_file(entry).unwrap().unwrap();
    assert_eq!(file.path, "/etc/default/ssh");
    assert!(file.optional);
    // Not there: skipped, with the reason kept for whoever wants to say so.
    let read = read_environment_file(&root.0, &file, &entry.origin).unwrap();
    assert!(read.vars.is_empty());
    assert_eq!(read.skipped.len(), 1);
    assert_eq!(
        read.skipped[0].to_string(),
        format!(
            "{}:8: the environment file {} does not exist",
            root.lib("ssh.service").display(),
            root.0.join("etc/default/ssh").display()
        )
    );
    // There, as Debian writes it.
    root.write(
        "etc/default/ssh",
        "# Default settings for openssh-server.\n\n# Options to pass to sshd\nSSHD_OPTS=\n",
    );
    let read = read_environment_file(&root.0, &file, &entry.origin).unwrap();
    assert_eq!(read.vars.len(), 1);
    assert_eq!(
        (read.vars[0].name.as_str(), read.vars[0].value.as_str()),
        ("SSHD_OPTS", "")
    );
    assert_eq!(read.vars[0].origin.line, 4);
    // Without the '-', a missing file is an error.
    let required = import::EnvironmentFile {
        optional: false,
        path: "/etc/default/none".into(),
    };
    let e = read_environment_file(&root.0, &required, &entry.origin).unwrap_err();
    assert!(matches!(e, Error::MissingEnvironmentFile { .. }), "{e}");
}

#[test]
fn a_template_without_an_instance() {
    let root = Root::new();
    for asked in ["getty@.service", "serial-getty@.service"] {
        let e = root.load(&[asked]).unwrap_err();
        assert!(matches!(e, Error::NeedsInstance { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("is a template: name an instance of it"),
            "{e}"
        );
    }
    let by_path = root.lib("getty@.service");
    let e = root.load(&[by_path.to_str().unwrap()]).unwrap_err();
    assert!(matches!(e, Error::NeedsInstance { .. }), "{e}");
}

#[test]
fn the_specifiers_of_the_getty_templates() {
    let root = Root::new();
    let loader = root.loader();
    let expanded = |unit: &Unit, section: &Section, key: &str| -> Vec<String> {
        unit.get(section, key)
            .map(|e| unit.expand(e).unwrap())
            .collect()
    };
    let serial = loader.unit("serial-getty@ttyS0.service").unwrap();
    assert_eq!(serial.fragment, root.lib("serial-getty@.service"));
    assert_eq!(
        expanded(&serial, &Section::Unit, "Description"),
        ["Serial Getty on ttyS0"]
    );
    assert_eq!(
        expanded(&serial, &Section::Unit, "BindsTo"),
        ["dev-ttyS0.device"]
    );
    assert_eq!(
        expanded(&serial, &Section::Unit, "After")[0],
        "dev-ttyS0.device systemd-user-sessions.service plymouth-quit-wait.service getty-pre.target"
    );
    assert_eq!(
        expanded(&serial, &Section::Service, "TTYPath"),
        ["/dev/ttyS0"]
    );
    assert_eq!(
        expanded(&serial, &Section::Service, "UtmpIdentifier"),
        ["ttyS0"]
    );

    // An escaped instance: %i keeps the escapes, %I undoes them ('-' is '/').
    let usb = loader.unit("getty@serial-by\\x2did-usb0.service").unwrap();
    assert_eq!(
        expanded(&usb, &Section::Unit, "Description"),
        ["Getty on serial/by-id/usb0"]
    );
    assert_eq!(
        expanded(&usb, &Section::Service, "TTYPath"),
        ["/dev/serial/by-id/usb0"]
    );
    assert_eq!(
        usb.specifiers.expand("%i %p %n %N %u %h %%").unwrap(),
        "serial-by\\x2did-usb0 getty getty@serial-by\\x2did-usb0.service getty@serial-by\\x2did-usb0 root /root %"
    );
    let getty = loader.unit("getty@tty1.service").unwrap();
    assert_eq!(getty.wanted_by, ["getty.target"]);

    // uuidd runs as User=uuidd: %h is /root as in systemd, /run/uuidd when asked the old way.
    let uuidd = loader.unit("uuidd.service").unwrap();
    assert_eq!(uuidd.specifiers.expand("%u %h").unwrap(), "root /root");
    let old = Loader::new(&root.0, &[], UserSpecifiers::UnitUser).unwrap();
    let uuidd = old.unit("uuidd.service").unwrap();
    assert_eq!(
        uuidd.specifiers.expand("%u %h").unwrap(),
        "uuidd /run/uuidd"
    );
    let e = uuidd.specifiers.expand("%H").unwrap_err();
    assert_eq!(
        e.to_string(),
        "%H (the host name, at byte 0) is not resolved by the import"
    );
}

#[test]
fn bad_unit_files_name_their_file_and_line() {
    let root = Root::new();
    let mut long_line = b"[Service]\nExecStart=/bin/true ".to_vec();
    long_line.resize(long_line.len() + (1 << 20), b'x');
    let mut huge = Vec::new();
    while huge.len() <= 4 << 20 {
        huge.extend_from_slice(b"[Service]\nEnvironment=A=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
    }
    let garbage: Vec<u8> = (0u32..4096).map(|i| (i * 7919 % 251) as u8).collect();
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("garbage.service", garbage, ":1: a NUL byte; this is not a text file".into()),
        ("long.service", long_line, ":2: a line of 1 MiB or more".into()),
        ("huge.service", huge, ": larger than 4 MiB".into()),
        (
            "latin1.service",
            b"[Unit]\nDescription=J\xf6rg's\n".to_vec(),
            ":2: not valid UTF-8".into(),
        ),
        (
            "section.service",
            b"[Unit]\nDescription=x\n[Sevrice]\nExecStart=/bin/x\n".to_vec(),
            ":3: unknown section [Sevrice] in a .service unit".into(),
        ),
        (
            "include.service",
            b"[Unit]\n.include /lib/systemd/system/ssh.service\n".to_vec(),
            ":2: not a section header, assignment or comment: .include /lib/systemd/system/ssh.service".into(),
        ),
        (
            "outside.service",
            b"# no section yet\nExecStart=/bin/x\n".to_vec(),
            ":2: an assignment before any [section]".into(),
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = root.write(&format!("work/{name}"), bytes);
        let e = root.load(&[path.to_str().unwrap()]).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}{expected}", path.display()),
            "{name}"
        );
    }
    // An unreadable file is an error naming it.
    let dir = root.write("work/dir.service/x", "");
    let e = root
        .load(&[dir.parent().unwrap().to_str().unwrap()])
        .unwrap_err();
    assert!(matches!(e, Error::NotAFile { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "{}: not a regular file",
            root.0.join("work/dir.service").display()
        )
    );
    // A bad drop-in names the drop-in.
    let dropin = root.write(
        "etc/systemd/system/cron.service.d/bad.conf",
        "[Service]\nNoEquals\n",
    );
    let e = root.load(&["cron.service"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2: not a section header, assignment or comment: NoEquals",
            dropin.display()
        )
    );
}

#[test]
fn the_fuzz_seeds_are_the_fixtures() {
    let mut seeds: Vec<String> = fs::read_dir(SEEDS)
        .unwrap_or_else(|e| panic!("{SEEDS}: {e}"))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    seeds.sort();
    assert_eq!(
        seeds,
        fixtures(),
        "fuzz/seeds/unit_file holds one copy of each fixture"
    );
    for name in fixtures() {
        let fixture = fs::read(Path::new(FIXTURES).join(&name)).unwrap();
        let seed = fs::read(Path::new(SEEDS).join(&name)).unwrap();
        assert_eq!(seed, fixture, "{name}: copy the fixture to the seeds again");
        // And each one goes through the fuzz target's checks.
        stewardctl::fuzz_unit_file(&fixture);
    }
}
