//! `stewardctl` against a real `steward`: every command and exit code, `--json` parsed, logs and
//! their bound, reload, who may connect, and garbage on the control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Instant;

use steward_integration_tests::*;

const TWO: &str = r#"
[service.web]
exec = ["/bin/sh", "-c", "echo hello from web; echo oops >&2; exec sleep 1000"]

[service.once]
exec = ["/bin/sh", "-c", "exit 4"]
"#;

#[test]
fn status_shows_every_service_as_table_and_json() {
    let s = Steward::start(TWO);
    s.wait_for("once: exited with status 4");
    let web = s.wait_state("web", "running");
    assert!(web["pid"].as_i64().unwrap() > 0);
    assert_eq!(web["restarts"], 0);
    assert!(web["since"].as_u64().unwrap() > 1_700_000_000);
    assert!(web["last_exit"].is_null());
    let once = s.service("once");
    assert_eq!(once["state"], "failed");
    assert!(once["pid"].is_null());
    assert_eq!(once["last_exit"], serde_json::json!({"code": 4}));
    assert_eq!(once["failure"]["status"], 4);

    let (code, out, _) = s.ctl(&["status"]);
    assert_eq!(code, 0);
    let header = out.lines().next().unwrap();
    for column in ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "MEMORY"] {
        assert!(header.contains(column), "{out}");
    }
    assert!(
        out.lines()
            .any(|l| l.starts_with("web ") && l.contains("running")),
        "{out}"
    );
    assert!(!out.contains('\x1b'), "no colour when stdout is not a tty");

    let (_, all, _) = s.ctl(&["--json", "status"]);
    let all = json(&all);
    assert_eq!(all["manager"]["pid"], s.pid());
    assert!(all["manager"]["version"].is_string());
}

