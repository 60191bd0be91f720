//! The fd store (sd_notify `FDSTORE=1`) through the real binaries: a TCP echo service written
//! with `takeover` keeps 50 client connections across `stewardctl restart`, a SIGKILL and a
//! `stewardctl reexec` of steward; python3-systemd's `notify(fds=…)` stores fds whose peers
//! then hang up; what is over the bound, or sent without `FDSTORE=1`, is closed, and 10,000
//! such messages leave the manager's fd table as it was.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use steward_integration_tests::*;

const PYTHON: &str = "/usr/bin/python3";

/// A port free a moment ago on 127.0.0.1 (the service binds it itself).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stored(s: &Steward, name: &str) -> Vec<String> {
    s.service(name)["stored_fds"]
        .as_array()
        .unwrap_or_else(|| panic!("no stored_fds for {name}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

fn wait_stored(s: &Steward, name: &str, n: usize) {
    let mut last = Vec::new();
    wait_until(&format!("{n} fds in {name}'s store"), || {
        last = stored(s, name);
        last.len() == n
    });
}

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Client {
        let writer = TcpStream::connect(("127.0.0.1", port)).unwrap();
        writer.set_read_timeout(Some(DEADLINE)).unwrap();
        Client {
            reader: BufReader::new(writer.try_clone().unwrap()),
            writer,
        }
    }

    /// Sends a line; returns the pid that answered it.
    fn ask(&mut self, line: &str) -> i64 {
        writeln!(self.writer, "{line}").unwrap();
        let mut reply = String::new();
        self.reader
            .read_line(&mut reply)
            .unwrap_or_else(|e| panic!("no reply to {line:?}: {e}"));
        let (pid, echoed) = reply
            .trim_end()
            .split_once(": ")
            .unwrap_or_else(|| panic!("connection lost before {line:?} (read {reply:?})"));
        assert_eq!(echoed, line);
        pid.parse().unwrap()
    }
}

fn main_pid(s: &Steward, name: &str) -> i64 {
    s.wait_state(name, "running")["pid"].as_i64().unwrap()
}

/// Every client asks once; all must be answered by `pid`.
fn all_answered_by(clients: &mut [Client], pid: i64, round: &str) {
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(
            client.ask(&format!("{round} {i}")),
            pid,
            "client {i}, {round}"
        );
    }
}

#[test]
fn fifty_connections_survive_a_restart_a_sigkill_and_a_reexec() {
    fifty_connections_survive(0);
}

/// The same with an executor armed for each restart: it holds the store as it was when it was
/// armed, so each change to the store arms another, and the restart after the kill finds one
/// with all 51.
#[test]
fn fifty_connections_survive_through_an_executor_armed_for_the_restart() {
    fifty_connections_survive(1);
}

