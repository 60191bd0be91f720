//! The executor tests of executor.rs, each spawn made the way the manager arms an idle executor
//! of an accept service: `steward-executor --pooled FD` started ahead, handed the spawn state,
//! its fds and a listening socket to accept on (`Start::OnConnection`), then a client connects.
//! The executor accepts, reports it, and goes on: the service must see exactly what a fresh
//! executor leaves it.

/// Every spawn goes through an armed executor.
const VIA: Via = Via::Armed;

include!("executor/common.rs");

/// An executor armed on a new listener in `dir` with `state` (its status fd made the pool
/// socket's, 41; the connection at the listener's number, 90, as stdin and stdout): the
/// listener, our end of the pool socket, and the executor.
fn armed(
    dir: &TempDir,
    mut state: SpawnState,
) -> (UnixListener, UnixDatagram, std::process::Child) {
    let listener = UnixListener::bind(dir.path("sock")).unwrap();
    listener.set_nonblocking(true).unwrap();
    state.stdio = [Stdio::Fd(90), Stdio::Fd(90), Stdio::Null];
    let start_at = steward_protocol::Start::OnConnection { listener: 90 };
    let (ours, child) = handed(state, &start_at, &[90], &[listener.as_fd()]);
    (listener, ours, child)
}

#[test]
fn an_armed_executor_reports_the_connection_and_hands_it_on_with_its_peer() {
    let dir = TempDir::new("armed-peer");
    let mut s = state(
        "/bin/sh",
        &["sh", "-c", "echo $REMOTE_UID:$REMOTE_GID:$REMOTE_PID >&0"],
    );
    s.env = vec![
        format!("REMOTE_PID={}", steward_protocol::REMOTE_PLACEHOLDER),
        format!("REMOTE_UID={}", steward_protocol::REMOTE_PLACEHOLDER),
        format!("REMOTE_GID={}", steward_protocol::REMOTE_PLACEHOLDER),
    ];
    let (_listener, ours, mut child) = armed(&dir, s);
    let mut client = std::os::unix::net::UnixStream::connect(dir.path("sock")).unwrap();
    let mut buf = [0u8; 16];
    let n = ours.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &steward_protocol::ACCEPTED);
    let mut line = String::new();
    client.read_to_string(&mut line).unwrap();
    // SAFETY: getuid and getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!(line, format!("{uid}:{gid}:{}\n", std::process::id()));
    assert!(child.wait().unwrap().success());
}

#[test]
fn an_armed_executor_disarmed_exits_quietly_and_leaves_the_connection_to_the_manager() {
    let dir = TempDir::new("armed-disarm");
    let (listener, ours, child) = armed(&dir, state("/bin/true", &["true"]));
    disarm_quietly(&ours, child);
    // A client that comes now is the manager's to accept.
    let _client = std::os::unix::net::UnixStream::connect(dir.path("sock")).unwrap();
    assert!(listener.accept().is_ok());
}

#[test]
fn a_step_an_armed_executor_takes_early_fails_before_any_connection_is_taken() {
    let dir = TempDir::new("armed-cgroup");
    let mut s = state("/bin/true", &["true"]);
    s.cgroups = vec![dir.path("no-such-cgroup").display().to_string()];
    let (listener, ours, child) = armed(&dir, s);
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(Step::Cgroup.exit_code() as i32),
        "{out:?}"
    );
    let mut buf = [0u8; 16];
    let n = ours.recv(&mut buf).unwrap();
    let report = StatusReport::decode(&buf[..n]).unwrap();
    assert_eq!(report.step, Step::Cgroup);
    // The listener was not touched: a client now is still waiting for someone to accept it.
    let _client = std::os::unix::net::UnixStream::connect(dir.path("sock")).unwrap();
    assert!(listener.accept().is_ok());
}
