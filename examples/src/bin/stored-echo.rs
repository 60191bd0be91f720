//! An example of a service that keeps its connections across its own restarts, through
//! steward's fd store (`fd_store = N` in its config): a TCP echo server that answers each line
//! with `PID: line`, so a client sees which process served it.
//!
//! It binds its listening socket itself the first time (`stored-echo ADDR:PORT`) and stores
//! it; each connection it accepts is stored under a name of its own before it is served, and
//! removed from the store when its client hangs up. A later process (after `stewardctl
//! restart`, a crash, or steward's reexec) gets them all back among its passed fds and goes on
//! serving every client where the last one left off: no connection is dropped.
//!
//! What makes that hold for a client in the middle of a request is the orderly stop: on
//! SIGTERM every thread finishes the line it is answering and reads nothing more (it only ever
//! takes one whole line off a socket, so what is left there is the next process's to read).

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The name the listening socket is stored under.
const LISTENER: &str = "listener";
/// Connections are stored as `c-PORT` (the client's port: unique among live connections from
/// one address, and a valid fd name).
const CLIENT: &str = "c-";

fn main() -> anyhow::Result<()> {
    // Before any thread: take() edits the environment.
    let mut passed = takeover::take()?;
    let stop = sys::stop_on_sigterm()?;
    let listener: TcpListener = match passed.take_all(LISTENER).pop() {
        Some(fd) => fd.into(),
        None => {
            let address = std::env::args()
                .nth(1)
                .ok_or_else(|| anyhow::anyhow!("usage: stored-echo ADDR:PORT"))?;
            let listener = TcpListener::bind(&address)?;
            // A listening socket never hangs up: no need to watch it.
            takeover::store_unpolled(LISTENER, &[listener.as_fd()])?;
            listener
        }
    };
    let stop = std::sync::Arc::new(stop);
    let mut threads = Vec::new();
    let mut resumed = 0;
    for (name, fd) in passed.into_fds() {
        if let Some(port) = name.strip_prefix(CLIENT) {
            let name = format!("{CLIENT}{port}");
            // The process before us may have been killed while it waited for the rest of a
            // line, leaving the socket set to wake only for more than is there.
            let _ = sys::wait_for_more_than(fd.as_fd(), 0);
            let stop = std::sync::Arc::clone(&stop);
            threads.push(std::thread::spawn(move || {
                serve(TcpStream::from(fd), &name, &stop)
            }));
            resumed += 1;
        }
    }
    takeover::notify(&format!(
        "READY=1\nSTATUS=serving, {resumed} connection(s) taken back from the fd store"
    ))?;
    while sys::wait(listener.as_fd(), stop.as_fd()) == sys::Woken::Readable {
        let Ok((client, peer)) = listener.accept() else {
            continue;
        };
        let name = format!("{CLIENT}{}", peer.port());
        // Stored before its first reply: once a client has heard from us, the connection
        // outlives this process.
        takeover::store(&name, &[client.as_fd()])?;
        let stop = std::sync::Arc::clone(&stop);
        threads.push(std::thread::spawn(move || serve(client, &name, &stop)));
    }
    // Stopping: every thread finishes the line it is on.
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

fn serve(client: TcpStream, name: &str, stop: &OwnedFd) {
    let pid = std::process::id();
    let mut waiting = false;
    loop {
        let woken = sys::wait(client.as_fd(), stop.as_fd());
        if woken == sys::Woken::Stop {
            return;
        }
        match sys::read_line(client.as_fd()) {
            Ok(sys::Line::Whole(line)) => {
                if std::mem::take(&mut waiting)
                    && sys::wait_for_more_than(client.as_fd(), 0).is_err()
                {
                    break;
                }
                let reply = format!("{pid}: {}", String::from_utf8_lossy(&line));
                if std::io::Write::write_all(&mut &client, reply.as_bytes()).is_err() {
                    break;
                }
            }
            // Not a whole line yet: the socket is readable until the rest comes, so poll
            // would return at once, again and again; it is told to wake us for more bytes.
            // The rest will never come.
            Ok(sys::Line::Part(_)) if woken == sys::Woken::HungUp => break,
            Ok(sys::Line::Part(got)) => {
                if sys::wait_for_more_than(client.as_fd(), got).is_err() {
                    break;
                }
                waiting = true;
            }
            Err(_) => break,
        }
    }
    // The client hung up: the stored copy would keep its connection half open.
    let _ = takeover::unstore(name);
}

/// The few calls std does not offer: a SIGTERM that wakes every thread, and reading exactly
/// one line.
mod sys {
    #![allow(unsafe_code)]

    use super::*;
    use std::sync::atomic::{AtomicI32, Ordering};

    /// The write end of the stop pipe, for the signal handler.
    static STOP_WRITE: AtomicI32 = AtomicI32::new(-1);

    extern "C" fn on_sigterm(_: libc::c_int) {
        let fd = STOP_WRITE.load(Ordering::Relaxed);
        // SAFETY: write(2) is async-signal-safe; the buffer is a live static byte.
        unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) };
    }

    /// A pipe that becomes readable (for good: nobody reads it) once SIGTERM comes.
    pub fn stop_on_sigterm() -> std::io::Result<OwnedFd> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fd numbers into the array it is given.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both were just made by pipe2 and are owned by nobody else; the write end is
        // kept open for the life of the process (the handler writes to it).
        let read = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
        STOP_WRITE.store(fds[1], Ordering::Relaxed);
        // SAFETY: the handler only loads an atomic and calls write(2).
        let old =
            unsafe { libc::signal(libc::SIGTERM, on_sigterm as *const () as libc::sighandler_t) };
        if old == libc::SIG_ERR {
            return Err(std::io::Error::last_os_error());
        }
        Ok(read)
    }

    #[derive(Debug, PartialEq, Eq)]
    pub enum Woken {
        /// `fd` is readable.
        Readable,
        /// `fd`'s peer will send no more (what it sent may still be there to read).
        HungUp,
        /// SIGTERM came.
        Stop,
    }

    /// Waits until `fd` is readable or hung up, or the stop pipe is readable.
    pub fn wait(fd: BorrowedFd<'_>, stop: BorrowedFd<'_>) -> Woken {
        let mut fds = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN | libc::POLLRDHUP,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // SAFETY: two valid pollfd structs, and the count says two.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n > 0 {
                break;
            }
        }
        if fds[1].revents != 0 {
            Woken::Stop
        } else if fds[0].revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
            Woken::HungUp
        } else {
            Woken::Readable
        }
    }

    /// What [`read_line`] found.
    pub enum Line {
        /// One whole line, newline included, taken off the socket.
        Whole(Vec<u8>),
        /// This many bytes of a line, left where they are.
        Part(usize),
    }

    /// Takes one whole line (with its newline) off the socket, or tells how much of one is
    /// there; end of file is an error.
    pub fn read_line(fd: BorrowedFd<'_>) -> std::io::Result<Line> {
        let mut buf = vec![0u8; 4096];
        // SAFETY: recv writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            -1 => {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    return Ok(Line::Part(0));
                }
                return Err(e);
            }
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            _ => {}
        }
        let Some(end) = buf[..n as usize].iter().position(|&b| b == b'\n') else {
            // A line longer than the buffer is not this example's business.
            if n as usize == buf.len() {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            return Ok(Line::Part(n as usize));
        };
        let mut line = vec![0u8; end + 1];
        // SAFETY: recv writes at most line.len() bytes into line; they are there (peeked).
        let got = unsafe { libc::recv(fd.as_raw_fd(), line.as_mut_ptr().cast(), line.len(), 0) };
        if got != line.len() as isize {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Line::Whole(line))
    }

    /// Makes the socket readable, for poll, only once more than `got` bytes wait in it
    /// (`SO_RCVLOWAT`; a hang-up still wakes it). 0 is the default: any byte.
    pub fn wait_for_more_than(fd: BorrowedFd<'_>, got: usize) -> std::io::Result<()> {
        let low: libc::c_int = (got + 1).try_into().unwrap_or(libc::c_int::MAX);
        // SAFETY: the option value is a live c_int and the length says so.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&low as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}