fn fifty_connections_survive(pool: u32) {
    let port = free_port();
    let s = Steward::start(&format!(
        r#"
[service.echo]
exec = ["{}", "127.0.0.1:{port}"]
ready = "notify"
keep_alive = true
restart_delay = "0"
fd_store = 64
executor_pool = {pool}
"#,
        bin("stored-echo").display()
    ));
    let first = main_pid(&s, "echo");
    let mut clients: Vec<Client> = (0..50).map(|_| Client::connect(port)).collect();
    all_answered_by(&mut clients, first, "hello");
    // The listener and the 50 connections.
    wait_stored(&s, "echo", 51);

    // (a) Restarted by hand.
    let (code, _, err) = s.ctl(&["restart", "echo"]);
    assert_eq!(code, 0, "{err}");
    let second = main_pid(&s, "echo");
    assert_ne!(second, first);
    all_answered_by(&mut clients, second, "after the restart");

    // (b) Killed: keep_alive brings it back with the store.
    send_signal(second as i32, libc::SIGKILL).unwrap();
    let mut third = second;
    wait_until("echo respawned", || {
        let now = s.service("echo");
        third = now["pid"].as_i64().unwrap_or(second);
        now["state"] == "running" && third != second
    });
    all_answered_by(&mut clients, third, "after the kill");
    wait_stored(&s, "echo", 51);

    // (c) steward re-executes itself: the store crosses in its state, and the next process
    // gets it from the new manager.
    let (code, out, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(stored(&s, "echo").len(), 51);
    let (code, _, err) = s.ctl(&["restart", "echo"]);
    assert_eq!(code, 0, "{err}");
    let fourth = main_pid(&s, "echo");
    assert_ne!(fourth, third);
    all_answered_by(&mut clients, fourth, "after the reexec");

    // What the new process was handed: the listener and the connections, after no socket.
    let (_, out, _) = s.ctl(&["status", "echo"]);
    assert!(out.contains("fd store: 51 (listener, c-"), "{out}");

    // A client that leaves is taken out of the store (by the service, FDSTOREREMOVE=1).
    drop(clients.pop());
    wait_stored(&s, "echo", 50);
}

/// `stored-echo` on a free port with a store of 8, no `keep_alive`.
fn stored_echo() -> (Steward, u16) {
    let port = free_port();
    let s = Steward::start(&format!(
        r#"
[service.echo]
exec = ["{}", "127.0.0.1:{port}"]
ready = "notify"
fd_store = 8
"#,
        bin("stored-echo").display()
    ));
    (s, port)
}

#[test]
fn stop_empties_the_store_and_the_clients_see_the_end() {
    let (s, port) = stored_echo();
    let pid = main_pid(&s, "echo");
    let mut client = Client::connect(port);
    assert_eq!(client.ask("hi"), pid);
    wait_stored(&s, "echo", 2);
    let (code, _, err) = s.ctl(&["stop", "echo"]);
    assert_eq!(code, 0, "{err}");
    assert!(stored(&s, "echo").is_empty());
    s.wait_for("echo: 2 stored fd(s) closed: the service was stopped");
    // Nobody holds the connection any more.
    let mut rest = String::new();
    assert_eq!(client.reader.read_line(&mut rest).unwrap(), 0, "{rest:?}");
    // Started again, it binds afresh and stores only what it has now.
    let (code, _, err) = s.ctl(&["start", "echo"]);
    assert_eq!(code, 0, "{err}");
    let again = main_pid(&s, "echo");
    let mut back = Client::connect(port);
    assert_eq!(back.ask("back"), again);
    wait_stored(&s, "echo", 2);
}

/// The one thread of `pid` that serves a connection (the process has a main thread and one
/// per connection), and how often it has gone to sleep (`voluntary_ctxt_switches`) if it is
/// asleep now.
fn serving_thread(pid: i64) -> Option<(i64, u64)> {
    let tids: Vec<i64> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&tid| tid != pid)
        .collect();
    let [tid] = tids[..] else { return None };
    if process_state(tid as i32) != Some('S') {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let sleeps = status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?
        .trim()
        .parse()
        .ok()?;
    Some((tid, sleeps))
}

/// A line that comes in pieces is answered once it is whole, also by the next process after a
/// restart, and the service sleeps while it waits for the rest (the socket stays readable while
/// part of a line waits in it, so polling it again would return at once, again and again); a
/// client that hangs up in the middle of a line is let go.
#[test]
fn a_line_sent_in_pieces_is_answered_whole_without_spinning() {
    let (s, port) = stored_echo();
    let pid = main_pid(&s, "echo");
    let mut client = Client::connect(port);
    client.writer.set_nodelay(true).unwrap();
    assert_eq!(client.ask("whole"), pid);
    wait_stored(&s, "echo", 2);

    let mut asleep = None;
    wait_until("the connection's thread asleep", || {
        asleep = serving_thread(pid);
        asleep.is_some()
    });
    let (tid, before) = asleep.unwrap();
    client.writer.write_all(b"pie").unwrap();
    // Woken by the half line, it goes back to sleep until the rest comes; one that polled the
    // socket again and again would never sleep.
    wait_until(
        "the connection's thread asleep again, the half line seen",
        || serving_thread(pid).is_some_and(|(t, sleeps)| t == tid && sleeps > before),
    );
    client.writer.write_all(b"ces\n").unwrap();
    let mut reply = String::new();
    client.reader.read_line(&mut reply).unwrap();
    assert_eq!(reply, format!("{pid}: pieces\n"));

    // Half a line left to the next process.
    client.writer.write_all(b"rest").unwrap();
    let (code, _, err) = s.ctl(&["restart", "echo"]);
    assert_eq!(code, 0, "{err}");
    let next = main_pid(&s, "echo");
    client.writer.write_all(b"arted\n").unwrap();
    reply.clear();
    client.reader.read_line(&mut reply).unwrap();
    assert_eq!(reply, format!("{next}: restarted\n"));

    client.writer.write_all(b"never ends").unwrap();
    client.writer.shutdown(std::net::Shutdown::Write).unwrap();
    // The service takes the connection out of the store, and closes it: with the unread half
    // line still in it, so the kernel resets it.
    wait_stored(&s, "echo", 1);
    reply.clear();
    match client.reader.read_line(&mut reply) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{other:?} ({reply:?})"),
    }
}

