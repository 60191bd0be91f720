//! The executor tests of executor.rs, each spawn made the way the manager arms the idle
//! executor of a lazy service: `steward-executor --pooled FD` started ahead, handed the spawn
//! state, its fds and the sockets to watch (`Start::OnReadable`), then a client connects. The
//! executor reports it, accepts nothing and goes on: the service must see exactly what a fresh
//! executor leaves it.

/// Every spawn goes through an executor armed for a lazy service.
const VIA: Via = Via::Woken;

include!("executor/common.rs");

/// An executor armed with `state` on two new listeners in `dir`, `a` and `b`, at the numbers
/// 90 and 91, which the state places at 3 and 4 (its status fd made the pool socket's, 41):
/// the listeners, our end of the pool socket, and the executor.
fn woken(
    dir: &TempDir,
    mut state: SpawnState,
) -> ([UnixListener; 2], UnixDatagram, std::process::Child) {
    let listeners = [dir.path("a"), dir.path("b")].map(|p| UnixListener::bind(p).unwrap());
    state.fds = vec![90, 91];
    let start_at = steward_protocol::Start::OnReadable {
        listeners: vec![90, 91],
    };
    let fds = [listeners[0].as_fd(), listeners[1].as_fd()];
    let (ours, child) = handed(state, &start_at, &[90, 91], &fds);
    (listeners, ours, child)
}

#[test]
fn a_client_on_any_socket_wakes_the_executor_and_the_service_accepts_it() {
    let dir = TempDir::new("woken-second");
    let script =
        "import socket\nc, _ = socket.socket(fileno=4).accept()\nc.sendall(b'served\\n')\n";
    let (_listeners, ours, mut child) =
        woken(&dir, state("/usr/bin/python3", &["python3", "-c", script]));
    let mut client = std::os::unix::net::UnixStream::connect(dir.path("b")).unwrap();
    let mut buf = [0u8; 16];
    let n = ours.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], &steward_protocol::READABLE);
    let mut line = String::new();
    client.read_to_string(&mut line).unwrap();
    assert_eq!(line, "served\n");
    assert!(child.wait().unwrap().success());
}

#[test]
fn an_executor_armed_for_a_lazy_service_disarmed_exits_quietly_and_accepts_nothing() {
    let dir = TempDir::new("woken-disarm");
    let (listeners, ours, child) = woken(&dir, state("/bin/true", &["true"]));
    disarm_quietly(&ours, child);
    // The sockets are the manager's again: a client now waits in the backlog.
    let _client = std::os::unix::net::UnixStream::connect(dir.path("a")).unwrap();
    listeners[0].set_nonblocking(true).unwrap();
    assert!(listeners[0].accept().is_ok());
}
