//! Socket takeover, lazy services and accept mode through the real binaries: real unix and TCP
//! sockets, real clients, counted connections.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::Command;

use steward_integration_tests::*;

/// A TCP port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `key=value` items of a probe report, and its fd lines.
struct Report {
    items: HashMap<String, String>,
    env: HashMap<String, String>,
    fds: Vec<HashMap<String, String>>,
}

fn report(path: &Path) -> Report {
    let text = std::fs::read_to_string(path).unwrap();
    let mut r = Report {
        items: HashMap::new(),
        env: HashMap::new(),
        fds: Vec::new(),
    };
    for line in text.lines() {
        if let Some(var) = line.strip_prefix("env=") {
            let (k, v) = var.split_once('=').unwrap();
            r.env.insert(k.into(), v.into());
        } else if line.starts_with("fd=") {
            r.fds.push(
                line.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        } else if let Some((k, v)) = line.split_once('=') {
            r.items.insert(k.into(), v.into());
        }
    }
    r
}

/// Connects, reads the one line the service writes, and returns it.
fn ask(path: &Path) -> Result<String, ClientError> {
    Ok(first_line(path, DEADLINE)?.trim_end().to_string())
}

fn probe() -> String {
    bin("steward-probe").display().to_string()
}

#[test]
fn a_service_sees_exactly_what_the_spec_says() {
    let port = free_port();
    let mut s = Steward::start(&format!(
        r#"
[service.probe]
exec = ["{probe}", "report", "@DIR@/report"]
environment = {{ EXTRA = "1" }}

[[service.probe.socket]]
path = "@DIR@/run/sub/stream.sock"
mode = "0660"
name = "first"

[[service.probe.socket]]
listen = "127.0.0.1:{port}"
name = "second"

[[service.probe.socket]]
path = "@DIR@/run/dgram.sock"
type = "datagram"

[[service.probe.socket]]
path = "@DIR@/run/seq.sock"
type = "seqpacket"
"#,
        probe = probe()
    ));
    s.wait_for("probe: exited with status 0");
    let dir = s.dir.path().to_path_buf();
    let r = report(&dir.join("report"));
    let pid = &r.items["pid"];

    // fds 0-2, then the sockets at 3.. in config order, listening, CLOEXEC and O_NONBLOCK
    // clear, and nothing else.
    let numbers: Vec<&str> = r.fds.iter().map(|f| f["fd"].as_str()).collect();
    assert_eq!(numbers, ["0", "1", "2", "3", "4", "5", "6"], "{:?}", r.fds);
    for fd in &r.fds[3..] {
        assert_eq!(fd["kind"], "socket", "{fd:?}");
        assert_eq!(fd["cloexec"], "0", "{fd:?}");
        assert_eq!(fd["nonblock"], "0", "{fd:?}");
    }
    let listening: Vec<&str> = r.fds[3..].iter().map(|f| f["listening"].as_str()).collect();
    assert_eq!(listening, ["1", "1", "0", "1"]);

    let mut env = r.env.clone();
    assert_eq!(env.remove("LISTEN_PID").as_ref(), Some(pid));
    assert_eq!(env.remove("LISTEN_FDS").as_deref(), Some("4"));
    assert_eq!(
        env.remove("LISTEN_FDNAMES").as_deref(),
        Some("first:second:probe:probe")
    );
    assert_eq!(env.remove("SOCKET_TAKEOVER").as_deref(), Some("1"));
    assert_eq!(env.remove("EXTRA").as_deref(), Some("1"));
    assert!(env.remove("PATH").is_some());
    assert!(env.is_empty(), "no manager variable leaks: {env:?}");

    // Empty signal mask, nothing ignored, its own session.
    assert_eq!(u64::from_str_radix(&r.items["sigmask"], 16), Ok(0));
    assert_eq!(u64::from_str_radix(&r.items["sigign"], 16), Ok(0));
    assert_eq!(&r.items["sid"], pid);

    // The file mode is exactly `mode`, the parent directories were made 0755.
    let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("run/sub/stream.sock"), 0o660);
    assert_eq!(mode("run/dgram.sock"), 0o600);
    assert_eq!(mode("run/sub"), 0o755);

    assert!(s.terminate().success());
    for path in ["run/sub/stream.sock", "run/dgram.sock", "run/seq.sock"] {
        assert!(!dir.join(path).exists(), "{path} is removed at shutdown");
    }
}

