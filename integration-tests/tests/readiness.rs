//! Readiness through real sd_notify clients written by others (systemd-notify, python3-systemd,
//! libsystemd through ctypes, gunicorn), the s6-style notification fd, setup tasks, start
//! timeouts, MAINPID, and who may speak for a service.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

use steward_integration_tests::*;

/// `/usr/bin/python3`: Debian's, which has python3-systemd.
const PYTHON: &str = "/usr/bin/python3";

/// Creates the file the services below wait for before they say they are ready.
fn go(s: &Steward) {
    std::fs::write(s.dir.path().join("go"), "").unwrap();
}

/// The shell line that waits for the test's `go` file.
const WAIT_FOR_GO: &str = "while [ ! -e @DIR@/go ]; do sleep 0.02; done";

/// Starting until the service says it is ready, running after; with its STATUS= text.
fn starting_until_go_then_running(s: &Steward, name: &str, status: Option<&str>) {
    let starting = s.wait_state(name, "starting");
    assert!(starting["pid"].as_i64().is_some(), "{starting}");
    // Still starting while it has not said so: the state is stable, not a race.
    s.wait_for(&format!("{name}: started"));
    assert_eq!(s.service(name)["state"], "starting");
    go(s);
    let running = s.wait_state(name, "running");
    assert_eq!(running["status_text"].as_str(), status, "{running}");
}

#[test]
fn systemd_notify_from_a_shell_service() {
    let s = Steward::start(&format!(
        r#"
[service.sh]
exec = ["/bin/sh", "-c", "{WAIT_FOR_GO}; systemd-notify --ready --status='warmed up'; exec sleep 1000"]
ready = "notify"
# systemd-notify is a child of the shell; as root it claims to speak for its parent, but that
# is a privilege, so the service lets its children speak.
notify_access = "all"
"#
    ));
    starting_until_go_then_running(&s, "sh", Some("warmed up"));
}

#[test]
fn python3_systemd_daemon_notify() {
    let script = "import time, os\nfrom systemd import daemon\n\
                  while not os.path.exists('@DIR@/go'): time.sleep(0.02)\n\
                  daemon.notify('READY=1\\nSTATUS=py is ready')\ntime.sleep(1000)\n";
    let s = Steward::start(&format!(
        "[service.py]\nexec = [\"{PYTHON}\", \"-c\", {script:?}]\nready = \"notify\"\n"
    ));
    starting_until_go_then_running(&s, "py", Some("py is ready"));
}

#[test]
fn libsystemd_sd_notify_through_ctypes() {
    let script = "import ctypes, time, os\nlib = ctypes.CDLL('libsystemd.so.0')\n\
                  while not os.path.exists('@DIR@/go'): time.sleep(0.02)\n\
                  lib.sd_notify(0, b'READY=1\\nSTATUS=from libsystemd')\ntime.sleep(1000)\n";
    let s = Steward::start(&format!(
        "[service.c]\nexec = [\"{PYTHON}\", \"-c\", {script:?}]\nready = \"notify\"\n"
    ));
    starting_until_go_then_running(&s, "c", Some("from libsystemd"));
}

#[test]
fn libsystemd_sd_notify_barrier_is_answered_and_its_fd_is_no_stray() {
    // The barrier's fd closes once everything sent before it is handled; the service blocks on
    // that (5 s at most) and prints what it got.
    let script = "import ctypes, time\nlib = ctypes.CDLL('libsystemd.so.0')\n\
                  lib.sd_notify(0, b'READY=1')\n\
                  print('barrier', lib.sd_notify_barrier(0, ctypes.c_uint64(5000000)), flush=True)\n\
                  time.sleep(1000)\n";
    let s = Steward::start(&format!(
        "[service.c]\nexec = [\"{PYTHON}\", \"-c\", {script:?}]\nready = \"notify\"\n"
    ));
    s.wait_state("c", "running");
    s.wait_for("c: barrier 1");
    assert_eq!(s.count("without FDSTORE=1"), 0, "{}", s.lines().join("\n"));
}

