//! The sd_notify protocol (sd_notify(3)): what a service may say on `$NOTIFY_SOCKET`, one
//! datagram of `KEY=VALUE` lines. This module only reads the text; who sent it is the kernel's
//! to say (SCM_CREDENTIALS), and what it means for the service is the supervisor's to decide.

/// The largest datagram read: sd_notify messages are a few short lines (systemd reads at most
/// 4 KiB too). A longer one is refused whole.
pub const MAX_MESSAGE: usize = 4096;

/// What `WATCHDOG=` asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watchdog {
    /// `WATCHDOG=1`: a ping.
    Ping,
    /// `WATCHDOG=trigger`: act as if a ping was missed.
    Trigger,
}

/// One message, every key it set. Unknown keys are ignored, as sd_notify(3) asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// `READY=1`.
    pub ready: bool,
    /// `RELOADING=1`.
    pub reloading: bool,
    /// `STOPPING=1`.
    pub stopping: bool,
    /// `STATUS=…`.
    pub status: Option<String>,
    /// `MAINPID=N`.
    pub main_pid: Option<i32>,
    /// `EXTEND_TIMEOUT_USEC=N`.
    pub extend_timeout_usec: Option<u64>,
    /// `ERRNO=N`.
    pub errno: Option<i32>,
    /// `BARRIER=1`.
    pub barrier: bool,
    /// `WATCHDOG=1` or `WATCHDOG=trigger`.
    pub watchdog: Option<Watchdog>,
    /// `WATCHDOG_USEC=N`.
    pub watchdog_usec: Option<u64>,
    /// `FDSTORE=1`.
    pub fd_store: bool,
    /// `FDNAME=…`.
    pub fd_name: Option<String>,
    /// `FDSTOREREMOVE=1`.
    pub fd_store_remove: bool,
    /// `FDPOLL=0` (false) or `FDPOLL=1`.
    pub fd_poll: Option<bool>,
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Longer than [`MAX_MESSAGE`].
    #[error("longer than {MAX_MESSAGE} bytes")]
    TooLong,
    /// Not UTF-8 text.
    #[error("not UTF-8 text")]
    NotText,
    /// A line is not `KEY=VALUE`.
    #[error("line {0} is not KEY=VALUE")]
    NotAnAssignment(usize),
    /// A known key with a value it cannot have.
    #[error("{key}={value:?} is not a value {key} takes")]
    BadValue {
        /// The key.
        key: &'static str,
        /// What was sent (cut short).
        value: String,
    },
}

fn bad(key: &'static str, value: &str) -> Malformed {
    Malformed::BadValue {
        key,
        value: value.chars().take(40).collect(),
    }
}

fn flag(key: &'static str, value: &str) -> Result<bool, Malformed> {
    match value {
        "1" => Ok(true),
        "0" => Ok(false),
        other => Err(bad(key, other)),
    }
}

fn number<T: std::str::FromStr>(key: &'static str, value: &str) -> Result<T, Malformed> {
    value.parse().map_err(|_| bad(key, value))
}

/// Reads one datagram.
pub fn parse(bytes: &[u8]) -> Result<Message, Malformed> {
    if bytes.len() > MAX_MESSAGE {
        return Err(Malformed::TooLong);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Malformed::NotText)?;
    let mut m = Message::default();
    for (i, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(Malformed::NotAnAssignment(i + 1));
        };
        match key {
            "READY" => m.ready |= flag("READY", value)?,
            "RELOADING" => m.reloading |= flag("RELOADING", value)?,
            "STOPPING" => m.stopping |= flag("STOPPING", value)?,
            "STATUS" => m.status = Some(value.to_string()),
            "MAINPID" => m.main_pid = Some(number("MAINPID", value)?),
            "EXTEND_TIMEOUT_USEC" => {
                m.extend_timeout_usec = Some(number("EXTEND_TIMEOUT_USEC", value)?)
            }
            "ERRNO" => m.errno = Some(number("ERRNO", value)?),
            "BARRIER" => m.barrier |= flag("BARRIER", value)?,
            "WATCHDOG" => {
                m.watchdog = Some(match value {
                    "1" => Watchdog::Ping,
                    "trigger" => Watchdog::Trigger,
                    other => return Err(bad("WATCHDOG", other)),
                })
            }
            "WATCHDOG_USEC" => m.watchdog_usec = Some(number("WATCHDOG_USEC", value)?),
            "FDSTORE" => m.fd_store |= flag("FDSTORE", value)?,
            "FDNAME" => m.fd_name = Some(value.to_string()),
            "FDSTOREREMOVE" => m.fd_store_remove |= flag("FDSTOREREMOVE", value)?,
            "FDPOLL" => m.fd_poll = Some(flag("FDPOLL", value)?),
            _ => {}
        }
    }
    Ok(m)
}

/// For the notify fuzz target (`fuzz/`): any bytes give a message or a refusal, never a
/// panic, and a message parsed is a message that means something only through known keys.
#[doc(hidden)]
pub fn fuzz(bytes: &[u8]) {
    if let Ok(m) = parse(bytes) {
        assert!(bytes.len() <= MAX_MESSAGE);
        if let Some(status) = &m.status {
            assert!(!status.contains('\n'));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_sd_notify_sends() {
        let m = parse(
            b"READY=1\nSTATUS=Serving 3 clients\nMAINPID=4242\nRELOADING=1\nSTOPPING=1\n\
              EXTEND_TIMEOUT_USEC=5000000\nERRNO=2\nBARRIER=1\nWATCHDOG=trigger\n\
              WATCHDOG_USEC=30000000\nFDSTORE=1\nFDNAME=conn=7\nFDSTOREREMOVE=1\nFDPOLL=0\n\
              X_UNKNOWN=whatever\n",
        )
        .unwrap();
        assert_eq!(
            m,
            Message {
                ready: true,
                reloading: true,
                stopping: true,
                status: Some("Serving 3 clients".into()),
                main_pid: Some(4242),
                extend_timeout_usec: Some(5_000_000),
                errno: Some(2),
                barrier: true,
                watchdog: Some(Watchdog::Trigger),
                watchdog_usec: Some(30_000_000),
                fd_store: true,
                fd_name: Some("conn=7".into()),
                fd_store_remove: true,
                fd_poll: Some(false),
            }
        );
        assert_eq!(parse(b"").unwrap(), Message::default());
        assert_eq!(parse(b"WATCHDOG=1").unwrap().watchdog, Some(Watchdog::Ping));
        assert_eq!(parse(b"STATUS=").unwrap().status, Some(String::new()));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(&[b'x'; MAX_MESSAGE + 1]), Err(Malformed::TooLong));
        assert_eq!(parse(b"READY=1\n\xff"), Err(Malformed::NotText));
        assert_eq!(
            parse(b"READY=1\nhello\n"),
            Err(Malformed::NotAnAssignment(2))
        );
        assert!(matches!(
            parse(b"MAINPID=me"),
            Err(Malformed::BadValue { key: "MAINPID", .. })
        ));
        assert!(matches!(
            parse(b"READY=yes"),
            Err(Malformed::BadValue { key: "READY", .. })
        ));
    }
}