#[test]
fn takeover_map_form() {
    let mut s = Steward::start(&format!(
        r#"
[service.probe]
exec = ["{probe}", "report", "@DIR@/report"]
takeover_env = "map"

[[service.probe.socket]]
path = "@DIR@/a.sock"

[[service.probe.socket]]
listen = "127.0.0.1:{port}"
name = "web"
"#,
        probe = probe(),
        port = free_port()
    ));
    s.wait_for("probe: exited with status 0");
    let dir = s.dir.path().to_path_buf();
    let r = report(&dir.join("report"));
    assert_eq!(
        r.env["SOCKET_TAKEOVER"],
        format!("{}:3;web:4", dir.join("a.sock").display())
    );
    assert!(s.terminate().success());
}

const LAZY: &str = r#"
[service.lazy]
exec = ["@PROBE@", "serve", "@ARGS@", "--report", "@DIR@/report"]
lazy = true
keep_alive = true
start_limit_burst = 1000

[[service.lazy.socket]]
path = "@DIR@/lazy.sock"
backlog = 512
"#;

fn lazy(args: &str) -> Steward {
    Steward::start(
        &LAZY
            .replace("@PROBE@", &probe())
            .replace("\"@ARGS@\", ", args),
    )
}

#[test]
fn a_lazy_service_starts_on_the_first_connection() {
    let s = lazy("");
    s.wait_for("lazy: listening");
    let dir = s.dir.path().to_path_buf();
    assert_eq!(s.count("lazy: started"), 0);
    assert!(
        !dir.join("report").exists(),
        "not running before a client connects"
    );
    let answer = ask(&dir.join("lazy.sock")).unwrap();
    let started = started_pid(&s.wait_for("lazy: started"));
    assert_eq!(answer, format!("pid {started}"));
    assert!(dir.join("report").exists());
}

#[test]
fn a_lazy_service_that_exits_after_each_connection_loses_none() {
    let s = lazy("\"--exit-after-each\", ");
    s.wait_for("lazy: listening");
    let sock = s.dir.path().join("lazy.sock");

    let mut pids = HashSet::new();
    for i in 0..300 {
        let answer = ask(&sock).unwrap_or_else(|e| panic!("sequential connection {i}: {e}"));
        pids.insert(answer);
    }
    assert_eq!(pids.len(), 300, "each connection re-activated the service");

    let served: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let sock = &sock;
                scope.spawn(move || (0..50).filter(|_| ask(sock).is_ok()).count())
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(
        served, 400,
        "8 clients x 50 connections, every one answered"
    );
    assert_eq!(s.count("failed"), 0, "{:#?}", s.lines());
}

#[test]
fn a_crash_mid_stream_loses_no_queued_connection() {
    let s = lazy("\"--crash-after\", \"3\", ");
    s.wait_for("lazy: listening");
    let sock = s.dir.path().join("lazy.sock");
    // Twenty clients queue up at once; the service dies after every third.
    let answers: Vec<Result<String, ClientError>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..20).map(|_| scope.spawn(|| ask(&sock))).collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (i, a) in answers.iter().enumerate() {
        assert!(a.is_ok(), "client {i}: {a:?}\n{:#?}", s.lines());
    }
    // The sixth crash's line may come after the last answer: the answers do not wait for the
    // log, and the test reads the log through a pipe.
    s.wait_for_nth("lazy: killed by SIGABRT", 6);
}

#[test]
fn eager_services_can_connect_to_a_lazy_socket_at_their_start() {
    let mut config = LAZY
        .replace("@PROBE@", &probe())
        .replace("\"@ARGS@\", ", "");
    for i in 0..10 {
        config.push_str(&format!(
            "\n[service.client{i}]\nexec = [\"{}\", \"connect\", \"@DIR@/lazy.sock\", \"@DIR@/out{i}\"]\n",
            probe()
        ));
    }
    let s = Steward::start(&config);
    for i in 0..10 {
        s.wait_for(&format!("client{i}: exited with status 0"));
        let out = std::fs::read_to_string(s.dir.path().join(format!("out{i}"))).unwrap();
        assert!(out.starts_with("pid "), "client{i} got {out:?}");
    }
}

