//! `reexec`: how long a client waits while the manager re-executes itself.
//!
//! One client connects over and over to an accept-mode service (every connection needs the
//! manager: it accepts and spawns the instance), while `stewardctl reexec` runs 20 times. The
//! figure is the longest a connection took when it overlapped a reexec, against the same
//! client's latencies outside them.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::util::{Ctx, Manager, Section, ms, percentile};

const CONFIG: &str = r#"
[service.hi]
exec = ["/bin/echo", "hi"]
accept = true
stdio = "socket"
[[service.hi.socket]]
path = "@DIR@/hi.sock"
"#;

const ROUNDS: usize = 20;

/// One connection: when it began and how long it took.
type Sample = (Instant, Duration);

fn client(path: &Path, stop: &AtomicBool) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::new();
    let mut buf = [0u8; 64];
    // Bounded: ~20 s of connections at well under 1 ms each.
    for _ in 0..1_000_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let began = Instant::now();
        let mut stream = UnixStream::connect(path)?;
        let mut got = Vec::new();
        loop {
            match stream.read(&mut buf)? {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        if got != b"hi\n" {
            bail!("unexpected answer {:?}", String::from_utf8_lossy(&got));
        }
        samples.push((began, began.elapsed()));
    }
    Ok(samples)
}

/// Runs the scenario; returns its section of the report.
pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    println!("reexec: starting steward");
    let manager = Manager::start(ctx, "reexec", CONFIG, &[])?;
    let path = manager.dir.join("hi.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || client(&path, &stop))
    };
    std::thread::sleep(Duration::from_secs(1));
    let mut windows = Vec::new();
    for round in 1..=ROUNDS {
        let began = Instant::now();
        manager.ctl(ctx, &["reexec"])?;
        windows.push((began, Instant::now()));
        println!("reexec: round {round}/{ROUNDS}: {}", ms(began.elapsed()));
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let samples = match worker.join() {
        Ok(samples) => samples?,
        Err(_) => bail!("the client thread panicked"),
    };

    let overlaps = |(began, took): &Sample| {
        windows
            .iter()
            .any(|(from, to)| *began <= *to && *began + *took >= *from)
    };
    let mut during: Vec<Duration> = samples
        .iter()
        .filter(|s| overlaps(s))
        .map(|s| s.1)
        .collect();
    let mut outside: Vec<Duration> = samples
        .iter()
        .filter(|s| !overlaps(s))
        .map(|s| s.1)
        .collect();
    // Per reexec: the slowest connection that overlapped it.
    let mut per_round: Vec<Duration> = windows
        .iter()
        .map(|(from, to)| {
            samples
                .iter()
                .filter(|(began, took)| *began <= *to && *began + *took >= *from)
                .map(|s| s.1)
                .max()
                .unwrap_or_default()
        })
        .collect();
    per_round.sort();
    let mut round_trips: Vec<Duration> = windows.iter().map(|(a, b)| *b - *a).collect();
    during.sort();
    outside.sort();
    round_trips.sort();
    let longest = during.last().copied().unwrap_or_default();
    let markdown = format!(
        "## Reexec: the longest gap a client sees\n\n\
         One client connecting in a loop to an accept-mode service (`/bin/echo hi`, \
         `stdio = \"socket\"`) while `stewardctl reexec` runs {ROUNDS} times. \
         {} connections, {} of them overlapping a reexec; none failed.\n\n\
         | | p50 | p99 (p90 per reexec) | max |\n|---|---|---|---|\n\
         | connection, outside a reexec | {} | {} | {} |\n\
         | connection overlapping a reexec | {} | {} | **{}** |\n\
         | slowest overlapping connection, per reexec | {} | {} | {} |\n\
         | `stewardctl reexec` round trip | {} | {} | {} |\n",
        samples.len(),
        during.len(),
        ms(percentile(&outside, 50.0)),
        ms(percentile(&outside, 99.0)),
        ms(outside.last().copied().unwrap_or_default()),
        ms(percentile(&during, 50.0)),
        ms(percentile(&during, 99.0)),
        ms(longest),
        ms(percentile(&per_round, 50.0)),
        ms(percentile(&per_round, 90.0)),
        ms(per_round.last().copied().unwrap_or_default()),
        ms(percentile(&round_trips, 50.0)),
        ms(percentile(&round_trips, 99.0)),
        ms(round_trips.last().copied().unwrap_or_default()),
    );
    let mut section = Section {
        markdown,
        ..Section::default()
    };
    section.figures.insert(
        "reexec.p90_ms".into(),
        percentile(&per_round, 90.0).as_secs_f64() * 1000.0,
    );
    Ok(section)
}
