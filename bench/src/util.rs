//! What every scenario needs: a steward on a config of its own, and percentiles.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// A steward started for a scenario; stopped (SIGTERM) when dropped.
pub struct Manager {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Its temp dir: config, control socket, service sockets.
    pub dir: PathBuf,
}

impl Manager {
    /// Starts `steward` from `bin_dir` on `config` (`@DIR@` is the scenario's directory) and
    /// waits until it serves.
    pub fn start(bin_dir: &Path, name: &str, config: &str) -> anyhow::Result<Manager> {
        let dir = std::env::temp_dir().join(format!("steward-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("steward.toml");
        std::fs::write(
            &path,
            config.replace("@DIR@", dir.to_str().context("UTF-8 temp dir")?),
        )?;
        let mut child = Command::new(bin_dir.join("steward"))
            .arg("--config")
            .arg(&path)
            .arg("--control")
            .arg(dir.join("control"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting steward")?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let manager = Manager { child, lines, dir };
        manager.wait_for("version")?;
        Ok(manager)
    }

    /// Waits (up to 20 s) for a log line containing `needle`.
    pub fn wait_for(&self, needle: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => bail!("steward did not log {needle:?} in time"),
            }
        }
    }

    /// Runs `stewardctl` against it; fails unless it exits 0.
    pub fn ctl(&self, bin_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(bin_dir.join("stewardctl"))
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
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
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