#[test]
fn stopping_steward_keeps_no_process_of_a_lazy_service() {
    let mut s = lazy("");
    s.wait_for("lazy: listening");
    ask(&s.dir.path().join("lazy.sock")).unwrap();
    let pid = started_pid(&s.wait_for("lazy: started"));
    assert!(s.terminate().success());
    assert!(!alive(pid));
}

const ACCEPT: &str = r#"
[service.each]
exec = ["@PROBE@", "connection"]
accept = true
max_connections = 2
log_instances = "all"

[[service.each.socket]]
path = "@DIR@/each.sock"
"#;

#[test]
fn accept_mode_runs_one_instance_per_connection() {
    let s = Steward::start(&ACCEPT.replace("@PROBE@", &probe()));
    s.wait_for("each: listening");
    let sock = s.dir.path().join("each.sock");
    let me = std::process::id();
    let mut pids = HashSet::new();
    for i in 1..=5 {
        let line = ask(&sock).unwrap();
        // The instance sees who connected (SO_PEERCRED): this test process.
        let want = format!("remote pid {me} uid {} gid {}", own_uid(), own_gid());
        assert!(line.ends_with(&want), "{line:?} should end with {want:?}");
        pids.insert(line);
        s.wait_for(&format!("each@{i}: exited with status 0"));
    }
    assert_eq!(pids.len(), 5, "distinct instances");
}

#[test]
fn accept_instances_are_logged_only_when_they_fail_and_counted_in_status() {
    let s = Steward::start(
        r#"
[service.quiet]
exec = ["/bin/sh", "-c", "read code; echo bye; exit $code"]
accept = true
stdio = "socket"

[[service.quiet.socket]]
path = "@DIR@/quiet.sock"
"#,
    );
    s.wait_for("quiet: listening");
    let sock = s.dir.path().join("quiet.sock");
    for code in [0, 0, 3, 0] {
        let mut client = UnixStream::connect(&sock).unwrap();
        client.set_read_timeout(Some(DEADLINE)).unwrap();
        std::io::Write::write_all(&mut client, format!("{code}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "bye\n");
    }
    // The failing one is told, with the pid no start line gave.
    s.wait_for("quiet@3: exited with status 3 (pid ");
    wait_until("every instance reaped", || {
        let (code, out, _) = s.ctl(&["status", "quiet"]);
        code == 0 && out.contains("  instances: 4 started, 0 running\n")
    });
    assert_eq!(s.service("quiet")["instances_started"], 4);
    let told: Vec<String> = s
        .lines()
        .into_iter()
        .filter(|l| l.contains("quiet@"))
        .collect();
    assert_eq!(told.len(), 1, "{told:#?}");
}

/// This process's uid and gid, as /proc shows them (no libc call needed).
fn own_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap()
}

fn own_gid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
        .unwrap()
}

#[test]
fn accept_mode_caps_instances_and_refuses_nobody() {
    let s = Steward::start(&ACCEPT.replace("@PROBE@", &probe()));
    s.wait_for("each: listening");
    let sock = s.dir.path().join("each.sock");
    // Five clients connect at once; every connect succeeds (the backlog holds them).
    let mut clients: Vec<UnixStream> = (0..5)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let mut greeted = Vec::new();
    let mut next = 0;
    // Each greeting comes only when an instance is free: close one client, the next is served.
    for client in clients.iter_mut() {
        client.set_read_timeout(Some(DEADLINE)).unwrap();
    }
    while greeted.len() < 5 {
        // Read the greetings of whoever is being served now (two at a time at most).
        let mut line = String::new();
        let mut reader = BufReader::new(&clients[next]);
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with("instance pid "), "client {next}: {line:?}");
        greeted.push(next);
        // Done with it: its instance sees EOF and exits, freeing a slot.
        clients[next].shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        clients[next].read_to_end(&mut rest).unwrap();
        next += 1;
    }
    s.wait_for("each@5: exited with status 0");
    // Never more than two instances at once, read from the order of the log.
    let mut running = 0i32;
    let mut peak = 0;
    for line in s.lines() {
        if line.contains("each@") && line.contains(": started") {
            running += 1;
            peak = peak.max(running);
        } else if line.contains("each@") && (line.contains("exited") || line.contains("killed")) {
            running -= 1;
        }
    }
    assert_eq!(peak, 2, "{:#?}", s.lines());
}

