//! `fdstore`: how long a client waits while its service restarts, when the service keeps its
//! connections in steward's fd store.
//!
//! Four clients each hold one TCP connection to `stored-echo` (the example service that
//! stores its listener and every connection) and send a line, wait for its echo, and send the
//! next, while `stewardctl restart` runs 60 times. The figure is, per restart and client, the
//! longest a request took when it overlapped the restart; no request may fail.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::util::{Ctx, Manager, Peer, Section, ms, percentile, wait_until};

const CLIENTS: usize = 4;
/// Restarts per supervisor: with four clients, the p99 of 240 gaps is their third slowest, not
/// (as with 20 restarts) the slowest but one.
const ROUNDS: usize = 60;
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
    let mut request = String::new();
    // Bounded: ~20 s of requests at well under 1 ms each.
    for i in 0..2_000_000u64 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        request.clear();
        writeln!(request, "{i}")?;
        let began = Instant::now();
        // One write, as a line-oriented client sends a line: `writeln!` on the socket itself
        // would send the number and its newline as two segments (nodelay).
        writer.write_all(request.as_bytes())?;
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

/// What one supervisor's run gave, each list sorted.
struct Figures {
    requests: usize,
    /// Per restart and client, the slowest request that overlapped the restart.
    gaps: Vec<Duration>,
    /// Every request that overlapped no restart.
    outside: Vec<Duration>,
    /// Each restart, from asking to being told the service is ready again.
    restarts: Vec<Duration>,
}

/// Runs the clients against `port` while `restart` restarts the service `ROUNDS` times.
fn measure(port: u16, mut restart: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Figures> {
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
        restart()?;
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
    let mut restarts: Vec<Duration> = windows.iter().map(|(a, b)| *b - *a).collect();
    gaps.sort();
    outside.sort();
    restarts.sort();
    Ok(Figures {
        requests: per_client.iter().map(Vec::len).sum(),
        gaps,
        outside,
        restarts,
    })
}

/// A free TCP port on loopback.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// steward, restarting `stored-echo` with `stewardctl restart`.
fn steward(ctx: &Ctx) -> anyhow::Result<Figures> {
    let port = free_port()?;
    let config = format!(
        "[service.echo]\nexec = [\"{}\", \"127.0.0.1:{port}\"]\nready = \"notify\"\n\
         keep_alive = true\nrestart_delay = \"0\"\nfd_store = 64\nstdio = \"null\"\n",
        ctx.bin("stored-echo").display()
    );
    let manager = Manager::start(ctx, "fdstore", &config, &[])?;
    // Waits until it is ready.
    manager.ctl(ctx, &["start", "echo"])?;
    measure(port, || manager.ctl(ctx, &["restart", "echo"]).map(drop))
}

/// The floor: the same service under `steward-floor-store` (`bench/floor/store.c`), the least
/// a supervisor keeping its fds can do: SIGTERM, waitpid, fork + exec with the stored fds.
fn floor(ctx: &Ctx) -> anyhow::Result<Figures> {
    let port = free_port()?;
    let dir = ctx.scratch("fdstore-floor")?;
    let notify = dir.join("notify");
    let control = dir.join("control");
    let echo = ctx.bin("stored-echo");
    let address = format!("127.0.0.1:{port}");
    let text = |p: &std::path::Path| p.to_str().map(str::to_owned).context("UTF-8 path");
    let peer = Peer::start(
        "steward-floor-store",
        &text(&ctx.bin("steward-floor-store"))?,
        &[&text(&notify)?, &text(&control)?, &text(&echo)?, &address],
    )?;
    // Ready once it answers; the probe's connection is stored and let go again.
    wait_until("the floor's stored-echo", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    let figures = measure(port, || {
        let mut told = [0u8; 1];
        std::os::unix::net::UnixStream::connect(&control)?.read_exact(&mut told)?;
        Ok(())
    });
    // Stopped (SIGTERM, waited for) before its sockets' directory goes.
    drop(peer);
    let _ = std::fs::remove_dir_all(&dir);
    figures
}

/// Runs the scenario; returns its section of the report.
pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let ours = steward(ctx)?;
    let least = floor(ctx)?;
    let p99 = |f: &Figures| percentile(&f.gaps, 99.0);
    println!(
        "fdstore: {} requests, 0 failed; gap across a restart p50 {}, p99 {}, max {}; floor p99 {}",
        ours.requests,
        ms(percentile(&ours.gaps, 50.0)),
        ms(p99(&ours)),
        ms(ours.gaps.last().copied().unwrap_or_default()),
        ms(p99(&least)),
    );
    let row = |what: &str, samples: &[Duration], bold: bool| {
        let p99 = ms(percentile(samples, 99.0));
        format!(
            "| {what} | {} | {} | {} |\n",
            ms(percentile(samples, 50.0)),
            if bold { format!("**{p99}**") } else { p99 },
            ms(samples.last().copied().unwrap_or_default())
        )
    };
    let markdown = format!(
        "## fd store: what a client waits across a service restart\n\n\
         {CLIENTS} clients, each on one TCP connection to `stored-echo` (the example service \
         that keeps its listener and every connection in the fd store, `fd_store = 64`), \
         sending a line, waiting for its echo and 0.5 ms more, while `stewardctl restart \
         echo` runs {ROUNDS} times. {} requests; none failed, no connection was \
         lost. The gap is, per restart and client, the slowest request that overlapped the \
         restart: the old process is stopped (SIGTERM), the new one spawned with the stored \
         fds and reads what was sent meanwhile.\n\n\
         The *floor* is the same service and clients under `steward-floor-store` \
         (`bench/floor/store.c`), the least a supervisor keeping the fds can do: it takes \
         the FDSTORE messages, and at each restart sends SIGTERM, waits for the exit and \
         starts the service again with fork + exec (one exec, from a process of a few \
         hundred KiB) with the stored fds; {} requests. Most of either gap is the service's \
         own stop and start (a dynamically linked Rust program that starts a thread per \
         connection).\n\n\
         | | p50 | p99 | max |\n|---|---|---|---|\n{}{}{}{}{}",
        ours.requests,
        least.requests,
        row("request, outside a restart", &ours.outside, false),
        row("gap across a restart, per client", &ours.gaps, true),
        row("`stewardctl restart` round trip", &ours.restarts, false),
        row(
            "*floor*: gap across a restart, per client",
            &least.gaps,
            false
        ),
        row("*floor*: restart round trip", &least.restarts, false),
    );
    let mut section = Section {
        markdown,
        ..Section::default()
    };
    section.figures.insert(
        "fdstore.gap_p99_ms".into(),
        p99(&ours).as_secs_f64() * 1000.0,
    );
    section.figures.insert(
        "fdstore.floor_gap_p99_ms".into(),
        p99(&least).as_secs_f64() * 1000.0,
    );
    Ok(section)
}
