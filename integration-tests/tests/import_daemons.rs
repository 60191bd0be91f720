//! Debian's daemons run under steward from what `stewardctl import` made of their own unit
//! files, talked to by their own clients: `ssh` logs in through the imported `ssh.socket`,
//! `dbus-send --system` reaches a `dbus-daemon` its connection starts, `uuidgen -t` is served
//! by a socket-activated `uuidd`, and `cron` and `rsyslog` run and stay running.
//!
//! ssh and dbus are imported from a `--root` copy of their units (`ssh.service` and
//! `dbus.service` as Debian ships them; the sockets edited to a port on 127.0.0.1 and to a
//! path in the test's directory, and `/etc/default/ssh` giving sshd a host key and the test's
//! authorized key), so that nothing collides with the machine's own. uuidd, cron and rsyslog
//! are imported from the machine as they are: uuidgen knows only /run/uuidd/request.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use steward_integration_tests::*;

/// What `stewardctl import ARGS` prints; it must be a config (exit 0, or 1 with directives
/// listed as not imported).
fn imported(args: &[&str]) -> String {
    let (status, out, err) = run(Command::new(bin("stewardctl")).arg("import").args(args));
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "stewardctl import {args:?}: {status:?}: {err}"
    );
    out
}

/// A copy of Debian's unit `name` in `root`'s /lib/systemd/system, `edit` applied per line.
fn copy_unit(root: &Path, name: &str, edit: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(Path::new("/lib/systemd/system").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}: install the packages .ci/run lists"));
    let edited: String = text.lines().map(|l| edit(l) + "\n").collect();
    let dir = root.join("lib/systemd/system");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), edited).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn keygen(path: &Path) {
    let (status, out, err) = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(path));
    assert!(status.success(), "ssh-keygen: {out}{err}");
}

#[test]
#[ignore = "needs root"]
fn an_ssh_login_through_the_imported_ssh_socket_runs_echo_ok() {
    let root = temp_dir();
    let r = root.path();
    let port = free_port();
    copy_unit(r, "ssh.service", |l| l.to_string());
    copy_unit(r, "ssh.socket", |l| match l {
        "ListenStream=22" => format!("ListenStream=127.0.0.1:{port}"),
        other => other.to_string(),
    });
    keygen(&r.join("hostkey"));
    keygen(&r.join("client"));
    std::fs::copy(r.join("client.pub"), r.join("authorized_keys")).unwrap();
    // The machine's sshd_config stays in force; these only add a host key and the test's
    // key. StrictModes would refuse a key file under the world-writable /tmp, and PAM's
    // session modules need a login environment a test machine may not have.
    std::fs::create_dir_all(r.join("etc/default")).unwrap();
    std::fs::write(
        r.join("etc/default/ssh"),
        format!(
            "SSHD_OPTS='-h {0}/hostkey -o AuthorizedKeysFile={0}/authorized_keys -o StrictModes=no -o UsePAM=no'\n",
            r.display()
        ),
    )
    .unwrap();
    let config = imported(&["--root", r.to_str().unwrap(), "ssh.socket"]);
    assert!(
        config.contains(&format!("listen = \"127.0.0.1:{port}\"")),
        "{config}"
    );
    let s = Steward::start(&config);
    s.wait_state("ssh", "listening");
    let (status, out, err) = run(Command::new("ssh").arg("-i").arg(r.join("client")).args([
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "ConnectTimeout=20",
        "-p",
        &port.to_string(),
        "root@127.0.0.1",
        "echo",
        "ok",
    ]));
    assert!(
        status.success(),
        "ssh: {status:?}\n{out}{err}\n{}",
        s.lines().join("\n")
    );
    assert_eq!(out, "ok\n");
    // The connection started it; its setup task (sshd -t) ran first, and /run/sshd exists
    // for it, made by steward from RuntimeDirectory=sshd.
    s.wait_for("ssh-pre: exited with status 0");
    assert_eq!(s.service("ssh")["state"], "running");
    assert!(Path::new("/run/sshd").is_dir());
}

#[test]
#[ignore = "needs root"]
fn dbus_send_reaches_a_dbus_daemon_started_by_the_imported_dbus_socket() {
    let root = temp_dir();
    let r = root.path();
    let bus: PathBuf = r.join("system_bus_socket");
    copy_unit(r, "dbus.service", |l| l.to_string());
    copy_unit(r, "dbus.socket", |l| {
        if l.starts_with("ListenStream=") {
            format!("ListenStream={}", bus.display())
        } else {
            l.to_string()
        }
    });
    let config = imported(&["--root", r.to_str().unwrap(), "dbus.socket"]);
    let s = Steward::start(&config);
    s.wait_state("dbus", "listening");
    assert!(
        s.service("dbus")["pid"].is_null(),
        "dbus started before a client came"
    );
    let (status, out, err) = run(Command::new("dbus-send")
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            format!("unix:path={}", bus.display()),
        )
        .args([
            "--system",
            "--print-reply",
            "--reply-timeout=20000",
            "--dest=org.freedesktop.DBus",
            "/",
            "org.freedesktop.DBus.ListNames",
        ]));
    assert!(
        status.success(),
        "dbus-send: {status:?}\n{out}{err}\n{}",
        s.lines().join("\n")
    );
    assert!(out.contains("string \"org.freedesktop.DBus\""), "{out}");
    let dbus = s.wait_state("dbus", "running");
    assert!(dbus["pid"].is_i64(), "{dbus}");
}

#[test]
#[ignore = "needs root"]
fn uuidd_serves_uuidgen_through_its_socket_and_cron_and_rsyslog_stay_running() {
    let mut config = String::new();
    for unit in ["uuidd.socket", "cron.service", "rsyslog.service"] {
        config.push_str(&imported(&[unit]));
        config.push('\n');
    }
    let s = Steward::start(&config);
    s.wait_state("uuidd", "listening");
    let cron = s.wait_state("cron", "running")["pid"].as_i64().unwrap();
    // Type=notify: running once rsyslogd said READY=1.
    let rsyslog = s.wait_state("rsyslog", "running")["pid"].as_i64().unwrap();

    let (status, out, err) = run(Command::new("uuidgen").arg("-t"));
    assert!(status.success(), "uuidgen -t: {out}{err}");
    // A time-based UUID: version 1.
    assert_eq!(out.trim().len(), 36, "{out}");
    assert_eq!(&out[14..15], "1", "{out}");
    // uuidgen falls back to making one itself when nobody answers: uuidd must have run.
    s.wait_for("uuidd: started");
    assert_eq!(s.count("uuidd: failed"), 0, "{}", s.lines().join("\n"));

    // Two seconds more, they are still the processes they were, never restarted.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for (name, pid) in [("cron", cron), ("rsyslog", rsyslog)] {
            let now = s.service(name);
            assert_eq!(now["state"], "running", "{name}: {now}");
            assert_eq!(now["pid"].as_i64(), Some(pid), "{name}: {now}");
            assert_eq!(now["restarts"], 0, "{name}: {now}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
