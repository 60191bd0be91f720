// The executor tests, run fresh (executor.rs), pooled (executor_pooled.rs) and armed
// (executor_armed.rs).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio as ProcessStdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use steward_integration_tests::bin;
use steward_protocol::{Credentials, Rlimit, SpawnState, StatusReport, Stdio, Step};

/// A directory removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    /// A directory of its own, though tests run in parallel threads of one process and some
    /// share a name (every armed run with as many fds, for one).
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "steward-executor-test-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn memfd(bytes: &[u8]) -> OwnedFd {
    // SAFETY: the name is a NUL-terminated literal; memfd_create returns a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"steward-test-state".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: memfd_create just returned this fd and nothing else owns it.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes).unwrap();
    file.into()
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> (File, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array, which outlives the call.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 just returned these two fds and nothing else owns them.
    unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// How the tests of a file start the executor.
#[allow(dead_code)]
enum Via {
    /// `--deserialize`, on a memfd.
    Fresh,
    /// `--pooled`, handed the state at once.
    Pooled,
    /// `--pooled`, armed: handed the state and a listening socket, then a client connects.
    Armed,
    /// `--pooled`, armed as a lazy service's is: handed the state and a listening socket, then
    /// a client connects, which the executor does not accept.
    Woken,
    /// `--pooled`, armed as a keep-alive service's is for its restart: handed the state, it
    /// takes every step, then execs on the manager's word.
    Worded,
}

/// Runs the executor with `args`, each fd of `fds` placed at the number given with it.
/// `signals` also leaves some signals ignored and blocked, for the executor to undo. With
/// [`VIA`] other than fresh, the same spawn goes through a pooled executor instead (see
/// [`run_pooled`]).
fn run(args: &[&str], fds: Vec<(OwnedFd, RawFd)>, signals: bool) -> Output {
    match VIA {
        Via::Fresh => start(args, fds, signals).wait_with_output().unwrap(),
        Via::Pooled | Via::Armed | Via::Woken | Via::Worded => run_pooled(args, fds, signals),
    }
}

/// `run` as the manager does it with an idle executor: `steward-executor --pooled 40` is
/// started first, then sent the memfd's state and the other fds at their numbers in one
/// message, the status pipe's place taken by the pool socket. What comes back on the socket
/// until its end of file is copied into the test's status pipe, so every test reads the
/// reports it would read from a fresh executor.
fn run_pooled(args: &[&str], fds: Vec<(OwnedFd, RawFd)>, signals: bool) -> Output {
    let ["--deserialize", at] = args else {
        panic!("a pooled run needs --deserialize N: {args:?}");
    };
    let at: RawFd = at.parse().unwrap();
    let (memfd, fds): (Vec<_>, Vec<_>) = fds.into_iter().partition(|(_, n)| *n == at);
    let mut bytes = Vec::new();
    let mut memfd = File::from(memfd.into_iter().next().unwrap().0);
    // Written, not read yet: the position is at its end.
    std::io::Seek::rewind(&mut memfd).unwrap();
    memfd.read_to_end(&mut bytes).unwrap();
    let status_fd = steward_protocol::decode(&bytes).unwrap().status_fd;
    let (status, fds): (Vec<_>, Vec<_>) = fds.into_iter().partition(|(_, n)| *n == status_fd);
    let (ours, theirs) = pool_pair();
    let child = start(&["--pooled", "40"], vec![(OwnedFd::from(theirs), 40)], signals);
    let mut numbers: Vec<RawFd> = fds.iter().map(|(_, n)| *n).collect();
    let mut borrowed: Vec<_> = fds.iter().map(|(fd, _)| fd.as_fd()).collect();
    // Armed: a listener at a number no test names, so that the connection, which takes its
    // number, is closed by placement like any fd the state does not name.
    let dir = TempDir::new("armed");
    let listener = match VIA {
        Via::Armed | Via::Woken => {
            let listener = UnixListener::bind(dir.path("sock")).unwrap();
            listener.set_nonblocking(true).unwrap();
            Some(listener)
        }
        Via::Fresh | Via::Pooled | Via::Worded => None,
    };
    if let Some(listener) = &listener {
        numbers.push(ARMED_LISTENER);
        borrowed.push(listener.as_fd());
    }
    let start_at = match VIA {
        Via::Fresh | Via::Pooled => steward_protocol::Start::Now,
        Via::Armed => steward_protocol::Start::OnConnection {
            listener: ARMED_LISTENER,
        },
        Via::Woken => steward_protocol::Start::OnReadable {
            listeners: vec![ARMED_LISTENER],
        },
        Via::Worded => steward_protocol::Start::OnWord,
    };
    let message = steward_protocol::handover(&numbers, &start_at, &bytes);
    send_with_fds(&ours, &message, &borrowed);
    drop(borrowed);
    drop(fds);
    drop(listener);
    let _client = match VIA {
        Via::Armed | Via::Woken => Some(std::os::unix::net::UnixStream::connect(dir.path("sock")).unwrap()),
        Via::Fresh | Via::Pooled | Via::Worded => None,
    };
    if let Via::Worded = VIA {
        // Refused once the executor has failed a step and gone: what it reported stays to read.
        let _ = ours.send(&steward_protocol::GO);
    }
    let mut reported = Vec::new();
    let mut buf = [0u8; 64];
    ours.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    // End of file: the executor exec'd (its end is close-on-exec) or exited.
    while let Ok(n) = ours.recv(&mut buf) {
        if n == 0 {
            break;
        }
        reported.extend_from_slice(&buf[..n]);
    }
    // The armed executor's word that it has its client is not a report a fresh one makes.
    let word = match VIA {
        Via::Armed => Some(steward_protocol::ACCEPTED),
        Via::Woken => Some(steward_protocol::READABLE),
        Via::Fresh | Via::Pooled | Via::Worded => None,
    };
    if let Some(rest) = word.and_then(|w| reported.strip_prefix(&w)) {
        reported = rest.to_vec();
    }
    if let Some((write, _)) = status.into_iter().next() {
        File::from(write).write_all(&reported).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Disarms an armed executor as the manager does (a shutdown of our end of its pool socket,
/// never a close), and checks that it exits 0 quietly, having reported nothing.
#[allow(dead_code)]
fn disarm_quietly(ours: &UnixDatagram, child: std::process::Child) {
    ours.shutdown(std::net::Shutdown::Write).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    ours.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(ours.recv(&mut buf).unwrap(), 0);
}

/// Where an armed executor finds its listener: a number none of the tests uses.
const ARMED_LISTENER: RawFd = 90;

/// A pooled executor (`--pooled 40`) handed `state`, its status fd made the pool socket's (41),
/// to start as `start_at`, with `fds` at the manager's `numbers`: our end of the pool socket,
/// and the executor.
#[allow(dead_code)]
fn handed(
    mut state: SpawnState,
    start_at: &steward_protocol::Start,
    numbers: &[RawFd],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> (UnixDatagram, std::process::Child) {
    state.status_fd = 41;
    let (ours, theirs) = pool_pair();
    let child = start(
        &["--pooled", "40"],
        vec![(OwnedFd::from(theirs), 40)],
        false,
    );
    let bytes = steward_protocol::encode(&state).unwrap();
    send_with_fds(&ours, &steward_protocol::handover(numbers, start_at, &bytes), fds);
    ours.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    (ours, child)
}

/// A seqpacket socket pair, as the manager makes for each idle executor. std has no type for
/// seqpacket sockets; `UnixDatagram`'s send and recv are the plain calls, which is all a
/// message socket needs.
fn pool_pair() -> (UnixDatagram, UnixDatagram) {
    let mut fds = [-1; 2];
    // SAFETY: socketpair writes two fds into the array, which outlives the call.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    // SAFETY: socketpair just returned these two fds and nothing else owns them.
    unsafe {
        (
            UnixDatagram::from_raw_fd(fds[0]),
            UnixDatagram::from_raw_fd(fds[1]),
        )
    }
}

/// Sends one message with `fds` attached (SCM_RIGHTS).
fn send_with_fds(socket: &UnixDatagram, message: &[u8], fds: &[std::os::fd::BorrowedFd<'_>]) {
    let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let space = if raw.is_empty() {
        0
    } else {
        // SAFETY: CMSG_SPACE only computes a size.
        unsafe { libc::CMSG_SPACE(std::mem::size_of_val(&raw[..]) as u32) as usize }
    };
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: message.as_ptr() as *mut libc::c_void,
        iov_len: message.len(),
    };
    // SAFETY: an all-zero msghdr is a valid empty one.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `control` holds CMSG_SPACE bytes for one header with `raw` after it; the
        // pointers CMSG_FIRSTHDR and CMSG_DATA return lie inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(&raw[..]) as u32) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(cmsg).cast(), raw.len());
        }
    }
    // SAFETY: `msg` points at live buffers for the call.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
    assert_eq!(sent, message.len() as isize, "{}", std::io::Error::last_os_error());
}

/// Starts the executor with `args`, each fd of `fds` placed at the number given with it.
fn start(args: &[&str], fds: Vec<(OwnedFd, RawFd)>, signals: bool) -> std::process::Child {
    let pairs: Vec<(RawFd, RawFd)> = fds.iter().map(|(fd, at)| (fd.as_raw_fd(), *at)).collect();
    assert!(pairs.len() <= 8);
    let mut command = Command::new(bin("steward-executor"));
    command.args(args).stdin(ProcessStdio::null());
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // calls (fcntl, dup2, signal, sigprocmask) on stack data: no allocation, no locks.
    unsafe {
        command.pre_exec(move || {
            // Copy every fd out of the way first, so placing one cannot destroy another.
            let mut copies = [-1; 8];
            for (copy, &(fd, _)) in copies.iter_mut().zip(&pairs) {
                *copy = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 500);
                if *copy < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (&copy, &(_, at)) in copies.iter().zip(&pairs) {
                // dup2 clears FD_CLOEXEC on `at`: these are the fds that cross exec.
                if libc::dup2(copy, at) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if signals {
                libc::signal(libc::SIGUSR1, libc::SIG_IGN);
                libc::signal(libc::SIGRTMIN() + 2, libc::SIG_IGN);
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR2);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            Ok(())
        });
    }
    let child = command
        .stdout(ProcessStdio::piped())
        .stderr(ProcessStdio::piped())
        .spawn()
        .unwrap();
    // The child has its copies; ours must go so the status pipe can reach end-of-file.
    drop(fds);
    child
}

fn state(path: &str, argv: &[&str]) -> SpawnState {
    SpawnState {
        name: "test".into(),
        path: path.into(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        env: vec!["PATH=/usr/bin:/bin".into()],
        pid_vars: Vec::new(),
        stdio: [Stdio::Inherit, Stdio::Inherit, Stdio::Inherit],
        fds: vec![],
        status_fd: 3,
        working_directory: "/".into(),
        umask: 0o022,
        credentials: None,
        rlimits: vec![],
        cgroups: vec![],
        fds_at: Vec::new(),
        reset_signals: (1..=64).collect(),
    }
}

fn encoded(state: &SpawnState) -> OwnedFd {
    memfd(&steward_protocol::encode(state).unwrap())
}

/// Everything the status pipe carried until every writer was gone.
fn status_bytes(mut read: File) -> Vec<u8> {
    let mut bytes = Vec::new();
    read.read_to_end(&mut bytes).unwrap();
    bytes
}

fn report(read: File) -> StatusReport {
    StatusReport::decode(&status_bytes(read)).unwrap()
}

/// The lines of `text` between `== name ==` and the next marker.
fn section<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let marker = format!("== {name} ==");
    text.lines()
        .skip_while(|l| *l != marker)
        .skip(1)
        .take_while(|l| !l.starts_with("== "))
        .collect()
}

/// `ls -l /proc/PID/fd` as (fd, target) pairs.
fn fd_links(lines: &[&str]) -> Vec<(RawFd, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let fd = left.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.to_string()))
        })
        .collect()
}

