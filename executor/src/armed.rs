//! An armed executor (accept mode, [`steward_protocol::Start::OnConnection`]): it holds its
//! instance's spawn state and the listening socket, and accepts the connection itself. A client
//! then wakes one process, which execs the service, instead of the manager and then an
//! executor. A lazy service's armed executor ([`steward_protocol::Start::OnReadable`]) holds
//! its main process's spawn state and the service's sockets, and execs the service when a
//! client is waiting on one of them, for the service to accept. A keep-alive service's
//! ([`steward_protocol::Start::OnWord`]) takes every step of its next main process and execs
//! it on the manager's word.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use rustix::fd::RawFd;
use steward_protocol::{ACCEPTED, READABLE, REMOTE_PLACEHOLDER};

use crate::sys::{self, Errno};

/// What the wait ended with.
pub enum Woken {
    /// A connection, now at the listener's number; the manager has been told.
    Accepted(Peer),
    /// The manager shut the pool socket: this executor is not wanted.
    Disarmed,
}

/// Who is at the other end, as the manager would have asked.
pub enum Peer {
    Inet(core::net::SocketAddr),
    Unix { pid: i32, uid: u32, gid: u32 },
    Unknown,
}

/// Waits until a client waits on one of `listeners`, or for a word (end of file) from the
/// manager on `pool`; true for a client, once the manager has been told.
pub fn wait_readable(listeners: &[RawFd], pool: RawFd) -> Result<bool, Errno> {
    let set = sys::ArmedWait::new(listeners, pool)?;
    loop {
        let woken = set.wait()?;
        if woken.pool {
            return Ok(false);
        }
        if woken.listener {
            // From here the manager counts us as the service's main process.
            return Ok(sys::send(pool, &READABLE).is_ok());
        }
    }
}

/// Waits on `pool` for the manager's word to exec ([`steward_protocol::GO`]): true when it
/// came, false at end of file (disarmed) or if the socket fails, which the manager sees as an
/// executor gone before its restart.
pub fn wait_word(pool: RawFd) -> bool {
    let mut word = [0u8; steward_protocol::GO.len()];
    loop {
        match sys::read(pool, &mut word) {
            Ok(n) => return n > 0,
            Err(Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
}

/// Waits for a connection on `listener` or a word (end of file) from the manager on `pool`.
pub fn wait(listener: RawFd, pool: RawFd) -> Result<Woken, Errno> {
    let set = sys::ArmedWait::new(&[listener], pool)?;
    loop {
        let woken = set.wait()?;
        // The manager first: once it has disarmed us, a connection is its own to accept.
        if woken.pool {
            return Ok(Woken::Disarmed);
        }
        if !woken.listener {
            continue;
        }
        let (connection, inet) = match sys::accept(listener) {
            Ok(accepted) => accepted,
            // Another armed executor, or the manager, was first; or the client gave up.
            Err(Errno::EAGAIN | Errno::ECONNABORTED | Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        };
        // Told before anything else: from here the manager counts us as an instance. If it is
        // gone, the connection closes with us (at its next start it accepts again).
        if sys::send(pool, &ACCEPTED).is_err() {
            return Ok(Woken::Disarmed);
        }
        let peer = match inet {
            Some(addr) => Peer::Inet(addr),
            None => match sys::peer_credentials(connection) {
                Ok((pid, uid, gid)) => Peer::Unix { pid, uid, gid },
                Err(_) => Peer::Unknown,
            },
        };
        // The connection takes the listener's number, which the spawn state names it by;
        // close-on-exec as every fd received from the manager is, until placement.
        sys::move_cloexec(connection, listener)?;
        return Ok(Woken::Accepted(peer));
    }
}

/// Puts `peer` into the `REMOTE_*` variables the manager left as placeholders; those the peer
/// has no value for go.
pub fn fill_remote(env: &mut Vec<String>, peer: &Peer) {
    let value = |key: &str| -> Option<String> {
        match (peer, key) {
            (Peer::Inet(addr), "REMOTE_ADDR") => Some(addr.ip().to_string()),
            (Peer::Inet(addr), "REMOTE_PORT") => Some(addr.port().to_string()),
            // Pid 0: the peer is outside our pid namespace, and has no pid we could name.
            (Peer::Unix { pid, .. }, "REMOTE_PID") => (*pid != 0).then(|| pid.to_string()),
            (Peer::Unix { uid, .. }, "REMOTE_UID") => Some(uid.to_string()),
            (Peer::Unix { gid, .. }, "REMOTE_GID") => Some(gid.to_string()),
            _ => None,
        }
    };
    env.retain_mut(|var| {
        let Some((key, REMOTE_PLACEHOLDER)) = var.split_once('=') else {
            return true;
        };
        match value(key) {
            Some(v) => {
                *var = format!("{key}={v}");
                true
            }
            None => false,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn placeholders_take_the_peer_or_go() {
        let mut env = strings(&[
            "PATH=/bin",
            "REMOTE_PID=\0",
            "REMOTE_UID=\0",
            "REMOTE_GID=\0",
            "REMOTE_ADDR=set by the config",
        ]);
        fill_remote(
            &mut env,
            &Peer::Unix {
                pid: 0,
                uid: 1000,
                gid: 100,
            },
        );
        assert_eq!(
            env,
            strings(&[
                "PATH=/bin",
                "REMOTE_UID=1000",
                "REMOTE_GID=100",
                "REMOTE_ADDR=set by the config"
            ])
        );
        let mut env = strings(&["REMOTE_ADDR=\0", "REMOTE_PORT=\0"]);
        fill_remote(&mut env, &Peer::Inet("[::1]:8080".parse().unwrap()));
        assert_eq!(env, strings(&["REMOTE_ADDR=::1", "REMOTE_PORT=8080"]));
        let mut env = strings(&["REMOTE_ADDR=\0", "A=1"]);
        fill_remote(&mut env, &Peer::Unknown);
        assert_eq!(env, strings(&["A=1"]));
    }
}