/// python3-systemd stores a unix socket, a TCP connection and (with `FDPOLL=0`) one more unix
/// socket; then the peers of all three go away.
const HANGUPS: &str = r#"
import os, socket, struct, time, pathlib
from systemd import daemon
d = pathlib.Path('@DIR@')
(d / ('names.%d' % os.getpid())).write_text(os.environ.get('LISTEN_FDNAMES', ''))
if os.environ.get('LISTEN_FDS'):
    daemon.notify('READY=1')
    time.sleep(1000)
a, b = socket.socketpair()
e, f = socket.socketpair()
server = socket.socket()
server.bind(('127.0.0.1', 0))
server.listen()
c = socket.create_connection(server.getsockname())
t, _ = server.accept()
daemon.notify('FDSTORE=1\nFDNAME=unix', fds=[a.fileno()])
daemon.notify('FDSTORE=1\nFDNAME=tcp', fds=[t.fileno()])
daemon.notify('FDSTORE=1\nFDNAME=kept\nFDPOLL=0', fds=[e.fileno()])
for s in (a, t, e):
    s.close()
daemon.notify('READY=1')
while not (d / 'go').exists():
    time.sleep(0.05)
b.close()
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
c.close()
f.close()
time.sleep(1000)
"#;

#[test]
fn a_stored_fd_whose_peer_closes_or_resets_is_dropped_unless_fdpoll_0() {
    let s = Steward::start(&format!(
        "[service.py]\nexec = [\"{PYTHON}\", \"-c\", {HANGUPS:?}]\nready = \"notify\"\nfd_store = 8\n"
    ));
    let first = main_pid(&s, "py");
    wait_stored(&s, "py", 3);
    assert_eq!(stored(&s, "py"), ["unix", "tcp", "kept"]);
    std::fs::write(s.dir.path().join("go"), "").unwrap();
    s.wait_for(r#"py: stored fd "unix" hung up"#);
    s.wait_for(r#"py: stored fd "tcp" hung up"#);
    wait_stored(&s, "py", 1);
    assert_eq!(stored(&s, "py"), ["kept"]);
    // The next process gets what is left, named, through python3-systemd's own reading.
    let (code, _, err) = s.ctl(&["restart", "py"]);
    assert_eq!(code, 0, "{err}");
    let second = main_pid(&s, "py");
    assert_ne!(second, first);
    let names = std::fs::read_to_string(s.dir.path().join(format!("names.{second}"))).unwrap();
    assert_eq!(names, "kept");
}

/// A lazy service that answers its client with its `LISTEN_FDNAMES`; the first time, it also
/// stores its connection to the test's `peer.sock`, and exits once the test says so.
const LAZY_STORE: &str = r#"
import os, socket, pathlib, time
from systemd import daemon
d = pathlib.Path('@DIR@')
names = os.environ.get('LISTEN_FDNAMES', '')
c, _ = socket.socket(fileno=3).accept()
c.sendall(names.encode() + b'\n')
c.close()
if not (d / 'stored').exists():
    p = socket.socket(socket.AF_UNIX)
    p.connect(str(d / 'peer.sock'))
    daemon.notify('FDSTORE=1\nFDNAME=peer', fds=[p.fileno()])
    (d / 'stored').write_text('')
    while not (d / 'go').exists():
        time.sleep(0.05)
"#;

#[test]
fn a_lazy_service_armed_with_its_store_is_armed_again_when_a_stored_fd_hangs_up() {
    let s = Steward::start(&format!(
        "[service.lz]\nexec = [\"{PYTHON}\", \"-c\", {LAZY_STORE:?}]\nlazy = true\nkeep_alive = true\nfd_store = 4\n\
         [[service.lz.socket]]\npath = \"@DIR@/lz.sock\"\nname = \"lz\"\n"
    ));
    let dir = s.dir.path().to_path_buf();
    let peers = std::os::unix::net::UnixListener::bind(dir.join("peer.sock")).unwrap();
    s.wait_for("lz: listening");
    let first = first_line(&dir.join("lz.sock"), DEADLINE).unwrap();
    assert_eq!(first.trim_end(), "lz");
    let (peer, _) = peers.accept().unwrap();
    wait_stored(&s, "lz", 1);
    std::fs::write(dir.join("go"), "").unwrap();
    s.wait_for("lz: exited with status 0");
    // Idle again, its executor armed with the store as it is now: the peer still there.
    let pid = s.pid();
    wait_until("the lazy service's armed executor", || {
        s.service("lz")["state"] == "listening" && idle_executors(pid).iter().any(|&e| is_armed(e))
    });
    drop(peer);
    s.wait_for(r#"lz: stored fd "peer" hung up"#);
    // The next process has the store without it, not the one its executor was armed with.
    let second = first_line(&dir.join("lz.sock"), DEADLINE).unwrap();
    assert_eq!(second.trim_end(), "lz");
}

/// Sends 10,000 messages with fds of every kind: pipes, memfds, sockets, an epoll fd; every
/// 100th carries 250 of them (the same six files over and over: the store keeps one fd per
/// open file); half say `FDSTORE=1` (the store takes 4, then is full), a tenth of the rest a
/// bad `FDNAME`, the others no `FDSTORE=1` at all.
const FLOOD: &str = r#"
import os, socket, select, time, pathlib
d = pathlib.Path('@DIR@')
path = os.environ['NOTIFY_SOCKET']
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect(path)
s.send(b'READY=1')
while not (d / 'go').exists():
    time.sleep(0.05)
r, w = os.pipe()
m = os.memfd_create('x')
u, v = socket.socketpair()
ep = select.epoll()
kinds = [r, w, m, u.fileno(), v.fileno(), ep.fileno()]
for i in range(10000):
    n = 250 if i % 100 == 0 else 4
    fds = [kinds[(i + k) % len(kinds)] for k in range(n)]
    if i % 2 == 0:
        msg = b'FDSTORE=1\nFDNAME=many'
    elif i % 10 == 1:
        msg = b'FDSTORE=1\nFDNAME=bad:name'
    else:
        msg = b'STATUS=no store %d' % i
    socket.send_fds(s, [msg], fds)
s.send(b'STATUS=flood done')
time.sleep(1000)
"#;

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The manager's fd count once the control connection of the last `stewardctl` call has
/// closed on its side too (that may lag the client's exit): the same in two reads in a row.
fn settled_fds(pid: i32) -> usize {
    let mut last = usize::MAX;
    let mut count = 0;
    wait_until("the manager's fd count to settle", || {
        count = open_fds(pid);
        std::mem::replace(&mut last, count) == count
    });
    count
}

#[test]
fn ten_thousand_messages_with_fds_of_every_kind_leak_nothing() {
    let s = Steward::start(&format!(
        "[service.flood]\nexec = [\"{PYTHON}\", \"-c\", {FLOOD:?}]\nready = \"notify\"\nfd_store = 4\n"
    ));
    main_pid(&s, "flood");
    let before = settled_fds(s.pid());
    std::fs::write(s.dir.path().join("go"), "").unwrap();
    wait_until("the flood sent", || {
        s.service("flood")["status_text"] == "flood done"
    });
    assert_eq!(stored(&s, "flood"), ["many"; 4]);
    // The store's four, and nothing else.
    assert_eq!(settled_fds(s.pid()), before + 4);
    // Each complaint said once.
    assert_eq!(s.count("the fd store is full (fd_store = 4)"), 1);
    assert_eq!(s.count("sent fds without FDSTORE=1; they are closed"), 1);
    assert_eq!(s.count("FDNAME=\"bad:name\" refused"), 1);
    assert_eq!(s.service("flood")["state"], "running");
}

#[test]
fn the_store_crosses_a_panic_recovery() {
    // The fault-injection build, which panics on `stewardctl debug panic`.
    let port = free_port();
    let dir = temp_dir();
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "[service.echo]\nexec = [\"{}\", \"127.0.0.1:{port}\"]\nready = \"notify\"\nfd_store = 16\n",
            bin("stored-echo").display()
        ),
    )
    .unwrap();
    let cmd = Steward::command_under(&[], &bin("steward-faulty"), &config, dir.path());
    let s = Steward::spawn(cmd, dir);
    let first = main_pid(&s, "echo");
    let mut clients: Vec<Client> = (0..10).map(|_| Client::connect(port)).collect();
    all_answered_by(&mut clients, first, "hello");
    wait_stored(&s, "echo", 11);
    let (code, _, err) = s.ctl(&["debug", "panic"]);
    assert_eq!(code, 0, "{err}");
    s.wait_for("recovered from a panic");
    assert_eq!(stored(&s, "echo").len(), 11);
    let (code, _, err) = s.ctl(&["restart", "echo"]);
    assert_eq!(code, 0, "{err}");
    let second = main_pid(&s, "echo");
    assert_ne!(second, first);
    all_answered_by(&mut clients, second, "after the panic");
}