fn link(fd: &impl AsRawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .display()
        .to_string()
}

/// The `flags:` field of an fdinfo listing.
fn fdinfo_flags(lines: &[&str]) -> u32 {
    let flags = lines.iter().find_map(|l| l.strip_prefix("flags:")).unwrap();
    u32::from_str_radix(flags.trim(), 8).unwrap()
}

fn status_field<'a>(lines: &[&'a str], name: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(name))
        .unwrap()
        .trim()
}

fn read_file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// Prints what the service sees, in sections.
const REPORT_SCRIPT: &str = r#"
echo "== pid =="; echo $$
echo "== umask =="; umask
echo "== cwd =="; readlink /proc/$$/cwd
echo "== fds =="; ls -l /proc/$$/fd
echo "== fdinfo3 =="; cat /proc/$$/fdinfo/3
echo "== status =="; cat /proc/$$/status
echo "== limits =="; cat /proc/$$/limits
echo "== id =="; id
echo "== env =="; env
echo "== end =="
echo to-stderr >&2
"#;

#[test]
fn service_sees_what_the_state_says() {
    let dir = TempDir::new("sees");
    let out_path = dir.path("out");
    let err_path = dir.path("err");
    let cgroup = dir.path("cgroup");
    std::fs::create_dir(&cgroup).unwrap();
    std::fs::write(cgroup.join("cgroup.procs"), "").unwrap();
    let workdir = dir.path("work");
    std::fs::create_dir(&workdir).unwrap();

    let socket = UnixListener::bind(dir.path("sock")).unwrap();
    // The manager's sockets may be non-blocking on its side; the service's must not be.
    socket.set_nonblocking(true).unwrap();
    let err_file = File::create(&err_path).unwrap();
    let (status_read, status_write) = pipe();

    let mut s = state("/bin/sh", &["sh", "-c", REPORT_SCRIPT]);
    s.env.push("GREETING=hello world".into());
    s.pid_vars = vec!["LISTEN_PID".into()];
    s.stdio = [
        Stdio::Null,
        Stdio::Path(out_path.display().to_string()),
        Stdio::Fd(12),
    ];
    s.fds = vec![10];
    // Below 3 + 1: the executor has to move it out of the socket's way.
    s.status_fd = 3;
    s.working_directory = workdir.display().to_string();
    s.umask = 0o027;
    s.rlimits = vec![Rlimit {
        // `as _`: the constant is u32 in glibc, c_int in musl.
        resource: libc::RLIMIT_NOFILE as _,
        value: 100,
    }];
    s.cgroups = vec![cgroup.display().to_string()];
    let socket_link = link(&socket);
    let fds = vec![
        (encoded(&s), 11),
        (status_write, 3),
        (OwnedFd::from(socket), 10),
        (OwnedFd::from(err_file), 12),
    ];
    let out = run(&["--deserialize", "11"], fds, false);
    assert!(out.status.success(), "{out:?}");
    assert!(
        status_bytes(status_read).is_empty(),
        "a successful exec reports nothing"
    );

    let text = read_file(&out_path);
    let pid: i32 = section(&text, "pid")[0].parse().unwrap();
    assert_eq!(section(&text, "umask"), ["0027"]);
    assert_eq!(section(&text, "cwd"), [workdir.display().to_string()]);

    let links = fd_links(&section(&text, "fds"));
    assert_eq!(
        links,
        [
            (0, "/dev/null".to_string()),
            (1, out_path.display().to_string()),
            (2, err_path.display().to_string()),
            (3, socket_link),
        ],
        "{text}"
    );
    let flags = fdinfo_flags(&section(&text, "fdinfo3"));
    assert_eq!(flags & libc::O_NONBLOCK as u32, 0, "fd 3 flags {flags:o}");
    assert_eq!(flags & libc::O_CLOEXEC as u32, 0, "fd 3 flags {flags:o}");

    let limits = section(&text, "limits");
    let nofile = limits
        .iter()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        nofile.split_whitespace().collect::<Vec<_>>()[3..5],
        ["100", "100"]
    );
    assert_eq!(read_file(&cgroup.join("cgroup.procs")), pid.to_string());

    let env = section(&text, "env");
    assert!(
        env.contains(&format!("LISTEN_PID={pid}").as_str()),
        "{env:?}"
    );
    assert!(env.contains(&"GREETING=hello world"), "{env:?}");
    assert_eq!(read_file(&err_path), "to-stderr\n");
}

