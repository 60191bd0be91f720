//! `take()` in a real process. It edits the environment, which only a single-threaded process
//! may do, so this test binary (no libtest harness, no threads) runs itself again as a child
//! with the variables set and the sockets placed at fds 3, 4, … the way a manager does at exec,
//! and compares what the child reports.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Set in the child: which case it runs.
const CASE: &str = "TAKEOVER_TEST_CASE";
const VARIABLES: [&str; 4] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "SOCKET_TAKEOVER",
];

fn main() {
    if let Ok(case) = std::env::var(CASE) {
        child(&case);
        return;
    }
    let cases: [(&str, fn()); 10] = [
        ("systemd_form", systemd_form),
        ("map_form", map_form),
        ("flag_alone", flag_alone),
        ("accept_mode_connection", accept_mode_connection),
        ("nothing_set", nothing_set),
        ("another_pid_changes_nothing", another_pid_changes_nothing),
        ("any_open_fd_is_taken", any_open_fd_is_taken),
        ("not_open_changes_nothing", not_open_changes_nothing),
        ("bad_names_change_nothing", bad_names_change_nothing),
        ("threads_are_refused", threads_are_refused),
    ];
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut ran = 0;
    for (name, case) in cases {
        if filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str())) {
            print!("test {name} ... ");
            std::io::stdout().flush().unwrap();
            case();
            println!("ok");
            ran += 1;
        }
    }
    let _ = std::fs::remove_dir_all(temp_dir());
    println!("\ntest result: ok. {ran} passed");
}

// ---- the child ----

/// Runs `take()` and prints the outcome, the state of fds 3 and 4, and the variables left.
fn child(case: &str) {
    let pid = std::process::id().to_string();
    if std::env::var("LISTEN_PID").as_deref() == Ok("self") {
        // SAFETY: this is the single-threaded main of a test without harness; no other thread
        // exists that could read the environment meanwhile.
        unsafe { std::env::set_var("LISTEN_PID", &pid) };
    }
    let _thread = (case == "threads").then(|| std::thread::spawn(std::thread::park));

    match takeover::take() {
        Ok(mut sockets) => {
            println!("ok");
            if sockets.names().any(|n| n == "connection") {
                let mut conn = sockets.stream("connection").unwrap();
                writeln!(conn, "hello from the instance").unwrap();
            }
            for (name, fd) in sockets.into_fds() {
                let fd = fd.as_raw_fd();
                println!("socket {name} fd={fd} cloexec={}", cloexec(fd).unwrap());
            }
        }
        Err(e) => {
            println!("error: {}", e.to_string().replace(&pid, "PID"));
            for fd in [3, 4] {
                if let Some(c) = cloexec(fd) {
                    println!("fd {fd} cloexec={c}");
                }
            }
        }
    }
    for name in VARIABLES.iter().chain(&["KEEP"]) {
        if let Ok(value) = std::env::var(name) {
            let value = if value == pid { "PID".into() } else { value };
            println!("env {name}={value}");
        }
    }
}

/// FD_CLOEXEC of `fd` (1 or 0) from /proc/self/fdinfo, or `None` when it is not open.
fn cloexec(fd: RawFd) -> Option<u8> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
    let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
    let flags = u32::from_str_radix(flags.trim(), 8).ok()?;
    Some(u8::from(flags & libc::O_CLOEXEC as u32 != 0))
}

// ---- the parent ----

/// Runs the child for `case` with `vars` set (`LISTEN_PID=self` means the child's pid), `fds`
/// placed at 3, 4, … (CLOEXEC clear) and the fds `closed` closed; returns its stdout.
fn run(case: &str, vars: &[(&str, &str)], fds: &[RawFd], closed: &'static [RawFd]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    for name in VARIABLES {
        cmd.env_remove(name);
    }
    cmd.env(CASE, case)
        .env("KEEP", "kept")
        .envs(vars.iter().copied());
    let fds = fds.to_vec();
    assert!(fds.len() <= 8);
    // SAFETY: the closure runs in the child between fork and exec. It allocates nothing and
    // only calls fcntl, dup2 and close, which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // First move every source out of the way (a source may sit at a target number),
            // then place them; dup2 leaves the targets without CLOEXEC, as a manager does.
            let mut high = [0; 8];
            for (i, &fd) in fds.iter().enumerate() {
                high[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
                if high[i] == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, &fd) in high[..fds.len()].iter().enumerate() {
                if libc::dup2(fd, 3 + i as RawFd) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for &fd in closed {
                libc::close(fd);
            }
            Ok(())
        })
    };
    let out = cmd.stderr(Stdio::inherit()).output().unwrap();
    assert!(out.status.success(), "child {case}: {:?}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

fn expect(got: &str, want: &[&str]) {
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got, want);
}

/// Where the unix sockets of this run are made.
fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("takeover-test-{}", std::process::id()))
}

/// A listening unix socket whose path holds a ':', as a map key may.
fn unix_listener() -> (UnixListener, std::path::PathBuf) {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("odd:name.sock");
    let _ = std::fs::remove_file(&path);
    (UnixListener::bind(&path).unwrap(), path)
}

fn raw(fds: &[&dyn AsRawFd]) -> Vec<RawFd> {
    fds.iter().map(|f| f.as_raw_fd()).collect()
}

