//! `fdstore`: how long a client waits while its service restarts, when the service keeps its
//! connections in steward's fd store.
//!
//! Four clients each hold one TCP connection to `stored-echo` (the example service that
//! stores its listener and every connection) and send a line, wait for its echo, and send the
//! next, while `stewardctl restart` runs 20 times. The figure is, per restart and client, the
//! longest a request took when it overlapped the restart; no request may fail.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::util::{Ctx, Manager, Section, ms, percentile};

const CLIENTS: usize = 4;
const ROUNDS: usize = 20;
/// Between one answer and the next request.
const PACE: Duration = Duration::from_micros(500);

/// One request: when it was sent and how long its answer took.
type Sample = (Instant, Duration);

fn client(port: u16, stop: &AtomicBool) -> anyhow::Result<Vec<Sample>> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut samples = Vec::new();
    let mut line = String::new();
    // Bounded: ~20 s of requests at well under 1 ms each.
    for i in 0..2_000_000u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let began = Instant::now();
        writeln!(writer, "{i}")?;
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the connection was closed after {i} requests");
        }
        if !line.trim_end().ends_with(&format!(": {i}")) {
            bail!("request {i} got {line:?}");
        }
        samples.push((began, began.elapsed()));
        // Paced, not back to back: eight busy clients on two cores would measure the CPU they
        // take from the restarting service, not the restart.
        std::thread::sleep(PACE);
    }
    Ok(samples)
}

/// Runs the scenario; returns its section of the report.
pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = format!(
        "[service.echo]\nexec = [\"{}\", \"127.0.0.1:{port}\"]\nready = \"notify\"\n\
         keep_alive = true\nrestart_delay = \"0\"\nfd_store = 64\nstdio = \"null\"\n",
        ctx.bin("stored-echo").display()
    );
    let manager = Manager::start(ctx, "fdstore", &config, &[])?;
    // Waits until it is ready.
    manager.ctl(ctx, &["start", "echo"])?;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || client(port, &stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut windows = Vec::new();
    for _ in 0..ROUNDS {
        let began = Instant::now();
        manager.ctl(ctx, &["restart", "echo"])?;
        windows.push((began, Instant::now()));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let mut per_client = Vec::new();
    for worker in workers {
        match worker.join() {
            Ok(samples) => per_client.push(samples.context("a client failed")?),
            Err(_) => bail!("a client thread panicked"),
        }
    }
    let overlaps = |(began, took): &Sample, (from, to): &(Instant, Instant)| {
        *began <= *to && *began + *took >= *from
    };
    // Per restart and client: the slowest request that overlapped the restart.
    let mut gaps: Vec<Duration> = Vec::new();
    for window in &windows {
        for samples in &per_client {
            if let Some(worst) = samples
                .iter()
                .filter(|s| overlaps(s, window))
                .map(|s| s.1)
                .max()
            {
                gaps.push(worst);
            }
        }
    }
    let mut outside: Vec<Duration> = per_client
        .iter()
        .flatten()
        .filter(|s| !windows.iter().any(|w| overlaps(s, w)))
        .map(|s| s.1)
        .collect();
    let requests: usize = per_client.iter().map(Vec::len).sum();
    gaps.sort();
    outside.sort();
    let mut restarts: Vec<Duration> = windows.iter().map(|(a, b)| *b - *a).collect();
    restarts.sort();
    println!(
        "fdstore: {requests} requests, 0 failed; gap across a restart p50 {}, p99 {}, max {}",
        ms(percentile(&gaps, 50.0)),
        ms(percentile(&gaps, 99.0)),
        ms(gaps.last().copied().unwrap_or_default())
    );
    let markdown = format!(
        "## fd store: what a client waits across a service restart\n\n\
         {CLIENTS} clients, each on one TCP connection to `stored-echo` (the example service \
         that keeps its listener and every connection in the fd store, `fd_store = 64`), \
         sending a line, waiting for its echo and 0.5 ms more, while `stewardctl restart \
         echo` runs {ROUNDS} times. {requests} requests; none failed, no connection was \
         lost. The gap is, per restart and client, the slowest request that overlapped the \
         restart: the old process is stopped (SIGTERM), the new one spawned with the stored \
         fds and reads what was sent meanwhile.\n\n\
         | | p50 | p99 | max |\n|---|---|---|---|\n\
         | request, outside a restart | {} | {} | {} |\n\
         | gap across a restart, per client | {} | **{}** | {} |\n\
         | `stewardctl restart` round trip | {} | {} | {} |\n",
        ms(percentile(&outside, 50.0)),
        ms(percentile(&outside, 99.0)),
        ms(outside.last().copied().unwrap_or_default()),
        ms(percentile(&gaps, 50.0)),
        ms(percentile(&gaps, 99.0)),
        ms(gaps.last().copied().unwrap_or_default()),
        ms(percentile(&restarts, 50.0)),
        ms(percentile(&restarts, 99.0)),
        ms(restarts.last().copied().unwrap_or_default()),
    );
    let mut section = Section {
        markdown,
        ..Section::default()
    };
    section.figures.insert(
        "fdstore.gap_p99_ms".into(),
        percentile(&gaps, 99.0).as_secs_f64() * 1000.0,
    );
    Ok(section)
}
