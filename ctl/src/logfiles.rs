//! `logs -n N` beyond the manager's ring: the older lines, read from the log files of
//! `log_dir` by this client itself, as the manager's reply names them (each file's path, inode
//! and the length that holds lines older than the reply's). The manager never reads its files
//! back, so a slow disk stalls this client, not the manager.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use steward_protocol::control::LogFilePart;

/// Read backwards in pieces this big: only the tail of a large file is read.
const CHUNK: u64 = 64 * 1024;

/// Why a part of a log file could not be read.
#[derive(Debug)]
pub struct Error {
    /// The file, as the manager named it.
    pub path: String,
    /// What went wrong.
    pub source: io::Error,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot read the log file {}: {}", self.path, self.source)
    }
}

/// The last `want` lines of `parts` (oldest first), without their newlines, oldest first.
/// A part that cannot be read ends the reading there, with what was read and why.
pub fn last_lines(parts: &[LogFilePart], want: usize) -> (Vec<String>, Option<Error>) {
    let mut lines = VecDeque::new();
    for part in parts.iter().rev() {
        if lines.len() >= want {
            break;
        }
        let read = open(part).and_then(|file| tail(&file, part.len, want, &mut lines));
        if let Err(source) = read {
            let error = Error {
                path: part.path.clone(),
                source,
            };
            return (lines.into(), Some(error));
        }
    }
    (lines.into(), None)
}

/// The file a part names: at its path, or, rotated since the reply, under a later
/// `NAME.log.N` beside it (the same inode).
fn open(part: &LogFilePart) -> io::Result<File> {
    if let Ok(file) = File::open(&part.path) {
        if file.metadata()?.ino() == part.inode {
            return Ok(file);
        }
    }
    let path = Path::new(&part.path);
    let base = log_base(path);
    let dir = path.parent().unwrap_or(Path::new("."));
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let sibling = name == base || name.strip_prefix(&format!("{base}.")).is_some();
        if sibling && entry.metadata()?.ino() == part.inode {
            return File::open(entry.path());
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "gone (rotated out since the manager answered)",
    ))
}

/// `NAME.log` of `NAME.log` or `NAME.log.N`.
fn log_base(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rsplit_once('.') {
        Some((base, n)) if base.ends_with(".log") && n.bytes().all(|b| b.is_ascii_digit()) => {
            base.to_string()
        }
        _ => name,
    }
}

/// Puts the last lines of the first `len` bytes of `file` in front of `lines`, until it
/// holds `want`.
fn tail(file: &File, len: u64, want: usize, lines: &mut VecDeque<String>) -> io::Result<()> {
    let mut end = len;
    // The end of a line whose start is in the piece before.
    let mut carry: Vec<u8> = Vec::new();
    while lines.len() < want && (end > 0 || !carry.is_empty()) {
        let start = end.saturating_sub(CHUNK);
        let mut buf = vec![0u8; (end - start) as usize];
        file.read_exact_at(&mut buf, start)?;
        buf.extend_from_slice(&carry);
        let body = if start > 0 {
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    carry = buf[..=i].to_vec();
                    &buf[i + 1..]
                }
                None => {
                    carry = buf;
                    end = start;
                    continue;
                }
            }
        } else {
            carry.clear();
            &buf[..]
        };
        if !body.is_empty() {
            let body = body.strip_suffix(b"\n").unwrap_or(body);
            for line in body.rsplit(|&b| b == b'\n') {
                if lines.len() >= want {
                    break;
                }
                lines.push_front(String::from_utf8_lossy(line).into_owned());
            }
        }
        end = start;
        if start == 0 {
            break;
        }
    }
    Ok(())
}

/// For the tests: the path of `NAME.log.N`.
#[cfg(test)]
fn rotated(base: &Path, n: u32) -> std::path::PathBuf {
    let mut path = base.as_os_str().to_owned();
    path.push(format!(".{n}"));
    std::path::PathBuf::from(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(path: &Path, len: u64) -> LogFilePart {
        LogFilePart {
            path: path.to_string_lossy().into_owned(),
            inode: std::fs::metadata(path).unwrap().ino(),
            len,
        }
    }

    #[test]
    fn the_last_lines_across_files_even_rotated_since() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("svc.log");
        let numbered = |from: usize, to: usize| -> String {
            (from..to).map(|i| format!("line {i:06}\n")).collect()
        };
        // 12 bytes a line: the older file spans several pieces.
        std::fs::write(rotated(&live, 1), numbered(0, 20_000)).unwrap();
        std::fs::write(&live, numbered(20_000, 20_010) + "newer, not asked for\n").unwrap();
        let parts = vec![part(&rotated(&live, 1), 20_000 * 12), part(&live, 10 * 12)];
        let (lines, error) = last_lines(&parts, 15_000);
        assert!(error.is_none());
        let expect: Vec<String> = (5_010..20_010).map(|i| format!("line {i:06}")).collect();
        assert_eq!(lines, expect);

        // Rotated after the reply: found by inode under the next name.
        std::fs::rename(rotated(&live, 1), rotated(&live, 2)).unwrap();
        std::fs::rename(&live, rotated(&live, 1)).unwrap();
        std::fs::write(&live, "brand new\n").unwrap();
        let (lines, error) = last_lines(&parts, 3);
        assert!(error.is_none());
        assert_eq!(lines, ["line 020007", "line 020008", "line 020009"]);
        let (all, _) = last_lines(&parts, 1_000_000);
        assert_eq!(all.len(), 20_010);
        assert_eq!(log_base(&rotated(&live, 12)), "svc.log");
    }
}