fn systemd_form() {
    let (unix, _) = unix_listener();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let vars = [
        ("LISTEN_PID", "self"),
        ("LISTEN_FDS", "2"),
        ("LISTEN_FDNAMES", "echo:web"),
        ("SOCKET_TAKEOVER", "1"),
    ];
    let out = run("systemd", &vars, &raw(&[&unix, &tcp]), &[]);
    expect(
        &out,
        &[
            "ok",
            "socket echo fd=3 cloexec=1",
            "socket web fd=4 cloexec=1",
            "env KEEP=kept",
        ],
    );
}

fn map_form() {
    let (unix, path) = unix_listener();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let map = format!("{}:3;web:4;", path.display());
    let out = run(
        "map",
        &[("SOCKET_TAKEOVER", &map)],
        &raw(&[&unix, &tcp]),
        &[],
    );
    let first = format!("socket {} fd=3 cloexec=1", path.display());
    expect(
        &out,
        &["ok", &first, "socket web fd=4 cloexec=1", "env KEEP=kept"],
    );
}

fn flag_alone() {
    let (unix, _) = unix_listener();
    let out = run("flag", &[("SOCKET_TAKEOVER", "1")], &raw(&[&unix]), &[]);
    expect(
        &out,
        &["ok", "socket unknown fd=3 cloexec=1", "env KEEP=kept"],
    );
}

fn accept_mode_connection() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let vars = [
        ("LISTEN_PID", "self"),
        ("LISTEN_FDS", "1"),
        ("LISTEN_FDNAMES", "connection"),
        ("SOCKET_TAKEOVER", "1"),
    ];
    let out = run("accept", &vars, &raw(&[&theirs]), &[]);
    drop(theirs);
    expect(&out, &["ok", "env KEEP=kept"]);
    let mut line = String::new();
    BufReader::new(ours).read_line(&mut line).unwrap();
    assert_eq!(line, "hello from the instance\n");
}

fn nothing_set() {
    let out = run("nothing", &[], &[], &[]);
    expect(&out, &["ok", "env KEEP=kept"]);
}

fn another_pid_changes_nothing() {
    let (unix, _) = unix_listener();
    let vars = [("LISTEN_PID", "1"), ("LISTEN_FDS", "1")];
    let out = run("foreign", &vars, &raw(&[&unix]), &[4]);
    expect(
        &out,
        &[
            "error: LISTEN_PID=1 but this is pid PID: the sockets were passed to another process",
            "fd 3 cloexec=0",
            "env LISTEN_PID=1",
            "env LISTEN_FDS=1",
            "env KEEP=kept",
        ],
    );
}

/// What a manager's fd store hands back need not be a socket: a file is taken like one (the
/// typed getters refuse it; the lib tests check that).
fn any_open_fd_is_taken() {
    let (unix, _) = unix_listener();
    let file = File::open(std::env::current_exe().unwrap()).unwrap();
    let vars = [
        ("LISTEN_PID", "self"),
        ("LISTEN_FDS", "2"),
        ("LISTEN_FDNAMES", "web:stored"),
    ];
    let out = run("any-fd", &vars, &raw(&[&unix, &file]), &[]);
    expect(
        &out,
        &[
            "ok",
            "socket web fd=3 cloexec=1",
            "socket stored fd=4 cloexec=1",
            "env KEEP=kept",
        ],
    );
}

fn not_open_changes_nothing() {
    let (unix, _) = unix_listener();
    let vars = [
        ("LISTEN_PID", "self"),
        ("LISTEN_FDS", "2"),
        ("LISTEN_FDNAMES", "a:b"),
    ];
    let out = run("not-open", &vars, &raw(&[&unix]), &[4]);
    expect(
        &out,
        &[
            "error: fd 4 (\"b\") was announced but is not open",
            "fd 3 cloexec=0",
            "env LISTEN_PID=PID",
            "env LISTEN_FDS=2",
            "env LISTEN_FDNAMES=a:b",
            "env KEEP=kept",
        ],
    );
}

fn bad_names_change_nothing() {
    let (unix, _) = unix_listener();
    let vars = [
        ("LISTEN_FDS", "1"),
        ("LISTEN_FDNAMES", "a:b"),
        ("SOCKET_TAKEOVER", "1"),
    ];
    let out = run("bad-names", &vars, &raw(&[&unix]), &[4]);
    expect(
        &out,
        &[
            "error: LISTEN_FDNAMES has 2 name(s) for 1 passed fd(s)",
            "fd 3 cloexec=0",
            "env LISTEN_FDS=1",
            "env LISTEN_FDNAMES=a:b",
            "env SOCKET_TAKEOVER=1",
            "env KEEP=kept",
        ],
    );
}

fn threads_are_refused() {
    let (unix, _) = unix_listener();
    let vars = [("LISTEN_PID", "self"), ("LISTEN_FDS", "1")];
    let out = run("threads", &vars, &raw(&[&unix]), &[4]);
    expect(
        &out,
        &[
            "error: takeover::take() must run before the service starts threads (2 are running): it removes variables from the environment",
            "fd 3 cloexec=0",
            "env LISTEN_PID=PID",
            "env LISTEN_FDS=1",
            "env KEEP=kept",
        ],
    );
}
