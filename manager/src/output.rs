//! The services' captured output (not the manager's own log, which is `log`): read from their
//! stdout and stderr pipes, cut into lines, kept in a bounded ring per service (oldest lines
//! dropped, and counted), and echoed to the manager's own stderr (`logfile` writes them to
//! disk).

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::time::{SystemTime, UNIX_EPOCH};

use steward_protocol::control::{LogLine, Stream};

/// A line longer than this is cut into pieces: a service writing one endless line must not
/// grow the manager's memory.
pub const MAX_LINE: usize = 4096;

/// How much one wake-up reads from one pipe, so a flooding service cannot starve the loop
/// (the level-triggered pipe comes back on the next turn).
pub const READ_BUDGET: usize = 64 * 1024;

/// A service's kept lines, bounded in bytes.
#[derive(Debug)]
pub struct Ring {
    /// Each with where it starts in the service's log files (`crate::logfile`), when known.
    lines: VecDeque<(LogLine, Option<u64>)>,
    bytes: usize,
    capacity: usize,
    /// Lines dropped to stay within the bound.
    pub dropped: u64,
}

/// What a kept line costs against the bound: its text and a fixed overhead for the rest.
fn cost(line: &LogLine) -> usize {
    line.text.len() + line.name.len() + 32
}

impl Ring {
    /// An empty ring holding at most `capacity` bytes of lines.
    pub fn new(capacity: u64) -> Ring {
        Ring {
            lines: VecDeque::new(),
            bytes: 0,
            capacity: capacity as usize,
            dropped: 0,
        }
    }

    /// Changes the bound (on reload), dropping the oldest lines if needed.
    pub fn set_capacity(&mut self, capacity: u64) {
        self.capacity = capacity as usize;
        self.trim();
    }

    /// Keeps a line (with its position in the log files, if it has one), dropping the oldest
    /// to make room.
    pub fn push(&mut self, line: LogLine, at: Option<u64>) {
        self.bytes += cost(&line);
        self.lines.push_back((line, at));
        self.trim();
    }

    fn trim(&mut self) {
        while self.bytes > self.capacity {
            let Some((old, _)) = self.lines.pop_front() else {
                break;
            };
            self.bytes -= cost(&old);
            self.dropped += 1;
        }
    }

    /// How many lines it holds.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// The lines from the oldest one with a position in the log files on, and that position
    /// (`None`, with no lines, when none has one): what the files do not hold before it.
    pub fn since_positioned(&self) -> (Vec<LogLine>, Option<u64>) {
        let Some(first) = self.lines.iter().position(|(_, at)| at.is_some()) else {
            return (Vec::new(), None);
        };
        let lines = self.lines.iter().skip(first).map(|(l, _)| l.clone());
        (lines.collect(), self.lines[first].1)
    }

    /// Forgets every position: the log files were opened anew (a reload).
    pub fn forget_positions(&mut self) {
        for (_, at) in &mut self.lines {
            *at = None;
        }
    }

    /// A ring holding `lines` (oldest first), as a `reexec` hands it over.
    pub fn restore(capacity: u64, lines: Vec<LogLine>, dropped: u64) -> Ring {
        let mut ring = Ring::new(capacity);
        // Where they are in the log files is not known: those are the next manager's.
        for line in lines {
            ring.push(line, None);
        }
        ring.dropped += dropped;
        ring
    }

    /// The last `n` lines (every kept line for `None`), oldest first.
    pub fn tail(&self, n: Option<u32>) -> Vec<LogLine> {
        let n = n.map_or(self.lines.len(), |n| (n as usize).min(self.lines.len()));
        self.lines
            .iter()
            .skip(self.lines.len() - n)
            .map(|(line, _)| line.clone())
            .collect()
    }
}

/// Cuts a byte stream into lines.
#[derive(Debug, Default)]
pub struct Splitter {
    partial: Vec<u8>,
}

