//! The small value languages of the config: durations, sizes, modes, signals, limits, names.

use std::fmt;
use std::num::NonZeroU64;
use std::time::Duration;

/// A duration of the config, in 8 bytes where a `Duration` takes 16 (every service keeps six):
/// whole milliseconds, the finest [`parse_duration`] reads. Kept inverted in a `NonZeroU64`
/// so that an `Option<Span>` is 8 bytes as well; the one value that cannot be kept, `u64::MAX`
/// milliseconds (585 million years), becomes one less.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Span(NonZeroU64);

impl Span {
    /// `ms` milliseconds.
    pub const fn from_millis(ms: u64) -> Span {
        match NonZeroU64::new(!ms) {
            Some(inverted) => Span(inverted),
            None => Span(NonZeroU64::MIN),
        }
    }

    /// `s` seconds.
    pub const fn from_secs(s: u64) -> Span {
        Span::from_millis(s.saturating_mul(1000))
    }

    /// As a `Duration`.
    pub const fn get(self) -> Duration {
        Duration::from_millis(!self.0.get())
    }
}

/// Whole milliseconds of it (a config duration has no finer part).
impl From<Duration> for Span {
    fn from(d: Duration) -> Span {
        Span::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// A signal by number, printed by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub i32);

const SIGNAL_NAMES: [(&str, i32); 31] = [
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

impl Signal {
    /// SIGTERM.
    pub const TERM: Signal = Signal(15);
    /// SIGKILL.
    pub const KILL: Signal = Signal(9);
    /// SIGABRT.
    pub const ABRT: Signal = Signal(6);
    /// SIGCONT.
    pub const CONT: Signal = Signal(18);
    /// SIGCHLD.
    pub const CHLD: Signal = Signal(17);
    /// SIGHUP.
    pub const HUP: Signal = Signal(1);
    /// SIGINT.
    pub const INT: Signal = Signal(2);
    /// SIGUSR1.
    pub const USR1: Signal = Signal(10);
    /// SIGUSR2.
    pub const USR2: Signal = Signal(12);
    /// SIGPWR.
    pub const PWR: Signal = Signal(30);

    /// `"SIGTERM"`, `"TERM"` or `"15"`.
    pub fn parse(text: &str) -> Option<Signal> {
        if let Ok(n) = text.parse::<i32>() {
            return Signal::from_number(n.into());
        }
        let bare = text.strip_prefix("SIG").unwrap_or(text);
        SIGNAL_NAMES
            .iter()
            .find(|(name, _)| *name == bare)
            .map(|(_, n)| Signal(*n))
    }

    /// A number in 1..=64.
    pub fn from_number(n: i64) -> Option<Signal> {
        (1..=64).contains(&n).then_some(Signal(n as i32))
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match SIGNAL_NAMES.iter().find(|(_, n)| *n == self.0) {
            Some((name, _)) => write!(f, "SIG{name}"),
            None if self.0 >= 34 => write!(f, "SIGRTMIN+{}", self.0 - 34),
            None => write!(f, "signal {}", self.0),
        }
    }
}

/// `"100ms"`, `"5s"`, `"2m"`, `"1h"` or `"0"`.
pub fn parse_duration(text: &str) -> Option<Span> {
    if text == "0" {
        return Some(Span::from_millis(0));
    }
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let ms = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        _ => None,
    }?;
    Some(Span::from_millis(ms))
}

/// Prints a duration the way the config writes it.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0".into()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// `"512K"`, `"64M"`, `"1G"` (powers of 1024) or a plain number of bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let (digits, mult) = match text.as_bytes().last()? {
        b'K' => (&text[..text.len() - 1], 1u64 << 10),
        b'M' => (&text[..text.len() - 1], 1 << 20),
        b'G' => (&text[..text.len() - 1], 1 << 30),
        b'T' => (&text[..text.len() - 1], 1 << 40),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// An octal mode such as `"0660"`, at most 0o7777.
pub fn parse_mode(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(text, 8).ok().filter(|m| *m <= 0o7777)
}

/// The rlimit names of the `limits` table and their `RLIMIT_*` numbers.
pub const RLIMITS: [(&str, u32); 16] = [
    ("cpu", 0),
    ("fsize", 1),
    ("data", 2),
    ("stack", 3),
    ("core", 4),
    ("rss", 5),
    ("nproc", 6),
    ("nofile", 7),
    ("memlock", 8),
    ("as", 9),
    ("locks", 10),
    ("sigpending", 11),
    ("msgqueue", 12),
    ("nice", 13),
    ("rtprio", 14),
    ("rttime", 15),
];

/// `[A-Za-z0-9_.-]{1,64}`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Some(Span::from_millis(0)));
        assert_eq!(parse_duration("100ms"), Some(Span::from_millis(100)));
        assert_eq!(parse_duration("5s"), Some(Span::from_secs(5)));
        assert_eq!(parse_duration("2m"), Some(Span::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Span::from_secs(3600)));
        assert_eq!(Span::from_millis(0).get(), Duration::ZERO);
        assert_eq!(Span::from_millis(1500).get(), Duration::from_millis(1500));
        assert_eq!(
            parse_duration("18446744073709551615ms").map(Span::get),
            Some(Duration::from_millis(u64::MAX - 1))
        );
        assert_eq!(size_of::<Option<Span>>(), 8);
        for bad in [
            "",
            "5",
            "s",
            "5 s",
            "1.5s",
            "-1s",
            "5sec",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512K"), Some(512 * 1024));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        for bad in ["", "K", "1.5M", "12k", "-1", "1MB"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn modes_signals_names() {
        assert_eq!(parse_mode("0660"), Some(0o660));
        assert_eq!(parse_mode("0022"), Some(0o22));
        assert_eq!(parse_mode("0899"), None);
        assert_eq!(parse_mode("17777"), None);
        assert_eq!(Signal::parse("SIGTERM"), Some(Signal(15)));
        assert_eq!(Signal::parse("HUP"), Some(Signal(1)));
        assert_eq!(Signal::parse("10"), Some(Signal(10)));
        assert_eq!(Signal::parse("SIGNOPE"), None);
        assert_eq!(Signal::parse("65"), None);
        assert_eq!(Signal(9).to_string(), "SIGKILL");
        assert!(valid_name("echo-1.x_y"));
        assert!(!valid_name("a b"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(65)));
    }
}
