//! What an epoll event is about, packed into its 64 bits of data: the kind in the top byte,
//! its subject below (a unit id, a pid, a stream, a client number).

use steward_protocol::control::Stream;

use crate::registry::UnitId;
use crate::supervisor::Pid;

/// The subject of an epoll event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// The signalfd.
    Signals,
    /// The timerfd.
    Timer,
    /// The control socket.
    Control,
    /// The sd_notify socket.
    Notify,
    /// A control connection.
    Client(u64),
    /// One of the sockets of this unit.
    Socket(UnitId),
    /// An output pipe of this unit.
    Log(UnitId, Stream),
    /// The status pipe of this unit's executor with this pid.
    Status(UnitId, Pid),
    /// An output pipe of this unit's accept instance with this pid.
    InstanceLog(UnitId, Pid, Stream),
    /// The readiness pipe (`ready = "fd:N"`) of this unit's process with this pid.
    Ready(UnitId, Pid),
    /// A stored fd of this unit (fd store), by its number.
    Stored(UnitId, u32),
    /// The pool socket of this unit's armed executor with this pid.
    Armed(UnitId, Pid),
}

const LOW: u64 = (1 << 56) - 1;
/// Bits for a stored fd's number, below the unit id: 32 + 24 = 56.
const FD_BITS: u32 = 24;
/// Bits for a pid: Linux's PID_MAX_LIMIT is 2^22.
const PID_BITS: u32 = 23;
const PID_MASK: u64 = (1 << PID_BITS) - 1;

fn stream_bit(stream: Stream) -> u64 {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

fn stream(bit: u64) -> Stream {
    if bit & 1 == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    }
}

/// A unit id above the pid and stream bits: 32 + 23 + 1 = 56 bits.
fn unit_pid_stream(id: UnitId, pid: Pid, bit: u64) -> u64 {
    (id.raw() as u64) << (PID_BITS + 1) | ((pid.raw() as u64) & PID_MASK) << 1 | bit
}

impl Token {
    /// The token of unit `id`'s stored fd `fd`; `None` for a number too big to pack (above
    /// 2^24, where the default fs.nr_open is 2^20).
    pub fn stored(id: UnitId, fd: std::os::fd::RawFd) -> Option<Token> {
        let fd = u32::try_from(fd).ok().filter(|&fd| fd < 1 << FD_BITS)?;
        Some(Token::Stored(id, fd))
    }

    /// The epoll data.
    pub fn to_u64(self) -> u64 {
        let (kind, low): (u64, u64) = match self {
            Token::Signals => (0, 0),
            Token::Timer => (0, 1),
            Token::Control => (0, 2),
            Token::Notify => (0, 3),
            Token::Client(id) => (1, id),
            Token::Socket(id) => (2, id.raw() as u64),
            Token::Log(id, s) => (3, (id.raw() as u64) << 1 | stream_bit(s)),
            Token::Status(id, pid) => (4, unit_pid_stream(id, pid, 0)),
            Token::InstanceLog(id, pid, s) => (5, unit_pid_stream(id, pid, stream_bit(s))),
            Token::Ready(id, pid) => (6, unit_pid_stream(id, pid, 0)),
            Token::Stored(id, fd) => (7, (id.raw() as u64) << FD_BITS | fd as u64),
            Token::Armed(id, pid) => (8, unit_pid_stream(id, pid, 0)),
        };
        kind << 56 | (low & LOW)
    }

    /// The token in epoll data; `None` for data no token makes.
    pub fn from_u64(data: u64) -> Option<Token> {
        let low = data & LOW;
        let unit = |low: u64| UnitId::from_raw((low >> (PID_BITS + 1)) as u32);
        let pid = |low: u64| Pid::new(((low >> 1) & PID_MASK) as i32);
        match data >> 56 {
            0 if low == 0 => Some(Token::Signals),
            0 if low == 1 => Some(Token::Timer),
            0 if low == 2 => Some(Token::Control),
            0 if low == 3 => Some(Token::Notify),
            1 => Some(Token::Client(low)),
            2 => Some(Token::Socket(UnitId::from_raw(low as u32))),
            3 => Some(Token::Log(UnitId::from_raw((low >> 1) as u32), stream(low))),
            4 => Some(Token::Status(unit(low), pid(low)?)),
            5 => Some(Token::InstanceLog(unit(low), pid(low)?, stream(low))),
            6 => Some(Token::Ready(unit(low), pid(low)?)),
            7 => Some(Token::Stored(
                UnitId::from_raw((low >> FD_BITS) as u32),
                (low & ((1 << FD_BITS) - 1)) as u32,
            )),
            8 => Some(Token::Armed(unit(low), pid(low)?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_token_packs_and_unpacks() {
        let unit = UnitId::from_raw(u32::MAX);
        let pid = Pid::new(4_194_304).unwrap();
        let tokens = [
            Token::Signals,
            Token::Timer,
            Token::Control,
            Token::Notify,
            Token::Ready(unit, pid),
            Token::Client(0),
            Token::Client(LOW),
            Token::Socket(unit),
            Token::Log(unit, Stream::Stderr),
            Token::Log(UnitId::from_raw(0), Stream::Stdout),
            Token::Status(unit, pid),
            Token::Status(UnitId::from_raw(3), Pid::new(1).unwrap()),
            Token::InstanceLog(unit, pid, Stream::Stderr),
            Token::InstanceLog(UnitId::from_raw(9), Pid::new(77).unwrap(), Stream::Stdout),
            Token::stored(unit, (1 << 24) - 1).unwrap(),
            Token::stored(UnitId::from_raw(0), 3).unwrap(),
            Token::Armed(unit, pid),
            Token::Armed(UnitId::from_raw(5), Pid::new(2).unwrap()),
        ];
        for token in tokens {
            assert_eq!(Token::from_u64(token.to_u64()), Some(token), "{token:?}");
        }
    }

    #[test]
    fn data_no_token_makes_is_refused() {
        assert_eq!(Token::from_u64(4), None);
        assert_eq!(Token::from_u64(8 << 56), None);
        assert_eq!(Token::stored(UnitId::from_raw(1), 1 << 24), None);
        assert_eq!(Token::stored(UnitId::from_raw(1), -1), None);
        assert_eq!(Token::from_u64(u64::MAX), None);
        // A status token without a pid.
        assert_eq!(Token::from_u64(4 << 56), None);
    }
}