impl Splitter {
    /// A splitter that already holds the start of a line.
    pub fn with_partial(mut partial: Vec<u8>) -> Splitter {
        partial.truncate(MAX_LINE);
        Splitter { partial }
    }

    /// The start of a line not yet complete.
    pub fn partial(&self) -> &[u8] {
        &self.partial
    }

    /// Feeds bytes; calls `line` for each complete (or overlong) line, without its newline.
    pub fn feed(&mut self, mut bytes: &[u8], mut line: impl FnMut(&str)) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.partial.len();
            match bytes.iter().take(room).position(|&b| b == b'\n') {
                Some(i) => {
                    self.partial.extend_from_slice(&bytes[..i]);
                    line(&String::from_utf8_lossy(&self.partial));
                    self.partial.clear();
                    bytes = &bytes[i + 1..];
                }
                None if bytes.len() >= room => {
                    self.partial.extend_from_slice(&bytes[..room]);
                    line(&String::from_utf8_lossy(&self.partial));
                    self.partial.clear();
                    bytes = &bytes[room..];
                }
                None => {
                    self.partial.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
        }
    }

    /// At end of file: the unterminated rest, if any.
    pub fn finish(&mut self, line: impl FnOnce(&str)) {
        if !self.partial.is_empty() {
            line(&String::from_utf8_lossy(&self.partial));
            self.partial.clear();
        }
    }
}

/// The read end of one of a process's output pipes.
#[derive(Debug)]
pub struct Pipe {
    /// Non-blocking, close-on-exec.
    pub fd: OwnedFd,
    /// Which stream of the service it carries.
    pub stream: Stream,
    /// Its unfinished line.
    pub splitter: Splitter,
}

/// A new output pipe: the manager's read end, and the write end for the service.
pub fn pipe(stream: Stream) -> std::io::Result<(Pipe, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // Only our end is non-blocking: a service writing to a full pipe should wait, not fail.
    rustix::fs::fcntl_setfl(&read, rustix::fs::OFlags::NONBLOCK)?;
    Ok((
        Pipe {
            fd: read,
            stream,
            splitter: Splitter::default(),
        },
        write,
    ))
}

/// Now, in microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> LogLine {
        LogLine {
            time_us: 0,
            name: "s".into(),
            pid: 1,
            stream: Stream::Stdout,
            text: text.into(),
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_lines_within_its_bound() {
        let mut ring = Ring::new(200);
        for i in 0..100 {
            ring.push(line(&format!("line {i}")), (i >= 50).then_some(i));
        }
        let kept = ring.tail(None);
        assert!(ring.bytes <= 200);
        assert_eq!(kept.last().unwrap().text, "line 99");
        assert_eq!(ring.dropped as usize + kept.len(), 100);
        assert_eq!(
            ring.tail(Some(2))
                .iter()
                .map(|l| l.text.as_str())
                .collect::<Vec<_>>(),
            ["line 98", "line 99"]
        );
        let (since, at) = ring.since_positioned();
        assert_eq!(since, kept);
        assert_eq!(at, Some(100 - kept.len() as u64));
        ring.forget_positions();
        assert_eq!(ring.since_positioned(), (vec![], None));
        ring.set_capacity(0);
        assert!(ring.tail(None).is_empty());
    }

    #[test]
    fn lines_are_split_across_reads_and_overlong_ones_cut() {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        s.feed(b"hel", |l| out.push(l.to_string()));
        s.feed(b"lo\nwor", |l| out.push(l.to_string()));
        s.feed(b"ld\n\n", |l| out.push(l.to_string()));
        assert_eq!(out, ["hello", "world", ""]);
        out.clear();
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        s.feed(&long, |l| out.push(l.to_string()));
        s.finish(|l| out.push(l.to_string()));
        let lens: Vec<usize> = out.iter().map(String::len).collect();
        assert_eq!(lens, [MAX_LINE, MAX_LINE, 10]);
    }
}
