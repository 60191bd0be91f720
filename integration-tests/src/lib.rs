//! Helpers for tests that run the real `steward` binaries against the real kernel: a running
//! steward whose log can be waited on, temp-dir configs, and process checks through `/proc`.
#![deny(missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long any wait in a test may take before it fails. Generous: a loaded CI machine is slow,
/// and a wait returns as soon as its condition holds.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The directory holding the built binaries: `STEWARD_BIN_DIR`, else the profile directory
/// this test executable was built into (`target/debug/deps/..`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STEWARD_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/PROFILE/deps")
        .to_path_buf()
}

/// The path of a built binary; fails with a hint when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries with `make build` (or run the tests with `make test`)",
        path.display()
    );
    path
}

/// A temporary directory for one test: its config, pid files, copies of binaries.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("steward-test-")
        .tempdir()
        .expect("temp dir")
}

/// A temporary directory every user may enter (0755, under /tmp rather than `TMPDIR`, which may
/// be private), for what a test runs as another user.
pub fn shared_temp_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("steward-test-")
        .tempdir_in("/tmp")
        .expect("temp dir in /tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod 0755");
    dir
}

/// Copies of the built binaries `names` in a [`shared_temp_dir`], for a test that runs them as
/// another user (`nobody`): the build lies in the checkout, which that user may not be able to
/// enter (CI may clone it under a 0700 directory). A copied `steward` runs the
/// `steward-executor` copied beside it.
pub fn shared_bins(names: &[&str]) -> tempfile::TempDir {
    let dir = shared_temp_dir();
    for name in names {
        // By cp, not std::fs::copy: a write fd of ours would be inherited by whatever another
        // test thread forks at that moment, and executing the copy would fail (ETXTBSY) until
        // that child execs. cp's fd is in cp alone.
        let (status, _, err) = run(Command::new("cp").arg(bin(name)).arg(dir.path()));
        assert!(status.success(), "copying {name}: {err}");
        // Executable by all whatever the umask was at build or copy time.
        std::fs::set_permissions(
            dir.path().join(name),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod 0755");
    }
    dir
}

/// The log lines a steward wrote so far, and a condvar signalled on each new one.
#[derive(Default)]
struct Log {
    lines: Mutex<(Vec<String>, bool)>,
    changed: Condvar,
}

/// A running `steward`, with its stderr collected line by line.
pub struct Steward {
    child: Child,
    log: Arc<Log>,
    /// The directory the config was written to.
    pub dir: tempfile::TempDir,
}

impl Steward {
    /// Writes `config` (with `@DIR@` replaced by the test's temp dir) to `steward.toml` and
    /// starts `steward` on it.
    pub fn start(config: &str) -> Steward {
        let dir = temp_dir();
        let path = dir.path().join("steward.toml");
        let text = config.replace("@DIR@", dir.path().to_str().expect("utf-8 temp dir"));
        std::fs::write(&path, text).expect("write config");
        Steward::start_at(&path, dir)
    }

    /// Starts `steward` on the config file or directory `config` the test made in `dir`, with
    /// its control socket there too.
    pub fn start_at(config: &Path, dir: tempfile::TempDir) -> Steward {
        Steward::spawn(Steward::command(config, dir.path()), dir)
    }

    /// The `steward --config CONFIG --control DIR/control` command line, for a test that
    /// needs to adjust it (limits, signal dispositions) before it runs.
    pub fn command(config: &Path, dir: &Path) -> Command {
        Steward::command_under(&[], &bin("steward"), config, dir)
    }

    /// The same command line for the steward binary `steward` (the built one, or a copy of
    /// it), run by `wrapper`: a program and its arguments (`["unshare", "--pid", …]`), which
    /// ends by executing steward. An empty `wrapper` runs steward itself.
    pub fn command_under(wrapper: &[&str], steward: &Path, config: &Path, dir: &Path) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(steward);
                cmd
            }
            None => Command::new(steward),
        };
        cmd.arg("--config")
            .arg(config)
            .arg("--control")
            .arg(dir.join("control"));
        cmd
    }

    /// Starts `cmd` (a steward command line, possibly wrapped in another program) and collects
    /// its stderr.
    pub fn spawn(mut cmd: Command, dir: tempfile::TempDir) -> Steward {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn_fresh(&mut cmd);
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Log::default());
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if std::env::var_os("STEWARD_TEST_ECHO").is_some() {
                    eprintln!("| {line}");
                }
                sink.lines.lock().unwrap().0.push(line);
                sink.changed.notify_all();
            }
            sink.lines.lock().unwrap().1 = true;
            sink.changed.notify_all();
        });
        Steward { child, log, dir }
    }

    /// The control socket of a steward started with [`Steward::start`].
    pub fn control(&self) -> std::path::PathBuf {
        self.dir.path().join("control")
    }

    /// The pid of the steward process.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every line logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lines.lock().unwrap().0.clone()
    }

    /// How many lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log
            .lines
            .lock()
            .unwrap()
            .0
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until `n` lines contain `needle`; returns the n-th. Fails the test, showing the
    /// whole log, when that does not happen within [`DEADLINE`].
    pub fn wait_for_nth(&self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + DEADLINE;
        let mut guard = self.log.lines.lock().unwrap();
        // Scans each line once, however many arrive: a flooding service logs thousands.
        let (mut scanned, mut found) = (0, 0);
        loop {
            while scanned < guard.0.len() {
                if guard.0[scanned].contains(needle) {
                    found += 1;
                    if found == n {
                        return guard.0[scanned].clone();
                    }
                }
                scanned += 1;
            }
            let now = Instant::now();
            if now >= deadline || guard.1 {
                let log = guard.0.join("\n");
                drop(guard);
                panic!(
                    "waited for {n} line(s) containing {needle:?}; steward {}; its log:\n{log}",
                    if now >= deadline {
                        "did not write them in time"
                    } else {
                        "closed its stderr"
                    },
                );
            }
            guard = self
                .log
                .changed
                .wait_timeout(guard, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits for a line containing `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_nth(needle, 1)
    }

    /// Sends a signal to steward.
    pub fn signal(&self, signal: i32) {
        send_signal(self.pid(), signal).expect("signal steward");
    }

    /// Waits for steward to exit (within [`DEADLINE`]) and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread see the end of stderr, so `lines` is complete.
                let mut guard = self.log.lines.lock().unwrap();
                while !guard.1 && Instant::now() < deadline {
                    guard = self
                        .log
                        .changed
                        .wait_timeout(guard, Duration::from_millis(50))
                        .unwrap()
                        .0;
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "steward did not exit; its log:\n{}",
                self.lines().join("\n")
            );
            // Polling a child's exit has no fd to wait on here; poll at a short interval.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs `stewardctl` against this steward (once it serves); returns (exit code, stdout,
    /// stderr).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        // Logged once every socket, the control socket included, listens.
        self.wait_for("version");
        ctl_at(&self.control(), args)
    }

    /// `stewardctl --json status`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let (code, out, err) = self.ctl(&["--json", "status"]);
        assert_eq!(code, 0, "status failed: {err}");
        json(&out)
    }

    /// The service's entry in `status --json`.
    pub fn service(&self, name: &str) -> serde_json::Value {
        let status = self.status();
        status["services"]
            .as_array()
            .expect("a services array")
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    }

    /// Waits until the service is in `state`; returns its entry.
    pub fn wait_state(&self, name: &str, state: &str) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        wait_until(&format!("{name} is {state}"), || {
            last = self.service(name);
            last["state"] == state
        });
        last
    }

    /// Waits until service `name` is running after `restarts` automatic restarts; returns its
    /// main process.
    pub fn wait_running_after(&self, name: &str, restarts: u64) -> i32 {
        let mut pid = 0;
        wait_until(
            &format!("{name} running after {restarts} restart(s)"),
            || {
                let s = self.service(name);
                pid = s["pid"].as_i64().unwrap_or(0) as i32;
                s["state"] == "running" && s["restarts"] == restarts && pid != 0
            },
        );
        pid
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait_exit()
    }
}

impl Drop for Steward {
    /// An orderly shutdown, so steward stops its services (a SIGKILLed steward would leave them
    /// running, reparented to init); SIGKILL only if it does not exit in time.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = send_signal(self.pid(), libc::SIGTERM);
            let deadline = Instant::now() + DEADLINE;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `cmd`, retrying while the kernel says ETXTBSY. A test that has just copied a binary
/// can be refused that way: another test thread forking at that moment holds a copy of the
/// copy's write fd until its child execs (the classic fork/exec race). It passes in moments.
pub fn spawn_fresh(cmd: &mut Command) -> Child {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match cmd.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("spawning {cmd:?}: {e}"),
        }
    }
}

/// The children of `pid` (as this process's pid namespace sees them).
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The children of `pid` that are idle executors (`steward-executor --pooled FD`).
pub fn idle_executors(pid: i32) -> Vec<i32> {
    children(pid)
        .into_iter()
        .filter(|child| {
            std::fs::read(format!("/proc/{child}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|&b| b == 0).any(|arg| arg == b"--pooled"))
        })
        .collect()
}

/// The anonymous memory `pid` has resident (RssAnon), in KiB: its heap, stack and anonymous
/// mappings, what grows if it buffers what it is sent. Not VmRSS: the manager drops the code
/// pages start-up touched, and maps back from the page cache whatever code a test then makes it
/// run, which is no growth of its own.
pub fn anon_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Whether the idle executor `executor` is armed: it waits in an epoll set, which an
/// executor waiting for its spawn state has not made.
pub fn is_armed(executor: i32) -> bool {
    std::fs::read_dir(format!("/proc/{executor}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy().contains("eventpoll"))
        })
}

/// kill(2).
pub fn send_signal(pid: i32, signal: i32) -> std::io::Result<()> {
    // SAFETY: kill takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The state letter of `pid` in `/proc/PID/stat` (`Z` for a zombie waiting to be reaped), if
/// the process is there.
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name, which may itself contain spaces.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Whether `pid` is a live process (not gone, not a zombie waiting to be reaped).
pub fn alive(pid: i32) -> bool {
    process_state(pid).is_some_and(|state| state != 'Z' && state != 'X')
}

/// Waits until `cond` holds, checking every few milliseconds; fails with `what` after
/// [`DEADLINE`].
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until `done` holds of what `probe` returns, probing every few milliseconds, and
/// returns that value; after [`DEADLINE`], fails with `what` and the last value probed.
pub fn wait_for_value<T: std::fmt::Debug>(
    what: &str,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let value = probe();
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; last: {value:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The open fds of `pid`, by number, each with what it names (`/proc/PID/fd/N`'s link).
pub fn fd_table(pid: i32) -> Vec<(String, String)> {
    let mut fds: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect();
    fds.sort();
    fds
}

/// Reads the pids a test service appended to `file`, one per line.
pub fn read_pids(file: &Path) -> Vec<i32> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The pid in a `started (pid N)` log line.
pub fn started_pid(line: &str) -> i32 {
    line.rsplit_once("(pid ")
        .and_then(|(_, rest)| rest.trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// Runs a binary to completion and returns (status, stdout, stderr).
pub fn run(cmd: &mut Command) -> (ExitStatus, String, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("run command");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `stewardctl --control CONTROL ARGS`; returns (exit code, stdout, stderr).
pub fn ctl_at(control: &Path, args: &[&str]) -> (i32, String, String) {
    let (status, out, err) = run(Command::new(bin("stewardctl"))
        .arg("--control")
        .arg(control)
        .args(args));
    (status.code().unwrap_or(-1), out, err)
}

/// Where a client's exchange with a service went wrong.
#[derive(Debug)]
pub enum ClientError {
    /// connect(2) failed: nothing listens there, or the socket is gone.
    Connect(std::io::Error),
    /// Writing the request failed.
    Write(std::io::Error),
    /// Reading failed, or the read timeout passed (see [`ClientError::timed_out`]).
    Read(std::io::Error),
    /// The service closed the connection without writing a line.
    Closed,
}

impl ClientError {
    /// Whether the read timeout passed: the service kept the connection open and said nothing.
    pub fn timed_out(&self) -> bool {
        matches!(self, ClientError::Read(e)
            if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(e) => write!(f, "connect: {e}"),
            ClientError::Write(e) => write!(f, "write: {e}"),
            ClientError::Read(e) => write!(f, "read: {e}"),
            ClientError::Closed => write!(f, "closed without an answer"),
        }
    }
}

/// A connected client socket a test reads from, unix or TCP.
pub trait Connection: Read {
    /// The socket's `SO_RCVTIMEO`.
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()>;
}

impl Connection for UnixStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        UnixStream::set_read_timeout(self, timeout)
    }
}

impl Connection for TcpStream {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        TcpStream::set_read_timeout(self, timeout)
    }
}

/// The first line a service writes on a connection, waiting up to `timeout` for it; returned
/// as read, its newline included.
pub fn read_first_line(
    stream: &mut impl Connection,
    timeout: Duration,
) -> Result<String, ClientError> {
    stream
        .set_read_timeout(Some(timeout))
        .expect("a non-zero read timeout");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(ClientError::Read)?;
    if line.is_empty() {
        return Err(ClientError::Closed);
    }
    Ok(line)
}

/// A client of a service that answers each connection with a line (a probe's greeting):
/// connects to the unix socket `path` and returns [`read_first_line`].
pub fn first_line(path: &Path, timeout: Duration) -> Result<String, ClientError> {
    let mut stream = UnixStream::connect(path).map_err(ClientError::Connect)?;
    read_first_line(&mut stream, timeout)
}

/// A request to the unix socket `path`: connects, writes `request`, and returns everything
/// read until the peer closes, waiting up to `timeout` for each read.
pub fn send_request(
    path: &Path,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let mut stream = UnixStream::connect(path).map_err(ClientError::Connect)?;
    stream
        .set_read_timeout(Some(timeout))
        .expect("a non-zero read timeout");
    stream.write_all(request).map_err(ClientError::Write)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(ClientError::Read)?;
    Ok(answer)
}

/// Parses JSON, failing the test with the text when it is not.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// One request to a service: connect, read its first line, hang up. `Err` says what failed.
pub fn exchange(path: &Path, expect: &str) -> Result<(), String> {
    let line = first_line(path, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    if line.starts_with(expect) {
        Ok(())
    } else {
        Err(format!("unexpected answer {line:?}"))
    }
}

/// What a client thread saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Connections answered as expected.
    pub served: u64,
    /// What went wrong with the others.
    pub failed: Vec<String>,
    /// The longest exchange.
    pub slowest: Duration,
}

/// Clients hammering `path` until `stop`, bounded in count.
pub fn hammer(
    path: PathBuf,
    expect: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    for _ in 0..200_000 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let began = Instant::now();
        match exchange(&path, expect) {
            Ok(()) => tally.served += 1,
            Err(e) => tally.failed.push(e),
        }
        tally.slowest = tally.slowest.max(began.elapsed());
    }
    tally
}

/// Two clients on each of a lazy (`lazy.sock`, answering `pid …`) and an accept service
/// (`inst.sock`, answering `instance pid …`) in `dir`, the load the reexec and recovery tests
/// put a manager under.
pub const LAZY_AND_ACCEPT: [(&str, &str); 4] = [
    ("lazy.sock", "pid "),
    ("lazy.sock", "pid "),
    ("inst.sock", "instance pid "),
    ("inst.sock", "instance pid "),
];

/// Client threads, each [`hammer`]ing its socket until [`Load::stop`].
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<std::thread::JoinHandle<Tally>>,
}

impl Load {
    /// One client per (socket in `dir`, the answer it expects).
    pub fn start(dir: &Path, targets: &[(&str, &'static str)]) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = targets
            .iter()
            .map(|&(socket, expect)| {
                let path = dir.join(socket);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || hammer(path, expect, stop))
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops the clients; what each saw.
    pub fn stop(self) -> Vec<Tally> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.clients
            .into_iter()
            .map(|c| c.join().expect("a client thread"))
            .collect()
    }
}

/// `unshare` making a pid namespace whose init is the program that follows; `--kill-child`
/// takes the namespace down when unshare is killed.
pub const PID_NAMESPACE: &[&str] = &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];
