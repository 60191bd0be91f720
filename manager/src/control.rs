//! The control socket: accepts `stewardctl` connections, checks who is calling, reads one
//! framed request per connection and writes the replies, never blocking the loop on a slow or
//! broken client.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::SocketFlags;
use steward_protocol::control::{MAX_FRAME, Reply, Request, decode_frame, encode_frame};

/// A client that has not sent a whole request by then is dropped.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// A follower whose unread output grows past this is dropped rather than buffered forever.
const MAX_PENDING_OUTPUT: usize = 1 << 20;

/// One connection.
#[derive(Debug)]
pub struct Client {
    /// Non-blocking, close-on-exec.
    pub fd: OwnedFd,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Until a request is complete: when to give up on it.
    deadline: Option<Instant>,
    /// `logs -f`: the service whose new lines it receives.
    pub follow: Option<crate::registry::UnitId>,
    /// Close once the output is written.
    closing: bool,
    /// Whether EPOLLOUT is in its interest set.
    pub wants_write: bool,
    /// Neither root nor our user: its request is answered "permission denied".
    refused: bool,
}

/// What reading from a client produced.
pub enum Input {
    /// Nothing complete yet.
    Pending,
    /// A request.
    Request(Request),
    /// A request from a client that may not control steward.
    Refused,
    /// The client went away or sent something we refuse; close it, with this log line if any.
    Close(Option<String>),
}

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("control socket {}: {problem}", path.display())]
pub struct ControlError {
    path: PathBuf,
    #[source]
    problem: crate::sockets::Problem,
}

/// Whether the listener takes connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// In the epoll set, accepting.
    Open,
    /// Out of the epoll set until then: accepting kept failing (out of fds, say), and a
    /// listener that stays readable would spin the loop.
    Paused {
        /// When it goes back into the set.
        until: Instant,
    },
    /// Back in the set after a pause, but no connection was accepted since (so a new failure
    /// is not logged again).
    Recovering,
}

/// The listening socket and its clients.
pub struct Control {
    /// The listener: non-blocking, close-on-exec.
    pub listener: OwnedFd,
    path: PathBuf,
    /// Open connections by id.
    pub clients: HashMap<u64, Client>,
    next_id: u64,
    own_uid: u32,
    /// Whether the listener takes connections.
    pub admission: Admission,
}

impl Control {
    /// Creates the socket at `path`, mode 0600, its parent directory if missing.
    pub fn open(path: &Path) -> Result<Control, ControlError> {
        let listener =
            crate::sockets::listen_unix(path, 0o600, SocketFlags::NONBLOCK).map_err(|problem| {
                ControlError {
                    path: path.to_path_buf(),
                    problem,
                }
            })?;
        Ok(Control {
            listener,
            path: path.to_path_buf(),
            clients: HashMap::new(),
            next_id: 0,
            own_uid: rustix::process::geteuid().as_raw(),
            admission: Admission::Open,
        })
    }

    /// The listener a previous manager handed over at a `reexec`.
    pub fn adopt(listener: OwnedFd, path: &Path) -> Control {
        Control {
            listener,
            path: path.to_path_buf(),
            clients: HashMap::new(),
            next_id: 0,
            own_uid: rustix::process::geteuid().as_raw(),
            admission: Admission::Open,
        }
    }

