//! steward-probe: the service the integration tests run. It reports what a service process sees,
//! serves a lazy socket, plays an accept-mode instance, or connects to a socket as a client.
//!
//! ```text
//! steward-probe report FILE
//! steward-probe serve [--exit-after-each] [--crash-after N] [--report FILE]
//! steward-probe connection
//! steward-probe connect PATH OUT
//! ```
//!
//! `#![no_main]`: Rust's own `main` wrapper sets SIGPIPE to ignored before any code runs, which
//! would hide the disposition the process was started with. With a C `main` the report sees the
//! process exactly as the executor left it (std still gets the arguments from glibc).
#![no_main]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;

const USAGE: &str = "usage: steward-probe report FILE
       steward-probe serve [--exit-after-each] [--crash-after N] [--report FILE]
       steward-probe connection
       steward-probe connect PATH OUT
       steward-probe touch MIB
       steward-probe fork N";

#[unsafe(no_mangle)]
extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // Read first of all: the cgroup the process was in when its own code began.
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["report", file] => write_report(file, &cgroup),
        ["touch", mib] => touch(mib),
        ["fork", n] => fork(n),
        ["serve", options @ ..] => serve(options),
        ["connection"] => connection(),
        ["connect", path, out] => connect(path, out),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("steward-probe: {e}");
            1
        }
    }
}

/// Allocates MIB mebibytes and touches every page, so they are really charged to the cgroup.
fn touch(mib: &str) -> Result<(), String> {
    let mib: usize = mib.parse().map_err(|_| format!("bad size {mib:?}"))?;
    let mut memory = vec![0u8; mib << 20];
    for page in memory.chunks_mut(4096) {
        page[0] = 1;
    }
    // Read the pages back, so the writes cannot be optimised away.
    let touched = memory.iter().step_by(4096).filter(|&&b| b == 1).count();
    println!("touched {mib} MiB ({touched} pages)");
    Ok(())
}

/// Forks up to N children that wait; prints how many forks succeeded, then ends them.
fn fork(n: &str) -> Result<(), String> {
    let n: usize = n.parse().map_err(|_| format!("bad count {n:?}"))?;
    let mut children = Vec::new();
    for _ in 0..n {
        match sys::fork_paused() {
            Some(pid) => children.push(pid),
            None => break,
        }
    }
    println!("forked {} of {n}", children.len());
    for pid in children {
        sys::kill_and_reap(pid);
    }
    Ok(())
}

/// Writes the report to FILE.tmp, then renames it to FILE: a reader never sees half of it.
fn write_report(file: &str, cgroup: &str) -> Result<(), String> {
    let mut text = report()?;
    for line in cgroup.lines() {
        let _ = writeln!(text, "cgroup={line}");
    }
    let tmp = format!("{file}.tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("writing {tmp}: {e}"))?;
    std::fs::rename(&tmp, file).map_err(|e| format!("renaming {tmp} to {file}: {e}"))
}

/// The raw state of this process: ids, every open fd, the signal mask and ignored signals, and
/// the environment. Built before any file is opened, so only what the process inherited shows.
fn report() -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(out, "pid={}", sys::pid());
    let _ = writeln!(out, "ppid={}", sys::ppid());
    let _ = writeln!(out, "sid={}", sys::sid());
    for fd in open_fds()? {
        let Some(flags) = sys::fd_flags(fd) else {
            continue;
        };
        let status = sys::status_flags(fd).unwrap_or(0);
        let kind = sys::file_type(fd).map_or("other", |t| match t {
            libc::S_IFSOCK => "socket",
            libc::S_IFREG => "file",
            libc::S_IFIFO => "pipe",
            libc::S_IFCHR => "char",
            _ => "other",
        });
        let listening = match sys::accepts_connections(fd) {
            Some(true) if kind == "socket" => "1",
            Some(false) if kind == "socket" => "0",
            _ => "-",
        };
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_else(|e| format!("?({e})"));
        let _ = writeln!(
            out,
            "fd={fd} cloexec={} nonblock={} kind={kind} listening={listening} target={target}",
            u8::from(flags & libc::FD_CLOEXEC != 0),
            u8::from(status & libc::O_NONBLOCK != 0),
        );
    }
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status: {e}"))?;
    for (field, item) in [("SigBlk:", "sigmask"), ("SigIgn:", "sigign")] {
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .ok_or_else(|| format!("no {field} in /proc/self/status"))?;
        let _ = writeln!(out, "{item}={}", value.trim());
    }
    let mut env: Vec<(String, String)> = std::env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    env.sort();
    for (key, value) in env {
        let _ = writeln!(out, "env={key}={value}");
    }
    Ok(out)
}