#[test]
fn inetd_mode_with_busybox_httpd() {
    let port = free_port();
    let mut s = Steward::start(&format!(
        r#"
[service.web]
exec = ["/usr/bin/busybox", "httpd", "-i", "-h", "@DIR@/www"]
accept = true
stdio = "socket"
log_instances = "all"

[[service.web.socket]]
listen = "127.0.0.1:{port}"
"#
    ));
    let www = s.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(
        www.join("index.html"),
        "served by an inetd-style instance\n",
    )
    .unwrap();
    s.wait_for("web: listening");
    for _ in 0..3 {
        let (status, body, err) = run(Command::new("curl")
            .args(["-sS", "--max-time", "20"])
            .arg(format!("http://127.0.0.1:{port}/index.html")));
        assert!(status.success(), "{err}");
        assert_eq!(body, "served by an inetd-style instance\n");
    }
    s.wait_for("web@3: exited with status 0");
    assert!(s.terminate().success());
}

/// A UDP port nobody is bound to on 127.0.0.1 right now.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fetches `name` from the TFTP server at 127.0.0.1:`port` into `dest` with tftp-hpa's client,
/// bounded by `timeout` (a lost server would otherwise keep tftp retrying).
fn tftp_get(port: u16, name: &str, dest: &Path) {
    let (status, out, err) = run(Command::new("timeout")
        .arg(DEADLINE.as_secs().to_string())
        .args(["tftp", "-m", "binary", "127.0.0.1"])
        .arg(port.to_string())
        .args(["-c", "get", name])
        .arg(dest));
    assert!(status.success(), "tftp get {name}: {status}: {out}{err}");
}

#[test]
#[ignore = "needs root"]
fn inetd_wait_mode_with_tftpd_hpa() {
    // in.tftpd as inetd runs it with `wait`: the bound UDP socket is its stdin, it serves
    // requests until it has been idle for `-t 1` second, then exits. It chroots to the
    // directory (`-s`, root only) and reads as `nobody`, so the directory is 0755 and the file
    // world-readable.
    let srv = shared_temp_dir();
    let content: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = srv.path().join("boot.img");
    std::fs::write(&file, &content).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let port = free_udp_port();
    let mut s = Steward::start(&format!(
        r#"
[service.tftp]
exec = ["/usr/sbin/in.tftpd", "-t", "1", "-s", "{srv}"]
lazy = true
keep_alive = true
stdio = "socket"

[[service.tftp.socket]]
listen = "127.0.0.1:{port}"
type = "datagram"
"#,
        srv = srv.path().display()
    ));
    s.wait_for("tftp: listening");
    let dir = s.dir.path().to_path_buf();

    tftp_get(port, "boot.img", &dir.join("first"));
    assert_eq!(std::fs::read(dir.join("first")).unwrap(), content);
    let first = started_pid(&s.wait_for("tftp: started"));

    // Idle for its timeout, it exits, and the socket is watched again.
    s.wait_for("tftp: exited with status 0");
    s.wait_state("tftp", "listening");
    assert_eq!(s.count("tftp: started"), 1);

    tftp_get(port, "boot.img", &dir.join("second"));
    assert_eq!(std::fs::read(dir.join("second")).unwrap(), content);
    let second = started_pid(&s.wait_for_nth("tftp: started", 2));
    assert_ne!(first, second, "a fresh instance served the second fetch");
    assert_eq!(s.count("failed"), 0, "{:#?}", s.lines());
    assert!(s.terminate().success());
}

