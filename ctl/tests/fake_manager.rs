//! The real `stewardctl` binary against a fake manager: a unix listener in a thread that reads
//! one request frame and answers with canned replies. Checks the exit statuses, the text and
//! JSON output, and how the client copes with a manager that closes, refuses or is not there.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use steward_protocol::control::{
    ExitStatus, FailureStatus, InstanceStatus, LogLine, Reply, Request, ServiceStatus,
    SocketStatus, Status, Stream, decode_frame, encode_frame,
};

/// A private directory for one test's sockets, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        TempDir::under(&std::env::temp_dir())
    }

    /// One every user may enter (0755, under /tmp rather than `TMPDIR`, which may be private).
    fn shared() -> TempDir {
        let dir = TempDir::under(Path::new("/tmp"));
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn under(parent: &Path) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = parent.join(format!(
            "stewardctl-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A manager that serves one connection with `serve`, which gets the decoded request.
struct Fake {
    dir: TempDir,
    thread: Option<JoinHandle<Option<Request>>>,
}

impl Fake {
    fn with(serve: impl FnOnce(&mut UnixStream, &Request) + Send + 'static) -> Fake {
        let dir = TempDir::new();
        let listener = UnixListener::bind(dir.0.join("control")).unwrap();
        let thread = thread::spawn(move || {
            let (mut stream, _) = listener.accept().ok()?;
            let request = read_request(&mut stream)?;
            serve(&mut stream, &request);
            Some(request)
        });
        Fake {
            dir,
            thread: Some(thread),
        }
    }

    /// Answers with these replies, each frame written in two pieces with a pause between, so
    /// the client has to put them back together; then closes.
    fn replying(replies: Vec<Reply>) -> Fake {
        Fake::with(move |stream, _| {
            for reply in &replies {
                send_in_pieces(stream, reply);
            }
        })
    }

    fn control(&self) -> PathBuf {
        self.dir.0.join("control")
    }

    /// The request the client sent.
    fn request(mut self) -> Request {
        self.thread
            .take()
            .unwrap()
            .join()
            .unwrap()
            .expect("the client sent a request")
    }
}

fn read_request(stream: &mut UnixStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((request, _)) = decode_frame::<Request>(&buf).unwrap() {
            return Some(request);
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn send_in_pieces(stream: &mut UnixStream, reply: &Reply) {
    let frame = encode_frame(reply);
    let (head, tail) = frame.split_at(frame.len() / 2);
    stream.write_all(head).unwrap();
    thread::sleep(Duration::from_millis(20));
    stream.write_all(tail).unwrap();
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn stewardctl(control: &Path, args: &[&str]) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(env!("CARGO_BIN_EXE_stewardctl"))
        .arg("--control")
        .arg(control)
        .args(args)
        .env_remove("STEWARD_CONTROL")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    Run {
        code: status.code().expect("exited, not killed"),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn log(time_us: u64, name: &str, pid: i32, stream: Stream, text: &str) -> LogLine {
    LogLine {
        time_us,
        name: name.into(),
        pid,
        stream,
        text: text.into(),
    }
}

/// `web` running with an accept instance, `once` failed at exec. Their ages are far from a
/// unit boundary, so the second that passes before the client reads the clock does not show.
fn sample_status(log_tail: bool) -> Status {
    Status {
        manager_pid: 4242,
        version: "9.8.7".into(),
        services: vec![
            ServiceStatus {
                name: "web".into(),
                state: "running".into(),
                pid: Some(412),
                since: now() - (3 * 3600 + 5 * 60 + 30),
                restarts: 3,
                memory_bytes: Some(1_258_291),
                sockets: vec![SocketStatus {
                    name: "http".into(),
                    address: "127.0.0.1:8080".into(),
                }],
                instances: vec![InstanceStatus {
                    name: "web@1".into(),
                    pid: 51234,
                }],
                instances_started: Some(7),
                last_exit: None,
                failure: None,
                status_text: None,
                waiting_for: vec![],
                retry_at: None,
                stored_fds: vec![],
                log_tail: if log_tail {
                    vec![log(
                        1_700_000_000_000_001,
                        "web",
                        412,
                        Stream::Stdout,
                        "hello",
                    )]
                } else {
                    vec![]
                },
            },
            ServiceStatus {
                name: "once".into(),
                state: "failed".into(),
                pid: None,
                since: now() - (2 * 86_400 + 3 * 3600 + 1800),
                restarts: 0,
                memory_bytes: None,
                sockets: vec![],
                instances: vec![],
                instances_started: None,
                last_exit: Some(ExitStatus::Code(203)),
                failure: Some(FailureStatus {
                    step: Some("exec".into()),
                    reason: "No such file or directory".into(),
                    status: Some(203),
                }),
                status_text: None,
                waiting_for: vec![],
                retry_at: None,
                stored_fds: vec![],
                log_tail: vec![],
            },
        ],
    }
}

#[test]
fn status_prints_an_aligned_table() {
    let fake = Fake::replying(vec![Reply::Status(sample_status(false))]);
    let run = stewardctl(&fake.control(), &["status"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "NAME   STATE      PID  UPTIME  RESTARTS  MEMORY\n\
         web    running    412   3h05m         3    1.2M\n\
         web@1  -        51234       -         -       -\n\
         once   failed       -   2d03h         0       -\n",
    );
    assert_eq!(run.stderr, "");
    assert_eq!(fake.request(), Request::Status { names: vec![] });
}

#[test]
fn status_of_named_services_adds_their_details() {
    let fake = Fake::replying(vec![Reply::Status(sample_status(true))]);
    let run = stewardctl(&fake.control(), &["status", "web", "once"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let details = run
        .stdout
        .split_once("\n\n")
        .expect("details after the table")
        .1;
    assert_eq!(
        details,
        "web:\n  socket http: 127.0.0.1:8080\n  instances: 7 started, 1 running\n  \
         2023-11-14T22:13:20.000001Z web[412] stdout: hello\n\
         \n\
         once:\n  last exit: exited with status 203\n  \
         last failure: failed at exec: No such file or directory (status 203)\n"
    );
    assert_eq!(
        fake.request(),
        Request::Status {
            names: vec!["web".into(), "once".into()]
        }
    );
}

#[test]
fn status_json_has_the_documented_shape() {
    let status = sample_status(true);
    let (web_since, once_since) = (status.services[0].since, status.services[1].since);
    let fake = Fake::replying(vec![Reply::Status(status)]);
    let run = stewardctl(&fake.control(), &["--json", "status"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        json(&run.stdout),
        serde_json::json!({
            "manager": {"pid": 4242, "version": "9.8.7"},
            "services": [
                {
                    "name": "web", "state": "running", "pid": 412, "since": web_since,
                    "restarts": 3, "memory_bytes": 1_258_291,
                    "sockets": [{"name": "http", "address": "127.0.0.1:8080"}],
                    "instances": [{"name": "web@1", "pid": 51234}], "instances_started": 7,
                    "last_exit": null, "failure": null,
                    "status_text": null, "waiting_for": [], "retry_at": null, "stored_fds": [],
                },
                {
                    "name": "once", "state": "failed", "pid": null, "since": once_since,
                    "restarts": 0, "memory_bytes": null, "sockets": [], "instances": [],
                    "instances_started": null, "last_exit": {"code": 203},
                    "failure": {"step": "exec", "reason": "No such file or directory",
                                "status": 203},
                    "status_text": null, "waiting_for": [], "retry_at": null, "stored_fds": [],
                },
            ],
        })
    );
}

#[test]
fn logs_with_a_count() {
    let lines = vec![
        log(1_709_251_199_999_999, "web", 412, Stream::Stdout, "out 4"),
        log(1_709_251_200_000_000, "web", 412, Stream::Stderr, "err 5"),
    ];
    let fake = Fake::replying(vec![Reply::Logs {
        lines,
        dropped: 17,
        files: vec![],
    }]);
    let run = stewardctl(&fake.control(), &["logs", "web", "-n", "2"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "2024-02-29T23:59:59.999999Z web[412] stdout: out 4\n\
         2024-03-01T00:00:00.000000Z web[412] stderr: err 5\n"
    );
    assert_eq!(run.stderr, "-- 17 earlier lines were dropped --\n");
    assert_eq!(
        fake.request(),
        Request::Logs {
            name: "web".into(),
            lines: Some(2),
            follow: false
        }
    );
}

#[test]
fn logs_json_is_one_object_per_line() {
    let fake = Fake::replying(vec![Reply::Logs {
        lines: vec![
            log(5, "echo@2", 77, Stream::Stdout, "a"),
            log(6, "echo@2", 77, Stream::Stderr, "b \"quoted\""),
        ],
        dropped: 0,
        files: vec![],
    }]);
    let run = stewardctl(&fake.control(), &["logs", "echo", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<serde_json::Value> = run.stdout.lines().map(json).collect();
    assert_eq!(
        lines,
        vec![
            serde_json::json!({"time_us": 5, "name": "echo@2", "pid": 77, "stream": "stdout",
                               "text": "a"}),
            serde_json::json!({"time_us": 6, "name": "echo@2", "pid": 77, "stream": "stderr",
                               "text": "b \"quoted\""}),
        ]
    );
    assert_eq!(run.stderr, "");
}

#[test]
fn logs_follow_prints_lines_as_they_arrive() {
    let (go, wait) = mpsc::channel::<()>();
    let fake = Fake::with(move |stream, _| {
        let first = Reply::Logs {
            lines: vec![log(0, "web", 1, Stream::Stdout, "kept")],
            dropped: 0,
            files: vec![],
        };
        send_in_pieces(stream, &first);
        // The test reads "kept" before it lets the next line come.
        wait.recv().unwrap();
        let later = Reply::Logs {
            lines: vec![log(1_000_000, "web", 1, Stream::Stdout, "new")],
            dropped: 0,
            files: vec![],
        };
        send_in_pieces(stream, &later);
        // Then stay connected until the client is gone.
        let _ = wait.recv();
    });
    let mut child = Command::new(env!("CARGO_BIN_EXE_stewardctl"))
        .arg("--control")
        .arg(fake.control())
        .args(["logs", "web", "-f", "-n", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "1970-01-01T00:00:00.000000Z web[1] stdout: kept\n");
    go.send(()).unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "1970-01-01T00:00:01.000000Z web[1] stdout: new\n");
    // Still following: nothing has ended it.
    assert!(child.try_wait().unwrap().is_none());
    child.kill().unwrap();
    child.wait().unwrap();
    drop(go);
    assert_eq!(
        fake.request(),
        Request::Logs {
            name: "web".into(),
            lines: Some(1),
            follow: true
        }
    );
}

#[test]
fn logs_follow_ends_when_the_manager_closes() {
    let fake = Fake::replying(vec![
        Reply::Logs {
            lines: vec![log(0, "web", 1, Stream::Stdout, "one")],
            dropped: 0,
            files: vec![],
        },
        Reply::Logs {
            lines: vec![log(0, "web", 1, Stream::Stdout, "two")],
            dropped: 0,
            files: vec![],
        },
    ]);
    let run = stewardctl(&fake.control(), &["logs", "-f", "web"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.lines().count(), 2, "{}", run.stdout);
    assert!(run.stdout.ends_with("stdout: two\n"), "{}", run.stdout);
}

#[test]
fn a_refusal_exits_1_with_the_reason() {
    let fake = Fake::replying(vec![Reply::Error {
        message: "unknown service: ghost".into(),
    }]);
    let run = stewardctl(&fake.control(), &["stop", "web", "ghost"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "stewardctl: unknown service: ghost\n");
    assert_eq!(
        fake.request(),
        Request::Stop {
            names: vec!["web".into(), "ghost".into()],
            wait: true,
        }
    );

    // --json changes nothing about failures: the reason on stderr, exit 1.
    let fake = Fake::replying(vec![Reply::Error {
        message: "reboot is only for steward running as PID 1".into(),
    }]);
    let run = stewardctl(&fake.control(), &["--json", "reboot"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("only for steward running as PID 1"),
        "{}",
        run.stderr
    );
}

#[test]
fn done_messages_are_printed() {
    let fake = Fake::replying(vec![Reply::Done {
        message: "web: running\ndb: running".into(),
    }]);
    let run = stewardctl(&fake.control(), &["restart", "--no-block", "web", "db"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "web: running\ndb: running\n");
    assert_eq!(
        fake.request(),
        Request::Restart {
            names: vec!["web".into(), "db".into()],
            wait: false,
        }
    );

    let fake = Fake::replying(vec![Reply::Done {
        message: "shutting down".into(),
    }]);
    let run = stewardctl(&fake.control(), &["shutdown", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        json(&run.stdout),
        serde_json::json!({"ok": true, "message": "shutting down"})
    );
    assert_eq!(fake.request(), Request::Shutdown);

    let fake = Fake::replying(vec![Reply::Done {
        message: String::new(),
    }]);
    let run = stewardctl(&fake.control(), &["start", "web"]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""));
}

#[test]
fn a_broken_config_on_reload_exits_1_with_every_error() {
    let fake = Fake::replying(vec![Reply::ReloadFailed {
        errors: vec![
            "/etc/steward/a.toml:2:9: `exec[0]` must be an absolute path".into(),
            "/etc/steward/b.toml:1:1: unknown key `exe`".into(),
        ],
    }]);
    let run = stewardctl(&fake.control(), &["reload"]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "");
    assert_eq!(
        run.stderr,
        "/etc/steward/a.toml:2:9: `exec[0]` must be an absolute path\n\
         /etc/steward/b.toml:1:1: unknown key `exe`\n\
         stewardctl: the config has 2 errors; nothing was changed\n"
    );
    assert_eq!(fake.request(), Request::Reload);
}

#[test]
fn reload_reports_what_changed() {
    let reloaded = || Reply::Reloaded {
        added: vec!["new".into(), "newer".into()],
        removed: vec![],
        restarted: vec!["changed".into()],
    };
    let fake = Fake::replying(vec![reloaded()]);
    let run = stewardctl(&fake.control(), &["reload"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "added: new, newer\nrestarted: changed\n");

    let fake = Fake::replying(vec![reloaded()]);
    let run = stewardctl(&fake.control(), &["--json", "reload"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        json(&run.stdout),
        serde_json::json!({"added": ["new", "newer"], "removed": [], "restarted": ["changed"]})
    );

    let fake = Fake::replying(vec![Reply::Reloaded {
        added: vec![],
        removed: vec![],
        restarted: vec![],
    }]);
    assert_eq!(
        stewardctl(&fake.control(), &["reload"]).stdout,
        "nothing changed\n"
    );
}

#[test]
fn version_shows_both_sides() {
    let version = || Reply::Version {
        version: "9.8.7".into(),
        protocol: 1,
    };
    let client = env!("CARGO_PKG_VERSION");
    let fake = Fake::replying(vec![version()]);
    let run = stewardctl(&fake.control(), &["version"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        format!("stewardctl {client}\nsteward 9.8.7 (control protocol 1)\n")
    );
    assert_eq!(fake.request(), Request::Version);

    let fake = Fake::replying(vec![version()]);
    let run = stewardctl(&fake.control(), &["version", "--json"]);
    assert_eq!(
        json(&run.stdout),
        serde_json::json!({"client": client, "manager": "9.8.7", "protocol": 1})
    );

    // Without a manager the client still knows its own version.
    let dir = TempDir::new();
    let run = stewardctl(&dir.0.join("control"), &["version"]);
    assert_eq!(run.code, 3);
    assert_eq!(run.stdout, format!("stewardctl {client}\n"));
    assert!(
        run.stderr
            .starts_with("stewardctl: no steward is listening on "),
        "{}",
        run.stderr
    );
}

#[test]
fn a_manager_that_closes_without_replying_is_a_failure() {
    let fake = Fake::replying(vec![]);
    let run = stewardctl(&fake.control(), &["status"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("closed the connection without replying"),
        "{}",
        run.stderr
    );

    // Half a frame, then gone.
    let fake = Fake::with(|stream, _| {
        let frame = encode_frame(&Reply::Done {
            message: "x".into(),
        });
        stream.write_all(&frame[..frame.len() - 1]).unwrap();
    });
    let run = stewardctl(&fake.control(), &["start", "web"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("in the middle of a reply"),
        "{}",
        run.stderr
    );

    // A reply that does not fit the request.
    let fake = Fake::replying(vec![Reply::Done {
        message: "x".into(),
    }]);
    let run = stewardctl(&fake.control(), &["status"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("does not fit the request"),
        "{}",
        run.stderr
    );
}

#[test]
fn no_manager_exits_3() {
    let dir = TempDir::new();
    // Nothing at the path.
    let missing = dir.0.join("control");
    let run = stewardctl(&missing, &["status"]);
    assert_eq!(run.code, 3);
    assert_eq!(
        run.stderr,
        format!(
            "stewardctl: no steward is listening on {}: No such file or directory\n",
            missing.display()
        )
    );
    // A socket file nobody listens on any more (a manager that died).
    let stale = dir.0.join("stale");
    drop(UnixListener::bind(&stale).unwrap());
    let run = stewardctl(&stale, &["status"]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("Connection refused"), "{}", run.stderr);
    // Not a socket at all.
    let file = dir.0.join("file");
    std::fs::write(&file, "").unwrap();
    assert_eq!(stewardctl(&file, &["status"]).code, 3);

    // $STEWARD_CONTROL is where it looks without --control.
    let output = Command::new(env!("CARGO_BIN_EXE_stewardctl"))
        .arg("status")
        .env("STEWARD_CONTROL", &missing)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&*missing.to_string_lossy()));
}

#[test]
fn usage_errors_exit_2_without_connecting() {
    let dir = TempDir::new();
    let nowhere = dir.0.join("control");
    for args in [
        &["frobnicate"][..],
        &[],
        &["--bogus", "status"],
        &["start"],
        &["stop"],
        &["restart"],
        &["logs"],
        &["logs", "web", "-n", "many"],
        &["logs", "web", "-n"],
        &["reload", "extra"],
        &["status", "-z"],
    ] {
        let run = stewardctl(&nowhere, args);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.starts_with("stewardctl: "),
            "{args:?}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("usage: stewardctl"),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(run.stdout, "");
    }
}

#[test]
fn help_and_client_version_need_no_manager() {
    let nowhere = Path::new("/nonexistent/control");
    let run = stewardctl(nowhere, &["--help"]);
    assert_eq!(run.code, 0);
    for command in [
        "status", "start", "stop", "restart", "logs", "reload", "reexec", "shutdown", "poweroff",
        "reboot", "version",
    ] {
        assert!(
            run.stdout.contains(&format!("\n  {command}")),
            "{command}: {}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("--control PATH"));
    assert_eq!(stewardctl(nowhere, &["help"]).stdout, run.stdout);
    assert_eq!(stewardctl(nowhere, &["-h"]).stdout, run.stdout);

    let run = stewardctl(nowhere, &["logs", "--help"]);
    assert_eq!(run.code, 0);
    assert!(run.stdout.contains("-n, --lines N") && run.stdout.contains("-f, --follow"));
    let run = stewardctl(nowhere, &["status", "--help"]);
    assert_eq!(run.code, 0);
    assert!(
        run.stdout
            .starts_with("usage: stewardctl [--control PATH] [--json] status [NAME...]")
    );

    let run = stewardctl(nowhere, &["--version"]);
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout,
        format!("stewardctl {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn permission_denied_on_connect_exits_1() {
    let dir = TempDir::new();
    let control = dir.0.join("control");
    let _listener = UnixListener::bind(&control).unwrap();
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    let output = if root.ok() == Some(0) {
        // Root ignores file modes: connect as nobody to a socket in a root-only directory.
        assert!(
            Path::new("/usr/bin/setpriv").exists(),
            "run as root, this test needs setpriv (util-linux)"
        );
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700)).unwrap();
        // nobody runs a copy: the build lies in the checkout, which nobody may not be able to
        // enter (CI may clone it under a 0700 directory). Copied by cp, not std::fs::copy: a
        // write fd of ours would be inherited by a child another test thread forks meanwhile,
        // and executing the copy would fail (ETXTBSY) until that child execs.
        let bins = TempDir::shared();
        let stewardctl = bins.0.join("stewardctl");
        let copied = Command::new("cp")
            .arg(env!("CARGO_BIN_EXE_stewardctl"))
            .arg(&stewardctl)
            .status()
            .unwrap();
        assert!(copied.success(), "copying stewardctl");
        std::fs::set_permissions(&stewardctl, std::fs::Permissions::from_mode(0o755)).unwrap();
        Command::new("/usr/bin/setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&stewardctl)
            .arg("--control")
            .arg(&control)
            .arg("status")
            .output()
            .unwrap()
    } else {
        std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o000)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_stewardctl"))
            .arg("--control")
            .arg(&control)
            .arg("status")
            .output()
            .unwrap()
    };
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("stewardctl: {}: permission denied\n", control.display())
    );
}

#[test]
fn a_waiting_start_prints_each_service_as_it_settles_and_fails_on_the_first_failure() {
    let fake = Fake::replying(vec![
        Reply::Settled {
            name: "db".into(),
            state: "running".into(),
            failure: None,
        },
        Reply::Settled {
            name: "app".into(),
            state: "failed".into(),
            failure: Some("dependency cache failed".into()),
        },
        Reply::Error {
            message: "app failed: dependency cache failed".into(),
        },
    ]);
    let run = stewardctl(&fake.control(), &["start", "app"]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout,
        "db: running\napp: failed: dependency cache failed\n"
    );
    assert_eq!(
        run.stderr,
        "stewardctl: app failed: dependency cache failed\n"
    );
    assert_eq!(
        fake.request(),
        Request::Start {
            names: vec!["app".into()],
            wait: true,
        }
    );

    let fake = Fake::replying(vec![
        Reply::Settled {
            name: "db".into(),
            state: "running".into(),
            failure: None,
        },
        Reply::Done {
            message: String::new(),
        },
    ]);
    let run = stewardctl(&fake.control(), &["--json", "start", "db"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        json(&run.stdout),
        serde_json::json!({"ok": true, "services": [{"name": "db", "state": "running", "failure": null}]})
    );
}
