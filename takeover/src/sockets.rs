//! The taken-over sockets by name, and their checked conversion into std socket types.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::time::Duration;

use crate::{Error, sys};

/// The sockets passed to this process, in passing order, each under its name.
///
/// Names need not be unique (systemd names every socket `unknown` when `LISTEN_FDNAMES` is not
/// set): the getters take the first socket of that name that is still there. A getter that
/// refuses a socket (wrong kind) leaves it in place.
#[derive(Debug, Default)]
pub struct Sockets {
    fds: Vec<(String, OwnedFd)>,
}

impl Sockets {
    pub(crate) fn new(fds: Vec<(String, OwnedFd)>) -> Sockets {
        Sockets { fds }
    }

    /// How many sockets are left.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    /// Whether no socket is left (or none was passed).
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The names of the sockets left, in passing order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fds.iter().map(|(name, _)| name.as_str())
    }

    /// Takes the first socket named `name`, of whatever kind.
    pub fn take_fd(&mut self, name: &str) -> Option<OwnedFd> {
        let i = self.fds.iter().position(|(n, _)| n == name)?;
        Some(self.fds.remove(i).1)
    }

    /// Takes every fd named `name`, of whatever kind, in passing order: what the fd store
    /// hands back under one name (see [`store`](crate::store)).
    pub fn take_all(&mut self, name: &str) -> Vec<OwnedFd> {
        let (taken, kept) = std::mem::take(&mut self.fds)
            .into_iter()
            .partition(|(n, _)| n == name);
        self.fds = kept;
        taken.into_iter().map(|(_, fd)| fd).collect()
    }

    /// All the sockets left, with their names, in passing order.
    pub fn into_fds(self) -> Vec<(String, OwnedFd)> {
        self.fds
    }

    /// Takes a listening unix stream socket.
    pub fn unix_listener(&mut self, name: &str) -> Result<UnixListener, Error> {
        self.take_kind(name, &[Kind::UNIX_LISTENER])
            .map(|(fd, _)| fd.into())
    }

    /// Takes a listening TCP socket (IPv4 or IPv6).
    pub fn tcp_listener(&mut self, name: &str) -> Result<TcpListener, Error> {
        self.take_kind(name, &[Kind::TCP_LISTENER])
            .map(|(fd, _)| fd.into())
    }

    /// Takes a UDP socket (IPv4 or IPv6).
    pub fn udp_socket(&mut self, name: &str) -> Result<UdpSocket, Error> {
        self.take_kind(name, &[Kind::UDP]).map(|(fd, _)| fd.into())
    }

    /// Takes a unix datagram socket.
    pub fn unix_datagram(&mut self, name: &str) -> Result<UnixDatagram, Error> {
        self.take_kind(name, &[Kind::UNIX_DATAGRAM])
            .map(|(fd, _)| fd.into())
    }

    /// Takes a non-listening unix stream socket: an accept-mode instance's `connection`.
    pub fn unix_stream(&mut self, name: &str) -> Result<UnixStream, Error> {
        self.take_kind(name, &[Kind::UNIX_STREAM])
            .map(|(fd, _)| fd.into())
    }

    /// Takes a non-listening TCP socket: an accept-mode instance's `connection`.
    pub fn tcp_stream(&mut self, name: &str) -> Result<TcpStream, Error> {
        self.take_kind(name, &[Kind::TCP_STREAM])
            .map(|(fd, _)| fd.into())
    }

    /// Takes a listening stream socket, unix or TCP: for a server that serves either.
    pub fn listener(&mut self, name: &str) -> Result<Listener, Error> {
        let (fd, kind) = self.take_kind(name, &[Kind::UNIX_LISTENER, Kind::TCP_LISTENER])?;
        Ok(if kind == Kind::UNIX_LISTENER {
            Listener::Unix(fd.into())
        } else {
            Listener::Tcp(fd.into())
        })
    }

    /// Takes a connected stream socket, unix or TCP: an accept-mode instance's `connection`.
    pub fn stream(&mut self, name: &str) -> Result<Stream, Error> {
        let (fd, kind) = self.take_kind(name, &[Kind::UNIX_STREAM, Kind::TCP_STREAM])?;
        Ok(if kind == Kind::UNIX_STREAM {
            Stream::Unix(fd.into())
        } else {
            Stream::Tcp(fd.into())
        })
    }

    /// Takes the first socket named `name` if it is one of `wanted`, and says which.
    fn take_kind(&mut self, name: &str, wanted: &[Kind]) -> Result<(OwnedFd, Kind), Error> {
        let missing = || Error::Missing {
            name: name.to_string(),
        };
        let i = self
            .fds
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(missing)?;
        let fd = self.fds[i].1.as_fd();
        if !sys::is_socket(fd) {
            return Err(Error::NotSocket {
                fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
                name: name.to_string(),
            });
        }
        let shape = Shape::of(name, fd)?;
        let kind = wanted
            .iter()
            .find(|k| k.matches(&shape))
            .ok_or_else(|| Error::WrongKind {
                name: name.to_string(),
                expected: match wanted {
                    [one] => one.what,
                    [first, ..] if first.listening == Some(true) => {
                        "a listening unix or TCP socket"
                    }
                    _ => "a connected unix or TCP socket",
                },
                found: shape.to_string(),
            })?;
        Ok((self.fds.remove(i).1, *kind))
    }
}