#[test]
fn a_lazy_stdio_socket_service_has_its_listening_socket_as_fds_0_and_1() {
    // A stream service in inetd's `wait` style: it accepts on its stdin itself, answers with
    // what it was given, and exits; kept alive, the next client gets a fresh process.
    let s = Steward::start(
        r#"
[service.wait]
exec = ["/usr/bin/python3", "-c", '''
import os, socket, sys
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
fds = [fd for fd in range(64) if is_open(fd)]
same = os.path.samestat(os.fstat(0), os.fstat(1))
env = sorted(k for k in os.environ if k.startswith("LISTEN_") or k == "SOCKET_TAKEOVER")
info = "pid=%d fds=%r same=%r blocking=%r inheritable=%r env=%r" % (
    os.getpid(), fds, same, os.get_blocking(0), os.get_inheritable(0), env)
listener = socket.socket(fileno=0)
listening = listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
print("stderr of %d goes to the log" % os.getpid(), file=sys.stderr, flush=True)
conn, _ = listener.accept()
conn.sendall(("%s listening=%d\n" % (info, listening)).encode())
''']
lazy = true
keep_alive = true
stdio = "socket"

[[service.wait.socket]]
path = "@DIR@/wait.sock"
"#,
    );
    s.wait_for("wait: listening");
    let sock = s.dir.path().join("wait.sock");
    let mut pids = HashSet::new();
    for n in 1..=2 {
        let answer = ask(&sock).unwrap_or_else(|e| panic!("connection {n}: {e}"));
        let pid = started_pid(&s.wait_for_nth("wait: started", n));
        assert_eq!(
            answer,
            format!(
                "pid={pid} fds=[0, 1, 2] same=True blocking=True inheritable=True env=[] listening=1"
            )
        );
        s.wait_for(&format!("wait: stderr of {pid} goes to the log"));
        pids.insert(pid);
    }
    assert_eq!(pids.len(), 2, "each client got a fresh process");
}

#[test]
fn stdio_socket_without_accept_needs_a_lazy_service_with_one_socket() {
    let dir = temp_dir();
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        r#"[service.eager]
exec = ["/bin/cat"]
stdio = "socket"
[[service.eager.socket]]
path = "/run/eager.sock"

[service.two]
exec = ["/bin/cat"]
lazy = true
keep_alive = true
stdio = "socket"
[[service.two.socket]]
path = "/run/two-a.sock"
[[service.two.socket]]
path = "/run/two-b.sock"
"#,
    )
    .unwrap();
    let (status, _, err) = run(Command::new(bin("steward"))
        .arg("--check")
        .arg("--config")
        .arg(&config));
    assert_eq!(status.code(), Some(1), "{err}");
    let err = err.replace(config.to_str().unwrap(), "FILE");
    for line in [
        "FILE:3:1: service `eager`: stdio = \"socket\" needs `accept` (the connection is fds 0 and 1) or `lazy` with exactly one socket (the socket is fds 0 and 1)",
        "FILE:11:1: service `two`: stdio = \"socket\" on a lazy service needs exactly one [[service.two.socket]], to be its fds 0 and 1; it has 2",
    ] {
        assert!(err.lines().any(|l| l == line), "{line:?} not in:\n{err}");
    }
}

#[test]
fn accept_mode_over_tcp_sets_remote_addr_and_port() {
    let port = free_port();
    let s = Steward::start(&format!(
        r#"
[service.each]
exec = ["{probe}", "connection"]
accept = true

[[service.each.socket]]
listen = "127.0.0.1:{port}"
"#,
        probe = probe()
    ));
    s.wait_for("each: listening");
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let local = stream.local_addr().unwrap();
    let line = read_first_line(&mut stream, DEADLINE).unwrap();
    assert!(
        line.trim_end()
            .ends_with(&format!("remote 127.0.0.1:{}", local.port())),
        "{line:?}"
    );
}

#[test]
fn a_service_written_for_sd_listen_fds_works_unmodified() {
    let mut s = Steward::start(
        r#"
[service.py]
exec = ["/usr/bin/python3", "-c", """
import os, socket
from systemd import daemon
fds = daemon.listen_fds()
sock = socket.socket(fileno=fds[0])
conn, _ = sock.accept()
conn.sendall(b'python %d got fds %r\\n' % (os.getpid(), fds))
"""]
lazy = true
keep_alive = true

[[service.py.socket]]
path = "@DIR@/py.sock"
"#,
    );
    s.wait_for("py: listening");
    let answer = ask(&s.dir.path().join("py.sock")).unwrap();
    let pid = started_pid(&s.wait_for("py: started"));
    assert_eq!(answer, format!("python {pid} got fds [3]"));
    assert!(s.terminate().success());
}

