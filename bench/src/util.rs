//! What every scenario needs: the context, a steward on a config of its own, peers started and
//! stopped by pid, statistics, and PSS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Where things are, and how thorough to be.
pub struct Ctx {
    /// The release binaries: steward, steward-executor, stewardctl, steward-tiny.
    pub bin_dir: PathBuf,
    /// Where the report and the plots go.
    pub out: PathBuf,
    /// Fewer iterations and sizes: a smoke run, not figures to publish.
    pub quick: bool,
}

impl Ctx {
    /// A binary from the bin dir.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The tiny static service every scenario runs (`bench/tiny/tiny.c`).
    pub fn tiny(&self) -> PathBuf {
        self.bin("steward-tiny")
    }

    /// A fresh scratch directory for one scenario.
    pub fn scratch(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = std::env::temp_dir().join(format!("steward-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }
}

/// What a scenario produced: its part of the report, and named figures for the targets table.
#[derive(Default)]
pub struct Section {
    /// Markdown, starting with a `##` heading.
    pub markdown: String,
    /// Figures by key (see `main.rs` for the keys the targets table reads).
    pub figures: BTreeMap<String, f64>,
}

/// A steward started for a scenario; stopped (SIGTERM, then waited for) when dropped.
///
/// Its stderr goes to a file that is read when a scenario waits for a line: a pipe to a
/// reader thread would wake that thread for every line steward logs, on the same cores the
/// measurement runs on, a cost the peers (whose output goes to /dev/null) do not pay.
pub struct Manager {
    child: Child,
    log: PathBuf,
    /// Its scratch dir: config, control socket, service sockets.
    pub dir: PathBuf,
}

impl Manager {
    /// Starts `steward` on `config` (`@DIR@` is the scenario's directory, `@TINY@` the tiny
    /// service) with extra environment, and waits until it serves.
    pub fn start(
        ctx: &Ctx,
        name: &str,
        config: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Manager> {
        let dir = ctx.scratch(name)?;
        let path = dir.join("steward.toml");
        let text = config
            .replace("@DIR@", dir.to_str().context("UTF-8 temp dir")?)
            .replace("@TINY@", ctx.tiny().to_str().context("UTF-8 path")?);
        std::fs::write(&path, text)?;
        let log = dir.join("steward.log");
        let child = Command::new(ctx.bin("steward"))
            .arg("--config")
            .arg(&path)
            .arg("--control")
            .arg(dir.join("control"))
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting steward")?;
        let manager = Manager { child, log, dir };
        manager.wait_for_nth("version", 1, Duration::from_secs(60))?;
        Ok(manager)
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// How many log lines so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until `n` log lines contain `needle`, polling the log file.
    pub fn wait_for_nth(&self, needle: &str, n: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            if self.count(needle) >= n {
                return Ok(());
            }
            if !crate::sys::alive(self.child.id() as i32) {
                bail!(
                    "steward exited before logging {needle:?}; it said:\n{}",
                    self.lines().join("\n")
                );
            }
            if Instant::now() >= deadline {
                let lines = self.lines();
                bail!(
                    "steward did not log {needle:?} {n} times in time; last lines:\n{}",
                    lines[lines.len().saturating_sub(10)..].join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Waits (up to 20 s) for a log line containing `needle`.
    pub fn wait_for(&self, needle: &str) -> anyhow::Result<()> {
        self.wait_for_nth(needle, 1, Duration::from_secs(20))
    }

    /// Runs `stewardctl` against it; fails unless it exits 0.
    pub fn ctl(&self, ctx: &Ctx, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(ctx.bin("stewardctl"))
            .arg("--control")
            .arg(self.dir.join("control"))
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "stewardctl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // SIGTERM, an orderly shutdown: a SIGKILLed steward would leave its services running.
        crate::sys::terminate(self.child.id() as i32);
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A peer server started for a comparison, stopped by pid (SIGTERM, then SIGKILL) when dropped.
pub struct Peer {
    child: Child,
    name: String,
}

impl Peer {
    /// Starts `program args…` with its output discarded.
    pub fn start(name: &str, program: &str, args: &[&str]) -> anyhow::Result<Peer> {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {program} (is it installed?)"))?;
        Ok(Peer {
            child,
            name: name.to_string(),
        })
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it to exit by itself.
    pub fn wait(mut self) -> anyhow::Result<()> {
        self.child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            crate::sys::terminate(self.child.id() as i32);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `cond` holds, polling, or fails after `within`.
pub fn wait_until(
    what: &str,
    within: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// p50, p99 and max of a set of samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
    /// How many samples.
    pub n: usize,
}

impl Stats {
    /// The statistics of `samples`.
    pub fn of(samples: &[Duration]) -> Stats {
        let mut sorted = samples.to_vec();
        sorted.sort();
        Stats {
            p50: percentile(&sorted, 50.0),
            p99: percentile(&sorted, 99.0),
            max: sorted.last().copied().unwrap_or_default(),
            n: sorted.len(),
        }
    }
}

/// The `p`-th percentile (0–100) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Microseconds, no decimals.
pub fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// Proportional set size of a process, in bytes (from `/proc/PID/smaps_rollup`).
pub fn pss(pid: u32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("reading smaps_rollup of {pid}"))?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("no Pss line")?;
    Ok(kb * 1024)
}

/// The pids of every process whose parent is `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let after = s.rsplit_once(')')?.1;
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Whether a unix socket at `path` accepts connections.
pub fn accepts(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Touched anonymous memory: every page written, so it is really resident.
pub fn ballast(bytes: usize) -> Vec<u8> {
    let mut v = vec![0u8; bytes];
    for page in v.chunks_mut(4096) {
        page[0] = 1;
    }
    v
}

/// "16M", "1G": the sizes the scenarios name.
pub fn size_name(bytes: usize) -> String {
    if bytes >= 1 << 30 {
        format!("{}G", bytes >> 30)
    } else {
        format!("{}M", bytes >> 20)
    }
}

impl Peer {
    /// Whether it has exited (and is reaped); never blocks.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

/// Whether a unix socket bound to `path` is listening, from `/proc/net/unix`. Unlike
/// [`accepts`], it does not connect: for a server that execs on its first connection, a probe
/// would be that connection.
pub fn unix_listening(path: &Path) -> bool {
    /// `__SO_ACCEPTCON`: set by listen(2), not by bind(2).
    const ACCEPTCON: u32 = 1 << 16;
    let (Ok(table), Some(want)) = (std::fs::read_to_string("/proc/net/unix"), path.to_str()) else {
        return false;
    };
    // "Num RefCount Protocol Flags Type St Inode Path": the path is the rest of the line.
    table.lines().skip(1).any(|line| {
        let mut rest = line.trim_start();
        let mut fields = [""; 7];
        for field in &mut fields {
            let (head, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            *field = head;
            rest = tail.trim_start();
        }
        let flags = u32::from_str_radix(fields[3], 16).unwrap_or(0);
        flags & ACCEPTCON != 0 && rest == want
    })
}

/// The fields of `/proc/PID/stat` after the command name: state first, then ppid, ….
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// A process's command name (`/proc/PID/comm`, at most 15 bytes).
pub fn comm(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(text.trim_end().to_string())
}

/// One process as seen at one moment: its pid and start time, so that a later look is not
/// fooled by the pid's reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proc {
    /// Its pid.
    pub pid: u32,
    /// Its start time, in clock ticks after boot.
    start: u64,
}

impl Proc {
    /// The process `pid` is now, if it exists.
    pub fn of(pid: u32) -> Option<Proc> {
        // starttime is the 22nd field of stat, the 20th after the command name.
        let start = stat_fields(pid)?.get(19)?.parse().ok()?;
        Some(Proc { pid, start })
    }

    /// Whether it still runs: same pid, same start time, and not a zombie.
    pub fn alive(&self) -> bool {
        stat_fields(self.pid).is_some_and(|f| {
            f.get(19).and_then(|s| s.parse().ok()) == Some(self.start)
                && !matches!(f.first().map(String::as_str), Some("Z" | "X"))
        })
    }

    /// SIGKILL, if it still runs.
    pub fn kill(&self) {
        if self.alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Like [`wait_until`], polling every `every`: for conditions that are costly to check (a scan
/// of `/proc`), on a machine the measured processes share.
pub fn poll_until(
    what: &str,
    within: Duration,
    every: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(every);
    }
    Ok(())
}

/// Every process's children, by parent pid, from one scan of `/proc`.
pub fn process_tree() -> BTreeMap<u32, Vec<u32>> {
    let mut tree: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return tree;
    };
    for pid in entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        if let Some(ppid) = stat_fields(pid).and_then(|f| f.get(1)?.parse::<u32>().ok()) {
            tree.entry(ppid).or_default().push(pid);
        }
    }
    tree
}

/// Every descendant of `pid` in `tree`.
pub fn descendants(tree: &BTreeMap<u32, Vec<u32>>, pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    // Bounded: a pid appears once in a scan, so the walk ends; the cap guards a torn scan.
    while let Some(p) = next.pop() {
        for &child in tree.get(&p).map_or(&[][..], Vec::as_slice) {
            if found.len() < 100_000 && !found.contains(&child) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}