/// A listening stream socket, unix or TCP.
#[derive(Debug)]
pub enum Listener {
    /// A unix stream socket.
    Unix(UnixListener),
    /// A TCP socket.
    Tcp(TcpListener),
}

impl Listener {
    /// Waits for a connection and accepts it.
    pub fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| Stream::Tcp(s)),
        }
    }

    /// Waits at most `timeout` for a connection; `None` when none came.
    ///
    /// For a lazy service that exits when idle: a connection that arrives after this returned
    /// `None` stays in the backlog of the socket, which the manager still holds, and starts the
    /// service again. Exiting after `None` loses no client. (The socket is left blocking: its
    /// flags are shared with the manager.)
    pub fn accept_timeout(&self, timeout: Duration) -> io::Result<Option<Stream>> {
        if sys::wait_readable(self.as_fd(), timeout)? {
            self.accept().map(Some)
        } else {
            Ok(None)
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix(l) => l.as_fd(),
            Listener::Tcp(l) => l.as_fd(),
        }
    }
}

/// A connected stream socket, unix or TCP.
#[derive(Debug)]
pub enum Stream {
    /// A unix stream socket.
    Unix(UnixStream),
    /// A TCP socket.
    Tcp(TcpStream),
}

impl Stream {
    /// Another handle to the same connection, e.g. for a reader and a writer.
    pub fn try_clone(&self) -> io::Result<Stream> {
        match self {
            Stream::Unix(s) => s.try_clone().map(Stream::Unix),
            Stream::Tcp(s) => s.try_clone().map(Stream::Tcp),
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// What a socket is, as the kernel tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    family: libc::c_int,
    ty: libc::c_int,
    protocol: libc::c_int,
    listening: bool,
}

impl Shape {
    fn of(name: &str, fd: BorrowedFd<'_>) -> Result<Shape, Error> {
        let option = |option, step| {
            sys::socket_option(fd, option).map_err(|source| Error::Inspect {
                fd: std::os::fd::AsRawFd::as_raw_fd(&fd),
                name: name.to_string(),
                step,
                source,
            })
        };
        Ok(Shape {
            family: option(libc::SO_DOMAIN, "getsockopt(SO_DOMAIN)")?,
            ty: option(libc::SO_TYPE, "getsockopt(SO_TYPE)")?,
            protocol: option(libc::SO_PROTOCOL, "getsockopt(SO_PROTOCOL)")?,
            listening: option(libc::SO_ACCEPTCONN, "getsockopt(SO_ACCEPTCONN)")? != 0,
        })
    }
}

impl fmt::Display for Shape {
    /// E.g. "a listening unix stream socket", "a connected IPv6 TCP socket".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let family = match self.family {
            libc::AF_UNIX => "unix".to_string(),
            libc::AF_INET => "IPv4".to_string(),
            libc::AF_INET6 => "IPv6".to_string(),
            other => format!("family {other}"),
        };
        let inet = matches!(self.family, libc::AF_INET | libc::AF_INET6);
        let ty = match (self.ty, self.protocol) {
            (libc::SOCK_STREAM, libc::IPPROTO_TCP) if inet => "TCP".to_string(),
            (libc::SOCK_DGRAM, libc::IPPROTO_UDP) if inet => "UDP".to_string(),
            (libc::SOCK_STREAM, _) => "stream".to_string(),
            (libc::SOCK_DGRAM, _) => "datagram".to_string(),
            (libc::SOCK_SEQPACKET, _) => "seqpacket".to_string(),
            (other, _) => format!("type {other}"),
        };
        let state = match self.ty {
            libc::SOCK_STREAM | libc::SOCK_SEQPACKET if self.listening => "listening ",
            libc::SOCK_STREAM | libc::SOCK_SEQPACKET => "non-listening ",
            _ => "",
        };
        let article = if state.is_empty() && family.starts_with('I') {
            "an"
        } else {
            "a"
        };
        write!(f, "{article} {state}{family} {ty} socket")
    }
}