#[test]
fn a_live_listener_on_the_path_is_a_startup_error() {
    let dir = temp_dir();
    let path = dir.path().join("busy.sock");
    let _busy = UnixListener::bind(&path).unwrap();
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "[service.a]\nexec = [\"/bin/true\"]\n[[service.a.socket]]\npath = \"{}\"\n",
            path.display()
        ),
    )
    .unwrap();
    let (status, _, err) = run(Command::new(bin("steward")).arg("--config").arg(&config));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        err,
        format!(
            "steward: error: service `a`: socket {}: in use: something is listening there already\n",
            path.display()
        )
    );
    assert!(path.exists(), "the live listener's socket is not removed");
}

#[test]
fn a_stale_socket_file_is_replaced_but_other_files_are_not() {
    let dir = temp_dir();
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert!(stale.exists(), "a closed listener leaves its file behind");
    let mut s = Steward::start(&format!(
        "[service.a]\nexec = [\"/bin/sleep\", \"1000\"]\n[[service.a.socket]]\npath = \"{}\"\n",
        stale.display()
    ));
    s.wait_for("a: started");
    // Connectable again: the new socket replaced the stale file.
    UnixStream::connect(&stale).unwrap();
    assert!(s.terminate().success());

    let file = dir.path().join("precious");
    std::fs::write(&file, "data").unwrap();
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "[service.a]\nexec = [\"/bin/true\"]\n[[service.a.socket]]\npath = \"{}\"\n",
            file.display()
        ),
    )
    .unwrap();
    let (status, _, err) = run(Command::new(bin("steward")).arg("--config").arg(&config));
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("exists and is not a socket (it is left alone)"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "data");
}

#[test]
fn a_failed_socket_leaves_no_earlier_socket_behind() {
    let dir = temp_dir();
    let good = dir.path().join("good.sock");
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, "not a socket").unwrap();
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "[service.a]\nexec = [\"/bin/true\"]\n[[service.a.socket]]\npath = \"{}\"\n[service.b]\nexec = [\"/bin/true\"]\n[[service.b.socket]]\npath = \"{}\"\n",
            good.display(),
            blocker.display()
        ),
    )
    .unwrap();
    let (status, _, _) = run(Command::new(bin("steward")).arg("--config").arg(&config));
    assert_eq!(status.code(), Some(1));
    assert!(!good.exists());
}

#[test]
fn an_accept_instance_sees_its_connection_and_its_peer() {
    for inetd in [false, true] {
        let stdio = if inetd { "stdio = \"socket\"" } else { "" };
        let s = Steward::start(&format!(
            r#"
[service.each]
exec = ["{probe}", "report", "@DIR@/report"]
accept = true
log_instances = "all"
{stdio}

[[service.each.socket]]
path = "@DIR@/each.sock"
"#,
            probe = probe()
        ));
        s.wait_for("each: listening");
        let dir = s.dir.path().to_path_buf();
        let client = UnixStream::connect(dir.join("each.sock")).unwrap();
        s.wait_for("each@1: exited with status 0");
        drop(client);
        let r = report(&dir.join("report"));
        let kinds: Vec<(&str, &str)> = r
            .fds
            .iter()
            .map(|f| (f["fd"].as_str(), f["kind"].as_str()))
            .collect();
        let mut env = r.env.clone();
        assert_eq!(
            env.remove("REMOTE_PID"),
            Some(std::process::id().to_string())
        );
        assert_eq!(env.remove("REMOTE_UID"), Some(own_uid().to_string()));
        assert_eq!(env.remove("REMOTE_GID"), Some(own_gid().to_string()));
        assert!(env.remove("PATH").is_some());
        if inetd {
            // The connection is stdin and stdout, stderr goes to the log; no socket variables.
            assert_eq!(
                kinds[..2],
                [("0", "socket"), ("1", "socket")],
                "{:?}",
                r.fds
            );
            assert_eq!(r.fds.len(), 3, "{:?}", r.fds);
            assert_eq!(r.fds[0]["target"], r.fds[1]["target"]);
            assert_ne!(r.fds[2]["target"], r.fds[0]["target"]);
            assert!(env.is_empty(), "{env:?}");
        } else {
            assert_eq!(kinds[3], ("3", "socket"));
            assert_eq!(r.fds.len(), 4, "{:?}", r.fds);
            assert_eq!(r.fds[3]["listening"], "0", "fd 3 is the connection itself");
            assert_eq!(r.fds[3]["cloexec"], "0");
            assert_eq!(env.remove("LISTEN_PID").as_ref(), Some(&r.items["pid"]));
            assert_eq!(env.remove("LISTEN_FDS").as_deref(), Some("1"));
            assert_eq!(env.remove("LISTEN_FDNAMES").as_deref(), Some("connection"));
            assert_eq!(env.remove("SOCKET_TAKEOVER").as_deref(), Some("1"));
            assert!(env.is_empty(), "{env:?}");
        }
    }
}