/// The open fds, in order. Listing /proc/self/fd opens a directory fd that shows in the
/// listing; it is closed again when the listing ends, so it is the one no longer open.
fn open_fds() -> Result<Vec<RawFd>, String> {
    let mut fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("listing /proc/self/fd: {e}"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.retain(|&fd| sys::fd_flags(fd).is_some());
    fds.sort_unstable();
    Ok(fds)
}

/// `serve`: answers each connection on the first socket with `pid PID`, then closes it.
fn serve(options: &[&str]) -> Result<(), String> {
    let mut exit_after_each = false;
    let mut crash_after = None;
    let mut report_file = None;
    let mut options = options.iter();
    while let Some(&option) = options.next() {
        match option {
            "--exit-after-each" => exit_after_each = true,
            "--crash-after" => {
                let n = options.next().ok_or("--crash-after needs a number")?;
                let n: u64 = n
                    .parse()
                    .map_err(|_| format!("--crash-after {n:?}: not a number"))?;
                crash_after = Some(n);
            }
            "--report" => report_file = Some(*options.next().ok_or("--report needs a file")?),
            other => return Err(format!("serve: unknown option {other:?}\n{USAGE}")),
        }
    }
    if let Some(file) = report_file {
        write_report(file, "")?;
    }
    // A client may hang up before reading its answer: that is its business, not a reason to die.
    sys::ignore_sigpipe();
    let mut sockets = takeover::take().map_err(|e| e.to_string())?;
    let name = sockets
        .names()
        .next()
        .ok_or("serve: no socket was passed")?
        .to_string();
    let listener = sockets.listener(&name).map_err(|e| e.to_string())?;
    let answer = format!("pid {}\n", sys::pid());
    let mut handled = 0;
    loop {
        let mut conn = match listener.accept() {
            Ok(conn) => conn,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
            Err(e) => return Err(format!("accept: {e}")),
        };
        let _ = conn.write_all(answer.as_bytes());
        drop(conn);
        handled += 1;
        if exit_after_each {
            return Ok(());
        }
        if crash_after == Some(handled) {
            std::process::abort();
        }
    }
}

/// `connection`: an accept-mode instance. Says who it serves, then waits for the client to
/// close.
fn connection() -> Result<(), String> {
    sys::ignore_sigpipe();
    let mut sockets = takeover::take().map_err(|e| e.to_string())?;
    let mut conn = sockets.stream("connection").map_err(|e| e.to_string())?;
    let var = |name| std::env::var(name).unwrap_or_default();
    let remote = if std::env::var_os("REMOTE_ADDR").is_some() {
        format!("{}:{}", var("REMOTE_ADDR"), var("REMOTE_PORT"))
    } else {
        format!(
            "pid {} uid {} gid {}",
            var("REMOTE_PID"),
            var("REMOTE_UID"),
            var("REMOTE_GID")
        )
    };
    // One write: the client reads the whole line at once.
    let line = format!("instance pid {} remote {remote}\n", sys::pid());
    conn.write_all(line.as_bytes())
        .map_err(|e| format!("writing to the connection: {e}"))?;
    let mut buf = [0; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the connection: {e}")),
        }
    }
}

/// `connect PATH OUT`: one line from the unix socket PATH into OUT. No retry: the socket must
/// exist already.
fn connect(path: &str, out: &str) -> Result<(), String> {
    let stream = UnixStream::connect(path).map_err(|e| format!("connecting to {path}: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("reading from {path}: {e}"))?;
    if line.is_empty() {
        return Err(format!("{path} closed without a line"));
    }
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, line).map_err(|e| format!("writing {tmp}: {e}"))?;
    std::fs::rename(&tmp, out).map_err(|e| format!("renaming {tmp} to {out}: {e}"))
}

/// The probe's libc calls, on raw fd numbers it does not own (it only looks).
mod sys {
    use std::mem::MaybeUninit;
    use std::os::fd::RawFd;

    pub fn pid() -> libc::pid_t {
        // SAFETY: getpid takes no arguments and cannot fail.
        unsafe { libc::getpid() }
    }

    pub fn ppid() -> libc::pid_t {
        // SAFETY: getppid takes no arguments and cannot fail.
        unsafe { libc::getppid() }
    }

    pub fn sid() -> libc::pid_t {
        // SAFETY: getsid(0) asks about this process and touches no memory.
        unsafe { libc::getsid(0) }
    }

    /// The fd flags (F_GETFD), or `None` when `fd` is not open.
    pub fn fd_flags(fd: RawFd) -> Option<libc::c_int> {
        // SAFETY: F_GETFD reads the fd's flags and touches no memory; any number is allowed.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        (flags != -1).then_some(flags)
    }

    /// The file status flags (F_GETFL).
    pub fn status_flags(fd: RawFd) -> Option<libc::c_int> {
        // SAFETY: F_GETFL reads the open file's flags and touches no memory.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        (flags != -1).then_some(flags)
    }

    /// The S_IFMT bits of the fd's file.
    pub fn file_type(fd: RawFd) -> Option<libc::mode_t> {
        let mut stat = MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes one `struct stat` into the valid buffer it is given.
        if unsafe { libc::fstat(fd, stat.as_mut_ptr()) } == -1 {
            return None;
        }
        // SAFETY: fstat succeeded, so the struct is filled in.
        Some(unsafe { stat.assume_init() }.st_mode & libc::S_IFMT)
    }

    /// SO_ACCEPTCONN, or `None` when `fd` is not a socket.
    pub fn accepts_connections(fd: RawFd) -> Option<bool> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are valid for writes and `len` is the size of `value`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ACCEPTCONN,
                (&raw mut value).cast(),
                &mut len,
            )
        };
        (rc == 0).then_some(value != 0)
    }

    /// Ignores SIGPIPE, so a write to a closed connection fails with EPIPE instead of killing.
    /// Forks a child that only waits to be killed; `None` when the fork fails.
    pub fn fork_paused() -> Option<libc::pid_t> {
        // SAFETY: the child calls only pause(2) and _exit(2), both async-signal-safe, so
        // forking from this (single-threaded) process is sound.
        unsafe {
            match libc::fork() {
                -1 => None,
                0 => {
                    libc::pause();
                    libc::_exit(0)
                }
                pid => Some(pid),
            }
        }
    }

    /// SIGKILLs a child and reaps it.
    pub fn kill_and_reap(pid: libc::pid_t) {
        // SAFETY: kill and waitpid take plain integers and a null status pointer.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }

    pub fn ignore_sigpipe() {
        // SAFETY: installs SIG_IGN, no handler code runs; the process has a single thread.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    }
}
