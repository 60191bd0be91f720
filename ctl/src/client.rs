//! The connection to the manager: connect to the control socket, write one request frame, then
//! read reply frames until the manager closes the connection.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use steward_protocol::DecodeError;
use steward_protocol::control::{Reply, Request, decode_frame, encode_frame};

/// Why talking to the manager failed.
#[derive(Debug)]
pub enum Error {
    /// Nothing to talk to at that path (missing, not a socket, nobody listening): exit 3.
    NoManager { path: PathBuf, source: io::Error },
    /// The socket is there but we may not connect to it.
    PermissionDenied { path: PathBuf },
    /// Writing the request or reading the replies failed.
    Io { path: PathBuf, source: io::Error },
    /// The manager closed the connection in the middle of a frame.
    Truncated { path: PathBuf },
    /// A reply that does not decode.
    Decode { path: PathBuf, source: DecodeError },
}

impl Error {
    /// Whether this means "no manager at that control socket" (exit 3) rather than a failure
    /// of one that is there (exit 1).
    pub fn is_no_manager(&self) -> bool {
        matches!(self, Error::NoManager { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoManager { path, source } => write!(
                f,
                "no steward is listening on {}: {}",
                path.display(),
                plain(source)
            ),
            Error::PermissionDenied { path } => write!(f, "{}: permission denied", path.display()),
            Error::Io { path, source } => {
                write!(
                    f,
                    "talking to steward on {}: {}",
                    path.display(),
                    plain(source)
                )
            }
            Error::Truncated { path } => write!(
                f,
                "steward on {} closed the connection in the middle of a reply",
                path.display()
            ),
            // The protocol crate's messages speak of spawn states; say what it means here.
            Error::Decode { path, source } => {
                let what = match source {
                    DecodeError::Version { found, expected } => format!(
                        "it speaks control protocol {found}, this stewardctl speaks {expected}"
                    ),
                    DecodeError::Oversized { len, max } => {
                        format!("a reply of {len} bytes, more than the limit of {max}")
                    }
                    DecodeError::Malformed { reason } => format!("a malformed reply ({reason})"),
                    other => other.to_string(),
                };
                write!(f, "bad reply from steward on {}: {what}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {}

/// An io::Error without Rust's " (os error N)" suffix: the user wants the words.
fn plain(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// Connects to the manager at `path` and sends `request`; the replies are read from the result.
pub fn send(path: &Path, request: &Request) -> Result<Replies<UnixStream>, Error> {
    let mut stream = UnixStream::connect(path).map_err(|source| {
        // Anything but "not allowed" means there is no manager we could reach at that path:
        // missing file, not a socket, nobody listening, a path too long to be one.
        if source.kind() == io::ErrorKind::PermissionDenied {
            Error::PermissionDenied {
                path: path.to_path_buf(),
            }
        } else {
            Error::NoManager {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    stream
        .write_all(&encode_frame(request))
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Replies::new(stream, path))
}

/// Reply frames arriving on a byte stream, which may cut them anywhere.
pub struct Replies<R> {
    reader: R,
    buf: Vec<u8>,
    path: PathBuf,
}

impl<R: Read> Replies<R> {
    /// Frames from `reader`; `path` names the manager in errors.
    pub fn new(reader: R, path: &Path) -> Replies<R> {
        Replies {
            reader,
            buf: Vec::new(),
            path: path.to_path_buf(),
        }
    }

    /// The next reply, or `None` once the manager has closed the connection between frames.
    /// Blocks until a whole frame is there.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, Error> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match decode_frame::<Reply>(&self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return Ok(Some(reply));
                }
                Ok(None) => {}
                Err(source) => {
                    return Err(Error::Decode {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
            let n = match self.reader.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // A manager that closes with our request unread makes the kernel reset the
                // connection; that is still just "it closed".
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => 0,
                Err(source) => {
                    return Err(Error::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            };
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(Error::Truncated {
                        path: self.path.clone(),
                    })
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its bytes a few at a time, the way a socket may.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.bytes.len() - self.at);
            buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn replies(bytes: Vec<u8>, step: usize) -> Replies<Trickle> {
        Replies::new(Trickle { bytes, at: 0, step }, Path::new("/run/test"))
    }

    #[test]
    fn frames_cut_anywhere_are_put_back_together() {
        let first = Reply::Done {
            message: "web: running".into(),
        };
        let second = Reply::Logs {
            lines: vec![],
            dropped: 3,
            files: vec![],
        };
        let mut bytes = encode_frame(&first);
        bytes.extend_from_slice(&encode_frame(&second));
        for step in [1, 2, 3, 7, 1000] {
            let mut r = replies(bytes.clone(), step);
            assert_eq!(r.next_reply().unwrap(), Some(first.clone()));
            assert_eq!(r.next_reply().unwrap(), Some(second.clone()));
            assert_eq!(r.next_reply().unwrap(), None);
        }
    }

    #[test]
    fn a_close_before_any_reply_is_none() {
        assert_eq!(replies(vec![], 10).next_reply().unwrap(), None);
    }

    #[test]
    fn a_close_inside_a_frame_is_an_error() {
        let mut bytes = encode_frame(&Reply::Done {
            message: "x".into(),
        });
        bytes.pop();
        let err = replies(bytes, 4).next_reply().unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        assert!(err.to_string().contains("in the middle of a reply"));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let mut bytes = vec![4, 0, 0, 0];
        bytes.extend_from_slice(&[0xff; 4]);
        let err = replies(bytes, 100).next_reply().unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        assert!(!err.is_no_manager());
    }

    #[test]
    fn connecting_to_nothing_is_no_manager() {
        let err = send(Path::new("/nonexistent/steward/control"), &Request::Version)
            .err()
            .unwrap();
        assert!(err.is_no_manager());
        assert_eq!(
            err.to_string(),
            "no steward is listening on /nonexistent/steward/control: No such file or directory"
        );
    }
}