#[test]
fn signals_the_manager_was_started_with_ignored_are_default_in_services() {
    // As under `nohup`: dispositions a parent ignored survive into steward, and from there
    // into every process it starts, unless the executor resets them (steward names them in the
    // spawn state: it is the only kind of disposition that survives exec).
    let dir = temp_dir();
    let config = dir.path().join("steward.toml");
    let report_path = dir.path().join("report");
    std::fs::write(
        &config,
        format!(
            "[service.probe]\nexec = [\"{}\", \"report\", \"{}\"]\n",
            probe(),
            report_path.display()
        ),
    )
    .unwrap();
    let mut cmd = Steward::command(&config, dir.path());
    // SAFETY: runs in the forked child before exec; signal(2) is async-signal-safe and
    // touches no memory of ours.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::signal(libc::SIGUSR1, libc::SIG_IGN);
            libc::signal(libc::SIGRTMIN() + 3, libc::SIG_IGN);
            Ok(())
        });
    }
    let s = Steward::spawn(cmd, dir);
    s.wait_for("probe: exited with status 0");
    let r = report(&report_path);
    assert_eq!(u64::from_str_radix(&r.items["sigign"], 16), Ok(0));
    assert_eq!(u64::from_str_radix(&r.items["sigmask"], 16), Ok(0));
}

/// Many children exited at once are reaped a batch per turn of the loop, with the other
/// events seen to between the batches. Reaping until none was left went on for as long as
/// exits kept coming: under a storm of connections to instances that end at once, each exit
/// freed a slot for the next connection, whose instance ended as soon, and for a second and
/// more no other event was looked at (thousands of ended instances' output pipes piled up
/// unread). Here the exits come all at once, while steward is stopped: the output of some
/// instances must be read between the first exit and the last.
#[test]
fn many_children_exited_at_once_are_reaped_with_the_other_events_between() {
    const INSTANCES: usize = 64;
    let mut s = Steward::start(
        r#"
[service.brief]
exec = ["/bin/sh", "-c", "read x; echo bye >&2"]
accept = true
stdio = "socket"
max_connections = 64
log_instances = "all"

[[service.brief.socket]]
path = "@DIR@/brief.sock"
"#,
    );
    s.wait_for("brief: listening");
    let sock = s.dir.path().join("brief.sock");
    let mut clients: Vec<UnixStream> = (0..INSTANCES)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    wait_until("every instance running", || {
        s.service("brief")["instances"].as_array().map(Vec::len) == Some(INSTANCES)
    });
    s.signal(libc::SIGSTOP);
    let zombies = |n: usize| {
        wait_until(&format!("{n} instances ended"), || {
            children(s.pid())
                .into_iter()
                .filter(|&pid| process_state(pid) == Some('Z'))
                .count()
                == n
        })
    };
    // One ends first, so that the SIGCHLD is the first event steward finds ready (after that
    // instance's output), ahead of the others' output: the order of epoll's ready list.
    drop(clients.pop());
    zombies(1);
    drop(clients);
    zombies(INSTANCES);
    s.signal(libc::SIGCONT);
    s.wait_for_nth(": exited with status 0", INSTANCES);
    s.wait_for_nth(": bye", INSTANCES);
    let lines: Vec<String> = s
        .lines()
        .into_iter()
        .filter(|l| l.contains("brief@"))
        .collect();
    let exits: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].contains(": exited with status 0"))
        .collect();
    let (first, last) = (exits[0], exits[INSTANCES - 1]);
    assert!(
        lines[first..last].iter().any(|l| l.ends_with(": bye")),
        "no output read between the first exit and the last: {lines:#?}"
    );
    s.terminate();
}