#[test]
fn gunicorn_notifies_by_itself_and_serves_on_its_socket() {
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("app.py"),
        "def app(environ, start_response):\n    \
         start_response('200 OK', [('Content-Type', 'text/plain')])\n    \
         return [b'hello from gunicorn\\n']\n",
    )
    .unwrap();
    let port = free_port();
    let config = format!(
        r#"
[service.web]
exec = ["/usr/bin/gunicorn", "--chdir", "{dir}", "--workers", "1", "app:app"]
ready = "notify"
[[service.web.socket]]
listen = "127.0.0.1:{port}"
"#,
        dir = dir.path().display()
    );
    let path = dir.path().join("steward.toml");
    std::fs::write(&path, config).unwrap();
    let s = Steward::start_at(&path, dir);
    let web = s.wait_state("web", "running");
    assert_eq!(web["status_text"], "Gunicorn arbiter booted", "{web}");
    let (status, out, _) = run(std::process::Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .arg(format!("http://127.0.0.1:{port}/")));
    assert!(status.success());
    assert_eq!(out, "hello from gunicorn\n");
}

/// A TCP port nobody listens on now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn a_service_that_never_says_ready_fails_at_its_start_timeout() {
    let s = Steward::start(
        r#"
[service.mute]
exec = ["/bin/sleep", "1000"]
ready = "notify"
start_timeout = "500ms"
"#,
    );
    s.wait_for("mute: not ready within 500ms (start_timeout); stopping it");
    let mute = s.wait_state("mute", "failed");
    assert_eq!(
        mute["failure"]["reason"],
        "not ready within 500ms (start_timeout)"
    );
    assert_eq!(mute["last_exit"], serde_json::json!({"signal": 15}));
}

#[test]
fn extend_timeout_usec_gives_a_slow_service_more_time() {
    let script = "import time\nfrom systemd import daemon\n\
                  daemon.notify('EXTEND_TIMEOUT_USEC=5000000')\ntime.sleep(1.5)\n\
                  daemon.notify('READY=1')\ntime.sleep(1000)\n";
    let s = Steward::start(&format!(
        "[service.slow]\nexec = [\"{PYTHON}\", \"-c\", {script:?}]\nready = \"notify\"\nstart_timeout = \"1s\"\n"
    ));
    s.wait_state("slow", "running");
    assert_eq!(s.count("slow: not ready within"), 0);
}

#[test]
fn an_s6_style_notification_fd() {
    // What s6's notification-fd and dinit's pipefd readiness daemons do: a line on fd N.
    let s = Steward::start(&format!(
        r#"
[service.s6]
exec = ["/bin/sh", "-c", "{WAIT_FOR_GO}; echo >&5; exec sleep 1000"]
ready = "fd:5"
"#
    ));
    starting_until_go_then_running(&s, "s6", None);
}

#[test]
fn a_lazy_service_started_by_its_armed_executor_says_it_is_ready_on_its_fd() {
    // The readiness pipe is made when the executor is armed, before any client.
    let s = Steward::start(&format!(
        r#"
[service.lz]
exec = ["/bin/sh", "-c", "{WAIT_FOR_GO}; echo >&5; exec sleep 1000"]
ready = "fd:5"
lazy = true
[[service.lz.socket]]
path = "@DIR@/lz.sock"
"#
    ));
    s.wait_for("lz: listening");
    let pid = s.pid();
    wait_until("the armed executor", || {
        idle_executors(pid).into_iter().any(is_armed)
    });
    let _client = std::os::unix::net::UnixStream::connect(s.dir.path().join("lz.sock")).unwrap();
    starting_until_go_then_running(&s, "lz", None);
}

#[test]
fn a_setup_task_is_ready_when_it_exits_and_failed_when_it_does_not_exit_0() {
    let s = Steward::start(
        r#"
[service.setup]
exec = ["/bin/sh", "-c", "exit 0"]
ready = "exit"

[service.broken]
exec = ["/bin/sh", "-c", "exit 3"]
ready = "exit"
"#,
    );
    s.wait_state("setup", "exited");
    let broken = s.wait_state("broken", "failed");
    assert_eq!(broken["last_exit"], serde_json::json!({"code": 3}));
}

/// A service (in python) that forks a daemon, says the daemon is its main process, and exits.
const FORKING: &str = "import os, socket, time\n\
    pid = os.fork()\n\
    if pid == 0:\n    os.setsid()\n    time.sleep(1000)\n\
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
    s.connect(os.environ['NOTIFY_SOCKET'])\n\
    s.send(('MAINPID=%d\\nREADY=1' % pid).encode())\n";