/// A kind of socket a getter accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    families: &'static [libc::c_int],
    ty: libc::c_int,
    /// For inet sockets: TCP or UDP (not SCTP, say).
    protocol: Option<libc::c_int>,
    /// Listening or not, for connection-oriented kinds.
    listening: Option<bool>,
    what: &'static str,
}

const INET: &[libc::c_int] = &[libc::AF_INET, libc::AF_INET6];
const UNIX: &[libc::c_int] = &[libc::AF_UNIX];

impl Kind {
    const UNIX_LISTENER: Kind = Kind {
        families: UNIX,
        ty: libc::SOCK_STREAM,
        protocol: None,
        listening: Some(true),
        what: "a listening unix stream socket",
    };
    const TCP_LISTENER: Kind = Kind {
        families: INET,
        ty: libc::SOCK_STREAM,
        protocol: Some(libc::IPPROTO_TCP),
        listening: Some(true),
        what: "a listening TCP socket",
    };
    const UDP: Kind = Kind {
        families: INET,
        ty: libc::SOCK_DGRAM,
        protocol: Some(libc::IPPROTO_UDP),
        listening: None,
        what: "a UDP socket",
    };
    const UNIX_DATAGRAM: Kind = Kind {
        families: UNIX,
        ty: libc::SOCK_DGRAM,
        protocol: None,
        listening: None,
        what: "a unix datagram socket",
    };
    const UNIX_STREAM: Kind = Kind {
        families: UNIX,
        ty: libc::SOCK_STREAM,
        protocol: None,
        listening: Some(false),
        what: "a connected unix stream socket",
    };
    const TCP_STREAM: Kind = Kind {
        families: INET,
        ty: libc::SOCK_STREAM,
        protocol: Some(libc::IPPROTO_TCP),
        listening: Some(false),
        what: "a connected TCP socket",
    };