#[test]
fn status_of_a_named_service_shows_its_log_tail_and_failure() {
    let s = Steward::start(TWO);
    s.wait_for("web: hello from web");
    s.wait_for("once: exited with status 4");
    let (code, out, _) = s.ctl(&["status", "web", "once"]);
    assert_eq!(code, 0);
    assert!(out.contains("hello from web"), "{out}");
    assert!(out.contains("exited with status 4"), "{out}");
    let (code, _, err) = s.ctl(&["status", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown service: nope"), "{err}");
}

#[test]
fn start_stop_restart() {
    let s = Steward::start(TWO);
    let first = s.wait_state("web", "running")["pid"].as_i64().unwrap();

    let (code, _, err) = s.ctl(&["restart", "web"]);
    assert_eq!(code, 0, "{err}");
    let mut second = 0;
    wait_until("web runs with a new pid", || {
        let v = s.service("web");
        second = v["pid"].as_i64().unwrap_or(0);
        v["state"] == "running" && second != first
    });
    assert!(!alive(first as i32));

    assert_eq!(s.ctl(&["stop", "web"]).0, 0);
    s.wait_state("web", "inactive");
    assert!(!alive(second as i32));
    assert_eq!(s.ctl(&["start", "web"]).0, 0);
    s.wait_state("web", "running");

    // Unknown names are refused and nothing is done.
    let (code, _, err) = s.ctl(&["stop", "web", "ghost"]);
    assert_eq!(code, 1);
    assert!(err.contains("ghost"), "{err}");
    assert_eq!(s.service("web")["state"], "running");
}

#[test]
fn logs_keep_lines_with_their_stream_and_follow_new_ones() {
    let s = Steward::start(
        r#"
[service.talker]
exec = ["/bin/sh", "-c", "for i in 1 2 3 4 5; do echo out $i; done; echo err 1 >&2; while [ ! -p @DIR@/go ]; do sleep 0.05; done; read x < @DIR@/go; echo late line; exec sleep 1000"]
"#,
    );
    let fifo = s.dir.path().join("go");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    s.wait_for("talker: err 1");
    let (code, out, _) = s.ctl(&["logs", "talker"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(
        lines[0].contains(" talker[") && lines[0].ends_with("] stdout: out 1"),
        "{out}"
    );
    assert!(lines[5].ends_with("] stderr: err 1"), "{out}");
    let (_, last2, _) = s.ctl(&["logs", "talker", "-n", "2"]);
    assert_eq!(last2.lines().count(), 2);
    assert!(
        last2.lines().next().unwrap().ends_with("stdout: out 5"),
        "{last2}"
    );

    // Follow: the kept lines, then a new one as it is written.
    let mut follow = Command::new(bin("stewardctl"))
        .arg("--control")
        .arg(s.control())
        .args(["logs", "talker", "-n", "1", "-f"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(follow.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.trim_end().ends_with("stderr: err 1"), "{line}");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert!(line.trim_end().ends_with("stdout: late line"), "{line}");
    follow.kill().unwrap();
    follow.wait().unwrap();
}

#[test]
fn a_flood_of_output_keeps_the_manager_within_its_bound() {
    // 16 MB of output in 4 KiB lines, then one 3 MB line, against a 64 KiB ring.
    let s = Steward::start(
        r#"
[service.flood]
exec = ["/bin/sh", "-c", "head -c 16000000 /dev/zero | tr '\\0' 'x' | fold -w 4095; echo; head -c 3000000 /dev/zero | tr '\\0' 'y'; echo; echo flood done"]
"#,
    );
    let rss = || anon_rss_kib(s.pid());
    s.wait_for("version");
    let before = rss();
    let started = Instant::now();
    s.wait_for("flood: flood done");
    let after = rss();
    assert!(
        after <= before + 512,
        "manager anonymous RSS grew from {before} kB to {after} kB while a service wrote 19 MB"
    );
    // The control socket still answers, and the ring kept only its bound.
    let (code, out, _) = s.ctl(&["logs", "flood"]);
    assert_eq!(code, 0);
    assert!(out.len() < 80 * 1024, "{} bytes of logs kept", out.len());
    assert!(out.trim_end().ends_with("stdout: flood done"));
    eprintln!("flood of 19 MB read in {:?}", started.elapsed());
}

#[test]
fn reload_adds_removes_restarts_and_leaves_the_rest_alone() {
    let mut s = Steward::start(
        r#"
[service.keep]
exec = ["/bin/sleep", "1000"]

[service.change]
exec = ["/bin/sleep", "1000"]

[service.drop]
exec = ["/bin/sleep", "1000"]

[[service.drop.socket]]
path = "@DIR@/drop.sock"
"#,
    );
    let keep = s.wait_state("keep", "running")["pid"].as_i64().unwrap();
    let change = s.wait_state("change", "running")["pid"].as_i64().unwrap();
    s.wait_state("drop", "running");
    let dir = s.dir.path().to_path_buf();
    assert!(dir.join("drop.sock").exists());

    // A broken config changes nothing, and the errors come back.
    std::fs::write(
        dir.join("steward.toml"),
        "[service.keep]\nexec = [\"relative\"]\n",
    )
    .unwrap();
    let (code, _, err) = s.ctl(&["reload"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("steward.toml:2:9: `exec[0]` must be an absolute path"),
        "{err}"
    );
    assert_eq!(s.service("change")["pid"], change);

    std::fs::write(
        dir.join("steward.toml"),
        r#"
[service.keep]
exec = ["/bin/sleep", "1000"]

[service.change]
exec = ["/bin/sleep", "2000"]

[service.new]
exec = ["/bin/sleep", "1000"]
"#,
    )
    .unwrap();
    let (code, out, err) = s.ctl(&["--json", "reload"]);
    assert_eq!(code, 0, "{err}");
    let reply = json(&out);
    assert_eq!(reply["added"], serde_json::json!(["new"]));
    assert_eq!(reply["removed"], serde_json::json!(["drop"]));
    assert_eq!(reply["restarted"], serde_json::json!(["change"]));

    s.wait_state("new", "running");
    let changed = s.wait_state("change", "running");
    assert_ne!(changed["pid"], change);
    assert_eq!(s.service("keep")["pid"], keep, "unchanged: not touched");
    wait_until("drop is gone", || {
        let (_, out, _) = s.ctl(&["--json", "status"]);
        !out.contains("\"drop\"")
    });
    wait_until("drop's socket file is removed", || {
        !dir.join("drop.sock").exists()
    });

    // SIGHUP is the same reload.
    std::fs::write(
        dir.join("steward.toml"),
        "[service.keep]\nexec = [\"/bin/sleep\", \"1000\"]\n",
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    s.wait_for("reloaded: 0 added, 2 removed, 0 restarted");
    assert_eq!(s.service("keep")["pid"], keep);
    assert!(s.terminate().success());
}

#[test]
fn exit_codes_and_other_commands() {
    let s = Steward::start(TWO);
    s.wait_for("version");
    let (code, out, _) = s.ctl(&["version"]);
    assert_eq!(code, 0);
    assert!(out.contains("steward "), "{out}");
    let (code, out, _) = s.ctl(&["--json", "version"]);
    assert_eq!(code, 0);
    assert_eq!(
        json(&out)["protocol"],
        steward_protocol::control::CONTROL_VERSION
    );

    let (code, _, err) = s.ctl(&["reboot"]);
    assert_eq!(code, 1);
    assert!(err.contains("only for steward running as PID 1"), "{err}");
    assert_eq!(s.ctl(&["poweroff"]).0, 1);
    assert_eq!(s.ctl(&["frobnicate"]).0, 2);
    assert_eq!(s.ctl(&["logs"]).0, 2);
    assert_eq!(ctl_at(&s.dir.path().join("nothing-here"), &["status"]).0, 3);
    let (code, out, _) = run(Command::new(bin("stewardctl")).arg("--help"));
    assert!(code.success());
    assert!(out.contains("reload"), "{out}");
    let (code, out, _) = run(Command::new(bin("stewardctl")).args(["status", "--help"]));
    assert!(code.success());
    assert!(out.contains("status"), "{out}");
}

#[test]
fn shutdown_stops_everything_and_exits_0() {
    let mut s = Steward::start(TWO);
    let web = s.wait_state("web", "running")["pid"].as_i64().unwrap();
    let (code, _, err) = s.ctl(&["shutdown"]);
    assert_eq!(code, 0, "{err}");
    assert!(s.wait_exit().success());
    assert!(!alive(web as i32));
    assert!(!s.control().exists(), "the control socket is removed");
}

#[test]
#[ignore = "needs root"]
fn the_control_socket_is_for_root_and_the_managers_own_user() {
    let s = Steward::start(TWO);
    s.wait_for("version");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(s.control()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // Loosened by hand, so that nobody can connect at all: steward itself must refuse.
    std::fs::set_permissions(
        s.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(
        s.control(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    // nobody runs a copy it can reach.
    let bins = shared_bins(&["stewardctl"]);
    let (status, _, err) = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(bins.path().join("stewardctl"))
        .arg("--control")
        .arg(s.control())
        .arg("status"));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("permission denied"), "{err}");
    s.wait_for("control: refused a client with uid 65534");
    assert_eq!(s.ctl(&["status"]).0, 0, "root is still served");
}

#[test]
fn garbage_and_huge_requests_leave_steward_serving() {
    let s = Steward::start(TWO);
    s.wait_for("version");
    // Garbage; what comes back, if anything, does not matter.
    match send_request(
        &s.control(),
        b"\x10\x00\x00\x00this is not a request",
        DEADLINE,
    ) {
        Ok(_) | Err(ClientError::Read(_)) => {}
        Err(e) => panic!("{e}"),
    }
    s.wait_for("control: a client sent a bad request");
    // A 10 MiB blob: refused by its length, without reading it all.
    let mut c = UnixStream::connect(s.control()).unwrap();
    let blob = vec![0xAB_u8; 10 << 20];
    let _ = c.write_all(&((blob.len() as u32).to_le_bytes()));
    let _ = c.write_all(&blob);
    drop(c);
    s.wait_for("control: a client sent a bad request: payload of 10485760 bytes");
    // Half a request, then silence: the loop does not wait for it.
    let mut half = UnixStream::connect(s.control()).unwrap();
    half.write_all(&[40, 0, 0, 0, 1]).unwrap();
    let (code, _, _) = s.ctl(&["status"]);
    assert_eq!(code, 0, "served while another client is stuck mid-request");
    drop(half);
    assert_eq!(s.ctl(&["status"]).0, 0);
}

#[test]
fn a_changed_socket_that_cannot_be_made_refuses_the_reload_whole() {
    let s = Steward::start(
        r#"
[service.web]
exec = ["/bin/sleep", "1000"]

[[service.web.socket]]
path = "@DIR@/web.sock"
"#,
    );
    let web = s.wait_state("web", "running")["pid"].clone();
    let dir = s.dir.path().to_path_buf();
    // The changed config moves the socket to a path a regular file holds.
    std::fs::write(dir.join("taken"), "not a socket").unwrap();
    let changed = std::fs::read_to_string(dir.join("steward.toml"))
        .unwrap()
        .replace("/web.sock", "/taken");
    std::fs::write(dir.join("steward.toml"), changed).unwrap();
    let (code, _, err) = s.ctl(&["reload"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("exists and is not a socket (it is left alone)")
            && err.contains("nothing was changed"),
        "{err}"
    );
    // Nothing changed: same process, the old socket still there and still reachable.
    assert_eq!(s.service("web")["pid"], web);
    assert_eq!(
        s.service("web")["sockets"][0]["address"],
        dir.join("web.sock").to_str().unwrap()
    );
    assert!(UnixStream::connect(dir.join("web.sock")).is_ok());
    assert_eq!(
        std::fs::read_to_string(dir.join("taken")).unwrap(),
        "not a socket"
    );
}

#[test]
fn a_reload_may_hand_a_socket_path_from_one_service_to_another() {
    let s = Steward::start(
        r#"
[service.old]
exec = ["/bin/sh", "-c", "echo old"]
lazy = true
keep_alive = true

[[service.old.socket]]
path = "@DIR@/shared.sock"
"#,
    );
    s.wait_state("old", "listening");
    let dir = s.dir.path().to_path_buf();
    std::fs::write(
        dir.join("steward.toml"),
        format!(
            "[service.new]\nexec = [\"/bin/sh\", \"-c\", \"echo new >&3\"]\nlazy = true\nkeep_alive = true\nstdio = \"null\"\n\n[[service.new.socket]]\npath = \"{}\"\n",
            dir.join("shared.sock").display()
        ),
    )
    .unwrap();
    let (code, out, err) = s.ctl(&["--json", "reload"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["added"], serde_json::json!(["new"]));
    wait_until("old is gone", || {
        let (_, out, _) = s.ctl(&["--json", "status"]);
        !out.contains("\"old\"")
    });
    // The file is the new service's socket, and the old one's removal left it alone.
    assert!(dir.join("shared.sock").exists());
    s.wait_state("new", "listening");
    let stream = UnixStream::connect(dir.join("shared.sock")).unwrap();
    drop(stream);
    s.wait_for("new: started");
}