#[test]
fn mainpid_from_a_service_that_forks_its_daemon_and_exits() {
    let s = Steward::start(&format!(
        "[service.forker]\nexec = [\"{PYTHON}\", \"-c\", {FORKING:?}]\nready = \"notify\"\nkeep_alive = true\nrestart_delay = \"0\"\n"
    ));
    let running = s.wait_state("forker", "running");
    let daemon = running["pid"].as_i64().unwrap() as i32;
    let first = started_pid(&s.wait_for("forker: started"));
    assert_ne!(daemon, first, "the daemon is the main process now");
    // The first process exits: the daemon keeps running, supervised.
    wait_until("the forking parent to be gone", || !alive(first));
    assert_eq!(s.service("forker")["pid"], daemon);
    assert!(alive(daemon));
    // The daemon dies: keep_alive restarts the service.
    send_signal(daemon, libc::SIGKILL).unwrap();
    s.wait_for_nth("forker: started", 2);
    wait_until("a new daemon", || {
        s.service("forker")["pid"]
            .as_i64()
            .is_some_and(|p| p as i32 != daemon && p as i32 != first)
    });
    assert_eq!(s.service("forker")["restarts"], 1);
}

/// Sends one datagram to steward's notify socket from this (the test's) process.
fn send_as_outsider(dir: &Path, message: &str) {
    let socket = UnixDatagram::unbound().unwrap();
    socket
        .send_to(message.as_bytes(), dir.join("notify"))
        .unwrap();
}

/// A service whose forked child (not its main process) says READY=1, from its own pid.
const CHILD_SAYS_READY: &str = "import os, socket, time\n\
    while not os.path.exists('@DIR@/go'): time.sleep(0.02)\n\
    if os.fork() == 0:\n    \
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n    \
    s.connect(os.environ['NOTIFY_SOCKET'])\n    s.send(b'READY=1')\n    time.sleep(1000)\n\
    time.sleep(1000)\n";

#[test]
fn nobody_but_the_service_itself_can_make_it_ready() {
    let s = Steward::start(&format!(
        r#"
[service.victim]
exec = ["/bin/sh", "-c", "{WAIT_FOR_GO}; exec sleep 1000"]
ready = "notify"

[service.other]
exec = ["{PYTHON}", "-c", "import os, socket, time\nwhile True:\n    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n    s.connect(os.environ['NOTIFY_SOCKET'])\n    s.send(('READY=1\\nMAINPID=%s' % open('@DIR@/victim.pid').read()).encode()) if os.path.exists('@DIR@/victim.pid') else None\n    time.sleep(0.05)\n"]
ready = "notify"
start_timeout = "infinity"

[service.child]
exec = ["{PYTHON}", "-c", {CHILD_SAYS_READY:?}]
ready = "notify"

[service.allowed]
exec = ["{PYTHON}", "-c", {CHILD_SAYS_READY:?}]
ready = "notify"
notify_access = "all"
"#
    ));
    let victim = s.wait_state("victim", "starting")["pid"].as_i64().unwrap();
    let dir = s.dir.path().to_path_buf();
    std::fs::write(dir.join("victim.pid"), victim.to_string()).unwrap();
    // An outsider (this test) forges READY=1 and a MAINPID.
    send_as_outsider(&dir, "READY=1\nMAINPID=1\n");
    send_as_outsider(&dir, &format!("READY=1\nMAINPID={victim}\n"));
    // Another service's process claims the victim's pid as its main one.
    s.wait_for("other: MAINPID=");
    s.wait_for("notify socket: a message from pid");
    // A child of the main process: notify_access = "main" ignores it, "all" does not.
    go(&s);
    s.wait_for("child: a notify message from pid");
    s.wait_state("allowed", "running");
    assert_eq!(s.service("victim")["state"], "starting");
    assert_eq!(s.service("victim")["pid"], victim);
    assert_eq!(s.service("child")["state"], "starting");
    // Its own READY=1 counts, the pid it named does not.
    let other = s.wait_state("other", "running");
    assert_ne!(other["pid"], victim);
    // Each is said once, however often it is tried.
    assert_eq!(s.count("other: MAINPID="), 1);
}