    /// A connection a previous manager handed over: its request was read, its reply is ours
    /// to send.
    pub fn adopt_client(&mut self, fd: OwnedFd) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.clients.insert(
            id,
            Client {
                fd,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                deadline: None,
                follow: None,
                closing: false,
                wants_write: false,
                refused: false,
            },
        );
        id
    }

    /// Removes the socket file (at shutdown).
    pub fn remove_file(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Accepts one waiting connection: `Ok(Some((id, refused_uid)))`; a client that is neither
    /// root nor our own user is answered "permission denied" and closed (its uid returned for
    /// the log).
    pub fn accept(&mut self) -> io::Result<Option<(u64, Option<u32>)>> {
        let fd = match rustix::net::accept_with(
            &self.listener,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        ) {
            Ok(fd) => fd,
            Err(Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let (_, uid, _) = crate::sys::peer_credentials(fd.as_fd())?;
        let id = self.next_id;
        self.next_id += 1;
        let mut client = Client {
            fd,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            deadline: Some(Instant::now() + REQUEST_DEADLINE),
            follow: None,
            closing: false,
            wants_write: false,
            refused: false,
        };
        let refused = (uid != 0 && uid != self.own_uid).then_some(uid);
        // Answered once its request is in: closing at once would break the client's write
        // before it could read why.
        client.refused = refused.is_some();
        self.clients.insert(id, client);
        Ok(Some((id, refused)))
    }

    /// Reads what the client sent.
    pub fn read(&mut self, id: u64) -> Input {
        let Some(client) = self.clients.get_mut(&id) else {
            return Input::Pending;
        };
        if client.deadline.is_none() {
            // Its request was read; anything more is ignored, but an end of file means the
            // client is gone (a follower that hung up).
            let mut sink = [0u8; 512];
            return match rustix::io::read(&client.fd, &mut sink) {
                Ok(0) => Input::Close(None),
                Ok(_) | Err(Errno::AGAIN) | Err(Errno::INTR) => Input::Pending,
                Err(_) => Input::Close(None),
            };
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match rustix::io::read(&client.fd, &mut buf) {
                Ok(0) => {
                    let why = (!client.inbuf.is_empty())
                        .then(|| "a client hung up in the middle of a request".to_string());
                    return Input::Close(why);
                }
                Ok(n) => {
                    client.inbuf.extend_from_slice(&buf[..n]);
                    if client.inbuf.len() > MAX_FRAME + 4 {
                        return Input::Close(Some("a client sent an oversized request".into()));
                    }
                    match decode_frame::<Request>(&client.inbuf) {
                        Ok(Some((request, _))) => {
                            client.deadline = None;
                            client.inbuf = Vec::new();
                            if client.refused {
                                return Input::Refused;
                            }
                            return Input::Request(request);
                        }
                        Ok(None) => continue,
                        Err(e) => {
                            return Input::Close(Some(format!("a client sent a bad request: {e}")));
                        }
                    }
                }
                Err(Errno::AGAIN) => return Input::Pending,
                Err(Errno::INTR) => continue,
                Err(e) => return Input::Close(Some(format!("reading a client failed: {e}"))),
            }
        }
    }

    /// Queues a reply; `last` closes the connection once it is written.
    pub fn send(&mut self, id: u64, reply: &Reply, last: bool) {
        if let Some(client) = self.clients.get_mut(&id) {
            client.outbuf.extend_from_slice(&encode_frame(reply));
            client.closing |= last;
        }
    }

    /// Writes what it can. Returns false when the client is finished (written and closing, or
    /// broken, or too slow) and must be dropped.
    pub fn flush(&mut self, id: u64) -> bool {
        let Some(client) = self.clients.get_mut(&id) else {
            return false;
        };
        while !client.outbuf.is_empty() {
            match rustix::io::write(&client.fd, &client.outbuf) {
                Ok(n) => {
                    client.outbuf.drain(..n);
                }
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(_) => return false,
            }
        }
        if client.outbuf.len() > MAX_PENDING_OUTPUT {
            return false;
        }
        !(client.closing && client.outbuf.is_empty())
    }

    /// Whether the client has output waiting (so EPOLLOUT is wanted).
    pub fn has_output(&self, id: u64) -> bool {
        self.clients.get(&id).is_some_and(|c| !c.outbuf.is_empty())
    }

    /// The earliest request deadline, or the end of a pause.
    pub fn next_deadline(&self) -> Option<Instant> {
        let paused = match self.admission {
            Admission::Paused { until } => Some(until),
            Admission::Open | Admission::Recovering => None,
        };
        self.clients
            .values()
            .filter_map(|c| c.deadline)
            .chain(paused)
            .min()
    }

    /// Clients whose request did not arrive in time.
    pub fn expired(&self, now: Instant) -> Vec<u64> {
        self.clients
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The fd of a client, for epoll.
    pub fn fd(&self, id: u64) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.clients.get(&id).map(|c| c.fd.as_fd())
    }
}