    fn matches(&self, shape: &Shape) -> bool {
        self.families.contains(&shape.family)
            && self.ty == shape.ty
            && self.protocol.is_none_or(|p| p == shape.protocol)
            && self.listening.is_none_or(|l| l == shape.listening)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A listening unix socket in the abstract namespace: no file, unique per test.
    fn unix_listener() -> UnixListener {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("takeover-test-{}-{n}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name).unwrap();
        UnixListener::bind_addr(&addr).unwrap()
    }

    fn tcp_listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").unwrap()
    }

    fn sockets(fds: Vec<(&str, OwnedFd)>) -> Sockets {
        Sockets::new(fds.into_iter().map(|(n, fd)| (n.to_string(), fd)).collect())
    }

    #[test]
    fn names_len_and_take_fd_in_passing_order() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut s = sockets(vec![
            ("x", a.into()),
            ("y", b.into()),
            ("x", unix_listener().into()),
        ]);
        assert_eq!(s.len(), 3);
        assert_eq!(s.names().collect::<Vec<_>>(), ["x", "y", "x"]);
        // The first "x" is the stream: taking it leaves the listener.
        assert!(s.take_fd("x").is_some());
        assert!(s.unix_listener("x").is_ok());
        assert!(s.take_fd("x").is_none());
        assert_eq!(s.len(), 1);
        let rest = s.into_fds();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].0, "y");
        assert!(Sockets::default().is_empty());
    }

    #[test]
    fn each_getter_takes_its_kind() {
        let (ua, _ub) = UnixStream::pair().unwrap();
        let (da, _db) = UnixDatagram::pair().unwrap();
        let tcp = tcp_listener();
        let conn = TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut s = sockets(vec![
            ("unix-listener", unix_listener().into()),
            ("tcp-listener", tcp.into()),
            ("udp", udp.into()),
            ("unix-datagram", da.into()),
            ("unix-stream", ua.into()),
            ("tcp-stream", conn.into()),
        ]);
        s.unix_listener("unix-listener").unwrap();
        s.tcp_listener("tcp-listener").unwrap();
        s.udp_socket("udp").unwrap();
        s.unix_datagram("unix-datagram").unwrap();
        s.unix_stream("unix-stream").unwrap();
        s.tcp_stream("tcp-stream").unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn ipv6_counts_as_tcp() {
        let Ok(l) = TcpListener::bind("[::1]:0") else {
            return; // no IPv6 on this machine
        };
        let mut s = sockets(vec![("v6", l.into())]);
        assert!(matches!(s.listener("v6"), Ok(Listener::Tcp(_))));
    }

    #[test]
    fn a_wrong_kind_is_refused_and_left_in_place() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut s = sockets(vec![("l", unix_listener().into()), ("c", a.into())]);
        let err = s.tcp_listener("l").unwrap_err();
        match &err {
            Error::WrongKind {
                name,
                expected,
                found,
            } => {
                assert_eq!(name, "l");
                assert_eq!(*expected, "a listening TCP socket");
                assert_eq!(found, "a listening unix stream socket");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "socket \"l\" is a listening unix stream socket, not a listening TCP socket"
        );
        // A listener is not a connection, and a connection is not a listener.
        assert!(matches!(s.unix_stream("l"), Err(Error::WrongKind { .. })));
        assert!(matches!(s.unix_listener("c"), Err(Error::WrongKind { .. })));
        assert!(matches!(s.unix_datagram("c"), Err(Error::WrongKind { .. })));
        assert!(matches!(s.udp_socket("c"), Err(Error::WrongKind { .. })));
        assert!(matches!(s.listener("c"), Err(Error::WrongKind { .. })));
        assert!(matches!(s.stream("l"), Err(Error::WrongKind { .. })));
        assert_eq!(s.len(), 2);
        assert!(s.unix_listener("l").is_ok());
        assert!(s.unix_stream("c").is_ok());
    }

    #[test]
    fn a_missing_name_is_refused() {
        let mut s = sockets(vec![("l", unix_listener().into())]);
        let err = s.tcp_stream("nope").unwrap_err();
        assert!(
            matches!(&err, Error::Missing { name } if name == "nope"),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "no socket named \"nope\" was passed");
    }

    #[test]
    fn shapes_read_well() {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (a, _b) = UnixDatagram::pair().unwrap();
        let (c, _d) = UnixStream::pair().unwrap();
        let shape = |fd: BorrowedFd<'_>| Shape::of("x", fd).unwrap().to_string();
        assert_eq!(shape(udp.as_fd()), "an IPv4 UDP socket");
        assert_eq!(shape(a.as_fd()), "a unix datagram socket");
        assert_eq!(shape(c.as_fd()), "a non-listening unix stream socket");
        assert_eq!(shape(tcp_listener().as_fd()), "a listening IPv4 TCP socket");
    }

    #[test]
    fn listener_and_stream_serve_both_families() {
        let unix = unix_listener();
        let addr = unix.local_addr().unwrap();
        let tcp = tcp_listener();
        let port = tcp.local_addr().unwrap();
        let mut s = sockets(vec![("u", unix.into()), ("t", tcp.into())]);
        let (u, t) = (s.listener("u").unwrap(), s.listener("t").unwrap());
        assert!(matches!(u, Listener::Unix(_)) && matches!(t, Listener::Tcp(_)));

        let mut client = UnixStream::connect_addr(&addr).unwrap();
        let served = u.accept().unwrap();
        let mut s = sockets(vec![(
            "connection",
            served.as_fd().try_clone_to_owned().unwrap(),
        )]);
        let mut conn = s.stream("connection").unwrap();
        conn.write_all(b"hello\n").unwrap();
        let mut line = String::new();
        io::BufReader::new(&mut client)
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "hello\n");

        let _client = TcpStream::connect(port).unwrap();
        let served = t.accept_timeout(Duration::from_secs(20)).unwrap();
        assert!(matches!(served, Some(Stream::Tcp(_))));
    }

    #[test]
    fn accept_timeout_returns_none_when_nobody_connects() {
        let mut s = sockets(vec![("u", unix_listener().into())]);
        let l = s.listener("u").unwrap();
        let got = l.accept_timeout(Duration::from_millis(30)).unwrap();
        assert!(got.is_none());
    }
}