#[test]
fn signals_and_session_are_reset() {
    // The service itself reads its status: a shell would show its own signal handling.
    let dir = TempDir::new("signals");
    let out_path = dir.path("out");
    let (status_read, status_write) = pipe();
    let mut s = state("/bin/cat", &["cat", "/proc/self/status"]);
    s.stdio[1] = Stdio::Path(out_path.display().to_string());
    let out = run(
        &["--deserialize", "4"],
        vec![(encoded(&s), 4), (status_write, 3)],
        true,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(status_bytes(status_read).is_empty());
    let text = read_file(&out_path);
    let status: Vec<&str> = text.lines().collect();
    for field in ["SigBlk:", "SigIgn:", "SigCgt:"] {
        assert_eq!(status_field(&status, field), "0000000000000000", "{field}");
    }
    assert_eq!(
        status_field(&status, "NSsid:"),
        status_field(&status, "Pid:"),
        "own session"
    );
}

#[test]
fn colliding_fds_are_placed_right() {
    let dir = TempDir::new("collide");
    let a = File::create(dir.path("a")).unwrap();
    let b = File::create(dir.path("b")).unwrap();
    let (status_read, status_write) = pipe();
    let mut s = state("/bin/sh", &["sh", "-c", REPORT_SCRIPT]);
    // The sources of fds 3 and 4 are each other's targets; b is also stdout; the status pipe
    // sits on the executor's own stdout.
    s.fds = vec![4, 3];
    s.stdio = [Stdio::Null, Stdio::Fd(3), Stdio::Inherit];
    s.status_fd = 1;
    let fds = vec![
        (encoded(&s), 5),
        (status_write, 1),
        (OwnedFd::from(a), 4),
        (OwnedFd::from(b), 3),
    ];
    let out = run(&["--deserialize", "5"], fds, false);
    assert!(out.status.success(), "{out:?}");
    assert!(status_bytes(status_read).is_empty());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");

    let text = read_file(&dir.path("b"));
    let links = fd_links(&section(&text, "fds"));
    let a = dir.path("a").display().to_string();
    let b = dir.path("b").display().to_string();
    assert_eq!(links.len(), 5, "{links:?}");
    assert_eq!(links[0], (0, "/dev/null".to_string()));
    assert_eq!(links[1], (1, b.clone()));
    assert!(links[2].1.starts_with("pipe:"), "{links:?}");
    assert_eq!(links[3], (3, a));
    assert_eq!(links[4], (4, b));
}

#[test]
fn missing_program_is_an_exec_failure() {
    let (status_read, status_write) = pipe();
    let s = state("/nonexistent/steward-test-program", &["x"]);
    let out = run(
        &["--deserialize", "4"],
        vec![(encoded(&s), 4), (status_write, 3)],
        false,
    );
    assert_eq!(out.status.code(), Some(203), "{out:?}");
    assert_eq!(
        report(status_read),
        StatusReport {
            step: Step::Exec,
            errno: libc::ENOENT
        }
    );
}

#[test]
fn missing_directory_is_a_chdir_failure() {
    let (status_read, status_write) = pipe();
    let (_, socket) = pipe();
    let mut s = state("/bin/true", &["true"]);
    s.working_directory = "/nonexistent/steward-test-dir".into();
    // The status pipe sits where the socket goes, so the report travels on a moved copy.
    s.fds = vec![7];
    s.status_fd = 3;
    let fds = vec![(encoded(&s), 8), (status_write, 3), (socket, 7)];
    let out = run(&["--deserialize", "8"], fds, false);
    assert_eq!(out.status.code(), Some(200), "{out:?}");
    assert_eq!(
        report(status_read),
        StatusReport {
            step: Step::Chdir,
            errno: libc::ENOENT
        }
    );
}

#[test]
fn missing_socket_is_an_fds_failure() {
    let (status_read, status_write) = pipe();
    let mut s = state("/bin/true", &["true"]);
    s.fds = vec![40];
    let out = run(
        &["--deserialize", "4"],
        vec![(encoded(&s), 4), (status_write, 3)],
        false,
    );
    assert_eq!(out.status.code(), Some(202), "{out:?}");
    assert_eq!(
        report(status_read),
        StatusReport {
            step: Step::Fds,
            errno: libc::EBADF
        }
    );
}

#[test]
#[ignore = "needs root"]
fn credentials_are_switched() {
    let dir = TempDir::new("creds");
    let out_path = dir.path("out");
    let (status_read, status_write) = pipe();
    let mut s = state("/bin/sh", &["sh", "-c", REPORT_SCRIPT]);
    s.stdio = [
        Stdio::Null,
        Stdio::Path(out_path.display().to_string()),
        Stdio::Null,
    ];
    s.credentials = Some(Credentials {
        uid: 65534,
        gid: 65534,
        groups: vec![65534, 100],
    });
    let out = run(
        &["--deserialize", "4"],
        vec![(encoded(&s), 4), (status_write, 3)],
        false,
    );
    assert!(out.status.success(), "{out:?}");
    assert!(status_bytes(status_read).is_empty());
    let text = read_file(&out_path);
    let status = section(&text, "status");
    assert_eq!(
        status_field(&status, "Uid:")
            .split_whitespace()
            .collect::<Vec<_>>()[..3],
        ["65534"; 3]
    );
    assert_eq!(
        status_field(&status, "Gid:")
            .split_whitespace()
            .collect::<Vec<_>>()[..3],
        ["65534"; 3]
    );
    assert_eq!(status_field(&status, "Groups:"), "100 65534");
}

#[test]
fn one_path_for_all_three_is_shared() {
    let dir = TempDir::new("shared");
    let out_path = dir.path("out");
    let out = out_path.display().to_string();
    let (status_read, status_write) = pipe();
    let script = "echo one; ls -l /proc/$$/fd; echo two >&2";
    let mut s = state("/bin/sh", &["sh", "-c", script]);
    s.stdio = [
        Stdio::Path(out.clone()),
        Stdio::Path(out.clone()),
        Stdio::Path(out.clone()),
    ];
    let run = run(
        &["--deserialize", "4"],
        vec![(encoded(&s), 4), (status_write, 3)],
        false,
    );
    assert!(run.status.success(), "{run:?}");
    assert!(status_bytes(status_read).is_empty());
    let text = read_file(&out_path);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"one"));
    assert_eq!(lines.last(), Some(&"two"));
    assert_eq!(
        fd_links(&lines),
        [(0, out.clone()), (1, out.clone()), (2, out.clone())]
    );
    // Created before the service's umask applies; the inherited 022 leaves 0640 as it is.
    let mode = std::fs::metadata(&out_path).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o640
    );
}