#[test]
fn mainpid_naming_steward_itself_is_refused() {
    let s = Steward::start(&format!(
        "[service.bold]\nexec = [\"{PYTHON}\", \"-c\", \"import os, socket, time\\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\\ns.connect(os.environ['NOTIFY_SOCKET'])\\ns.send(('MAINPID=%d\\\\nREADY=1' % os.getppid()).encode())\\ntime.sleep(1000)\"]\nready = \"notify\"\n"
    ));
    s.wait_for("bold: MAINPID=");
    assert!(s.count("that is steward itself") == 1, "{:?}", s.lines());
    // The READY=1 beside it counts: the sender is the main process.
    let bold = s.wait_state("bold", "running");
    assert_ne!(bold["pid"], s.pid());
}

/// Sends `bytes` with `fds` to `path` from this process (SCM_RIGHTS).
fn send_with_fds(socket: &UnixDatagram, path: &Path, bytes: &[u8], fds: &[i32]) {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero sockaddr_un is a valid empty address, filled in below.
    let mut name: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    name.sun_family = libc::AF_UNIX as u16;
    let p = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    for (i, b) in p.iter().enumerate() {
        name.sun_path[i] = *b as libc::c_char;
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut _,
        iov_len: bytes.len(),
    };
    let mut control = [0u64; 128];
    // SAFETY: a zeroed msghdr is valid; every pointer set below stays alive for the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_un).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let len = std::mem::size_of_val(fds);
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE computes a size.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(len as u32) } as usize;
        // SAFETY: the control buffer is large enough for one header with `len` bytes.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(len as u32) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        }
    }
    // SAFETY: sendmsg reads the buffers the msghdr describes. A full queue (EAGAIN) drops the
    // datagram, which is fine for a flood.
    unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
}

#[test]
fn a_flood_of_garbage_on_the_notify_socket_changes_nothing() {
    use std::os::fd::AsRawFd;
    let s = Steward::start(&format!(
        "[service.waiting]\nexec = [\"/bin/sh\", \"-c\", \"{WAIT_FOR_GO}; exec sleep 1000\"]\nready = \"notify\"\nstart_timeout = \"infinity\"\n\
         [service.up]\nexec = [\"/bin/sleep\", \"1000\"]\n"
    ));
    s.wait_state("up", "running");
    let waiting = s.wait_state("waiting", "starting")["pid"].clone();
    let steward = s.pid();
    let fds_before = std::fs::read_dir(format!("/proc/{steward}/fd"))
        .unwrap()
        .count();
    let rss_before = anon_rss_kib(steward);
    let socket = UnixDatagram::unbound().unwrap();
    let notify = s.dir.path().join("notify");
    let (pipe_r, pipe_w) = std::io::pipe().unwrap();
    let extra = [pipe_r.as_raw_fd(), pipe_w.as_raw_fd(), socket.as_raw_fd()];
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let noise: Vec<u8> = (0..70_000).map(|_| next() as u8).collect();
    // 10,000 a second for 10 seconds, paced, bounded in count.
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    while sent < 100_000 && started.elapsed() < std::time::Duration::from_secs(15) {
        let due = started + std::time::Duration::from_micros(sent * 100);
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        let kind = next() % 5;
        let len = match kind {
            // Oversized.
            0 => 4097 + (next() % 60_000) as usize,
            _ => (next() % 300) as usize,
        };
        let start = (next() % 1000) as usize;
        let forged = format!("READY=1\nMAINPID={waiting}\nSTATUS=forged");
        let bytes: &[u8] = match kind {
            1 => forged.as_bytes(),
            _ => &noise[start..start + len],
        };
        let fds: &[i32] = if kind == 2 {
            &extra[..(next() % 3 + 1) as usize]
        } else {
            &[]
        };
        send_with_fds(&socket, &notify, bytes, fds);
        sent += 1;
    }
    eprintln!("sent {sent} datagrams in {:?}", started.elapsed());
    // Still serving, nothing changed, nothing kept.
    assert_eq!(s.service("waiting")["state"], "starting");
    assert_eq!(s.service("waiting")["pid"], waiting);
    assert!(s.service("waiting")["status_text"].is_null());
    assert_eq!(s.service("up")["state"], "running");
    wait_until("the fd table to settle", || {
        std::fs::read_dir(format!("/proc/{steward}/fd"))
            .unwrap()
            .count()
            <= fds_before
    });
    let rss_after = anon_rss_kib(steward);
    assert!(
        rss_after <= rss_before + 1024,
        "anonymous RSS {rss_before} -> {rss_after} kB"
    );
    // Logged once, not per datagram.
    assert!(s.count("notify socket:") <= 3, "{:?}", s.lines());
}
