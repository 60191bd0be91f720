//! `accept` and `lazy`: per-connection spawning against s6-ipcserver, ucspi-unix's unixserver
//! and systemd-socket-activate; the cold first connection of a lazy service.
//!
//! Every tool runs the tiny static service with the connection as fds 0 and 1 (inetd style), on
//! a unix socket of its own, one tool at a time. Every reply is read to EOF and checked.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::plot;
use crate::util::{Ctx, Manager, Peer, Section, Stats, accepts, unix_listening, us, wait_until};

/// Accept mode, inetd style. `max_connections` well above the clients so that c=8 is not
/// throttled (64 is also the default).
const ACCEPT_CONFIG: &str = r#"
[service.tiny]
exec = ["@TINY@"]
accept = true
stdio = "socket"
max_connections = 64
[[service.tiny.socket]]
path = "@DIR@/steward.sock"
"#;

/// A lazy service that accepts one connection on fd 3, answers and exits; re-armed after.
const LAZY_CONFIG: &str = r#"
[service.lz]
exec = ["@TINY@", "accept"]
lazy = true
keep_alive = true
stdio = "null"
[[service.lz.socket]]
path = "@DIR@/lz.sock"
"#;

/// What steward logs each time the lazy service's process has come and gone.
const LZ_EXITED: &str = "lz: exited with status 0";

/// The peers' concurrency limits and backlog, raised to steward's (64 instances, backlog 128):
/// unixserver's default of 10 instances would be the limit otherwise, not the tool.
const MAX_CONN: &str = "64";
const BACKLOG: &str = "128";

/// The tools side by side: figure key, label in the report.
const TOOLS: [(&str, &str); 4] = [
    ("steward", "steward (accept mode)"),
    ("s6", "s6-ipcserver"),
    ("unixserver", "unixserver (ucspi-unix)"),
    ("systemd", "systemd-socket-activate --accept"),
];

const CONCURRENCY: [usize; 2] = [1, 8];

/// Connections one client thread makes at most in one measurement, whatever the clock says.
const MAX_PER_CLIENT: usize = 1_000_000;

/// A reply that does not come within this counts as a failure (and bounds a stuck client).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection: connect, read to EOF, expect exactly "x\n".
fn exchange(path: &Path) -> anyhow::Result<()> {
    let mut stream = UnixStream::connect(path).context("connect")?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut got = Vec::with_capacity(2);
    let mut buf = [0u8; 16];
    loop {
        match stream.read(&mut buf).context("read")? {
            0 => break,
            n => got.extend_from_slice(&buf[..n]),
        }
        // Bounded: the answer is two bytes; anything longer is wrong already.
        if got.len() > 64 {
            break;
        }
    }
    if got != b"x\n" {
        bail!("unexpected answer {:?}", String::from_utf8_lossy(&got));
    }
    Ok(())
}

/// What the clients of one measurement saw.
#[derive(Default)]
struct Tally {
    /// Latency of every connection answered correctly.
    samples: Vec<Duration>,
    failures: usize,
    /// The first failure, for the report.
    first_error: Option<String>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.samples.extend(other.samples);
        self.failures += other.failures;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// One client thread: connections back to back until `until`.
fn client(path: &Path, until: Instant) -> Tally {
    let mut tally = Tally::default();
    for _ in 0..MAX_PER_CLIENT {
        if Instant::now() >= until {
            break;
        }
        let began = Instant::now();
        match exchange(path) {
            Ok(()) => tally.samples.push(began.elapsed()),
            Err(e) => {
                tally.failures += 1;
                tally.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    tally
}

/// One tool at one concurrency.
struct Measured {
    conns_per_s: f64,
    stats: Stats,
    failures: usize,
    first_error: Option<String>,
}

/// `clients` threads connecting back to back for `window`.
fn measure(path: &Path, clients: usize, window: Duration) -> anyhow::Result<Measured> {
    let began = Instant::now();
    let until = began + window;
    let mut tally = Tally::default();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..clients)
            .map(|_| scope.spawn(|| client(path, until)))
            .collect();
        for worker in workers {
            match worker.join() {
                Ok(t) => tally.merge(t),
                Err(_) => bail!("a client thread panicked"),
            }
        }
        Ok(())
    })?;
    // Until the last reply: the clients stop starting connections at `until`, not mid-one.
    let elapsed = began.elapsed();
    Ok(Measured {
        conns_per_s: tally.samples.len() as f64 / elapsed.as_secs_f64(),
        stats: Stats::of(&tally.samples),
        failures: tally.failures,
        first_error: tally.first_error,
    })
}

/// Waits until the socket at `path` accepts (the probe spawns one instance, which finds its
/// client gone), then checks one whole exchange and warms up: the page cache, the tool's
/// first-connection paths.
fn ready(tool: &str, path: &Path) -> anyhow::Result<()> {
    wait_until(
        &format!("{tool} to listen on {}", path.display()),
        Duration::from_secs(10),
        || path.exists() && accepts(path),
    )?;
    exchange(path).with_context(|| format!("a first exchange with {tool}"))?;
    for _ in 0..20 {
        let _ = exchange(path);
    }
    Ok(())
}

/// Starts `tool` serving the tiny service on a socket of its own, measures it at each
/// concurrency, and stops it.
fn bench_tool(ctx: &Ctx, tool: &str, window: Duration) -> anyhow::Result<Vec<Measured>> {
    let tiny = ctx.tiny();
    let tiny = tiny.to_str().context("UTF-8 path")?;
    let run = |path: &Path| -> anyhow::Result<Vec<Measured>> {
        ready(tool, path)?;
        let mut results = Vec::new();
        for c in CONCURRENCY {
            let m = measure(path, c, window)?;
            println!(
                "accept: {tool} c={c}: {} connections, {:.0} conn/s, p50 {}, p99 {}, {} failures",
                m.stats.n,
                m.conns_per_s,
                us(m.stats.p50),
                us(m.stats.p99),
                m.failures
            );
            results.push(m);
        }
        Ok(results)
    };
    if tool == "steward" {
        // Stopped (SIGTERM, waited for) as this returns, before the next tool starts.
        let manager = Manager::start(ctx, "accept", ACCEPT_CONFIG, &[])?;
        return run(&manager.dir.join("steward.sock"));
    }
    let dir = ctx.scratch(&format!("accept-{tool}"))?;
    let path = dir.join(format!("{tool}.sock"));
    let sock = path.to_str().context("UTF-8 path")?;
    let (program, args): (&str, Vec<&str>) = match tool {
        "s6" => (
            "s6-ipcserver",
            vec!["-c", MAX_CONN, "-C", MAX_CONN, "-b", BACKLOG, sock, tiny],
        ),
        "unixserver" => (
            "unixserver",
            vec!["-c", MAX_CONN, "-b", BACKLOG, sock, tiny],
        ),
        "systemd" => (
            "systemd-socket-activate",
            vec!["--accept", "--inetd", "-l", sock, tiny],
        ),
        _ => bail!("unknown tool {tool}"),
    };
    let results = {
        // Stopped (SIGTERM, waited for) at the end of this block.
        let _peer = Peer::start(tool, program, &args)?;
        run(&path).with_context(|| format!("{program} {}", args.join(" ")))
    };
    let _ = std::fs::remove_dir_all(&dir);
    results
}

/// Accept throughput and latency at concurrency 1 and 8.
pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let window = if ctx.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    let mut section = Section::default();
    let mut rows = String::new();
    let mut errors = String::new();
    let mut groups = Vec::new();
    for (key, label) in TOOLS {
        let results = bench_tool(ctx, key, window).with_context(|| format!("accept: {label}"))?;
        let failures: usize = results.iter().map(|m| m.failures).sum();
        rows.push_str(&format!("| {label} |"));
        for (c, m) in CONCURRENCY.iter().zip(&results) {
            rows.push_str(&format!(
                " {:.0} | {} / {} |",
                m.conns_per_s,
                us(m.stats.p50),
                us(m.stats.p99)
            ));
            section
                .figures
                .insert(format!("accept.{key}.c{c}"), m.conns_per_s);
            if let Some(e) = &m.first_error {
                errors.push_str(&format!("- {label}, c={c}: {e}\n"));
            }
        }
        rows.push_str(&format!(" {failures} |\n"));
        groups.push((
            key.to_string(),
            results.iter().map(|m| m.conns_per_s).collect(),
        ));
    }
    for c in CONCURRENCY {
        let figure = |tool: &str| section.figures.get(&format!("accept.{tool}.c{c}")).copied();
        if let (Some(steward), Some(s6)) = (figure("steward"), figure("s6"))
            && s6 > 0.0
        {
            section
                .figures
                .insert(format!("accept.ratio_s6.c{c}"), steward / s6);
        }
    }
    plot::bars(
        &ctx.out.join("accept.svg"),
        "Accept: connections per second (unix socket, tiny service)",
        "connections/s",
        &["c=1", "c=8"],
        &groups,
    )?;
    let ratio = |c: usize| {
        section
            .figures
            .get(&format!("accept.ratio_s6.c{c}"))
            .map_or("–".to_string(), |r| format!("{r:.2}×"))
    };
    section.markdown = format!(
        "## Accept: one instance per connection\n\n\
         Each tool serves its own unix socket, one tool at a time, spawning the tiny static \
         service once per connection with the connection as its fds 0 and 1; it writes \"x\\n\" \
         and exits. Clients (1, then 8 threads) connect back to back for {} s each, read every \
         reply to EOF and check it is exactly \"x\\n\"; a wrong or missing reply is a failure. \
         Latency is connect to EOF. Concurrency limits are {MAX_CONN} instances everywhere \
         (steward's `max_connections`, `-c` for s6-ipcserver and unixserver; \
         systemd-socket-activate has none) and backlogs {BACKLOG} (systemd-socket-activate: its \
         own). steward ÷ s6-ipcserver: {} at c=1, {} at c=8. See `accept.svg`.\n\n\
         | tool | c=1 conn/s | c=1 p50 / p99 | c=8 conn/s | c=8 p50 / p99 | failures |\n\
         |---|---|---|---|---|---|\n{rows}{}",
        window.as_secs(),
        ratio(1),
        ratio(8),
        if errors.is_empty() {
            String::new()
        } else {
            format!("\nFirst failure of each run that had any:\n\n{errors}")
        }
    );
    Ok(section)
}

/// Samples of the lazy scenario, and the connections that failed.
#[derive(Default)]
struct Cold {
    samples: Vec<Duration>,
    failures: usize,
}

impl Cold {
    fn record(&mut self, began: Instant, result: anyhow::Result<()>, who: &str) {
        match result {
            Ok(()) => self.samples.push(began.elapsed()),
            Err(e) => {
                self.failures += 1;
                println!("lazy: {who}: a connection failed: {e:#}");
            }
        }
    }
}

/// Before each cold connection: let the listener settle into its wait, as a real idle service's
/// listener would be.
const SETTLE: Duration = Duration::from_millis(20);

/// steward: one lazy service; each connection is made once the previous process has exited.
fn lazy_steward(ctx: &Ctx, rounds: usize) -> anyhow::Result<Cold> {
    let manager = Manager::start(ctx, "lazy", LAZY_CONFIG, &[])?;
    manager.wait_for("lz: listening")?;
    let path = manager.dir.join("lz.sock");
    let mut cold = Cold::default();
    // Round 0 warms the page cache (executor, tiny) and is not counted: "cold" here means the
    // service is not running, not that the disk is.
    for round in 0..=rounds {
        let exits = manager.count(LZ_EXITED);
        std::thread::sleep(SETTLE);
        let began = Instant::now();
        let result = exchange(&path);
        if round > 0 {
            cold.record(began, result, "steward");
        }
        // The next connection must find the service gone again, not still running.
        manager.wait_for_nth(LZ_EXITED, exits + 1, Duration::from_secs(10))?;
    }
    Ok(cold)
}

/// systemd-socket-activate without `--accept`: started fresh for every connection; it waits for
/// the first one, then execs the service with the listener as fd 3.
fn lazy_systemd(ctx: &Ctx, rounds: usize) -> anyhow::Result<Cold> {
    let dir = ctx.scratch("lazy-systemd")?;
    let path: PathBuf = dir.join("lz.sock");
    let sock = path.to_str().context("UTF-8 path")?.to_string();
    let tiny = ctx.tiny();
    let tiny = tiny.to_str().context("UTF-8 path")?;
    let args = ["-l", sock.as_str(), tiny, "accept"];
    let mut cold = Cold::default();
    for round in 0..=rounds {
        // The previous round's socket file stays behind when the service exits.
        let _ = std::fs::remove_file(&path);
        let peer = Peer::start("systemd-socket-activate", "systemd-socket-activate", &args)?;
        // Not a probe connection: it would be the first one, and consume the listener.
        wait_until(
            "systemd-socket-activate to listen",
            Duration::from_secs(10),
            || unix_listening(&path),
        )?;
        std::thread::sleep(SETTLE);
        let began = Instant::now();
        let result = exchange(&path);
        let answered = result.is_ok();
        if round > 0 {
            cold.record(began, result, "systemd-socket-activate");
        }
        if answered {
            // It has written its answer, and exits right after: this wait is short.
            peer.wait()?;
        } else {
            // The drop stops it.
            drop(peer);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(cold)
}

/// Lazy first-connection latency, cold.
pub fn lazy(ctx: &Ctx) -> anyhow::Result<Section> {
    let rounds = if ctx.quick { 10 } else { 50 };
    let steward = lazy_steward(ctx, rounds).context("lazy: steward")?;
    let s = Stats::of(&steward.samples);
    println!(
        "lazy: steward: p50 {}, p99 {}, max {}",
        us(s.p50),
        us(s.p99),
        us(s.max)
    );
    let systemd = lazy_systemd(ctx, rounds).context("lazy: systemd-socket-activate")?;
    let d = Stats::of(&systemd.samples);
    println!(
        "lazy: systemd-socket-activate: p50 {}, p99 {}, max {}",
        us(d.p50),
        us(d.p99),
        us(d.max)
    );
    let mut section = Section {
        markdown: format!(
            "## Lazy: the first connection, cold\n\n\
             Connect and read the reply (\"x\\n\") while the service is not running, \
             {rounds} times each (after one uncounted round that warms the page cache). \
             steward: one `lazy = true`, `keep_alive = true` service, the tiny one in `accept` \
             mode (it accepts one connection on fd 3, answers, exits); each connection waits \
             until steward has logged the previous process's exit. \
             systemd-socket-activate: `systemd-socket-activate -l PATH steward-tiny accept` \
             started fresh each round, measured once `/proc/net/unix` shows it listening; \
             it execs the service on the first connection. Both listeners get \
             {} ms to settle before each connection.\n\n\
             | | p50 | p99 | max | failures |\n|---|---|---|---|---|\n\
             | steward | **{}** | {} | {} | {} |\n\
             | systemd-socket-activate | {} | {} | {} | {} |\n",
            SETTLE.as_millis(),
            us(s.p50),
            us(s.p99),
            us(s.max),
            steward.failures,
            us(d.p50),
            us(d.p99),
            us(d.max),
            systemd.failures,
        ),
        ..Section::default()
    };
    section
        .figures
        .insert("lazy.steward.p50_us".into(), s.p50.as_secs_f64() * 1e6);
    section
        .figures
        .insert("lazy.systemd.p50_us".into(), d.p50.as_secs_f64() * 1e6);
    if !d.p50.is_zero() {
        let ratio = s.p50.as_secs_f64() / d.p50.as_secs_f64();
        section.markdown.push_str(&format!(
            "\nsteward ÷ systemd-socket-activate, p50: {ratio:.2}×.\n"
        ));
        section.figures.insert("lazy.ratio_systemd".into(), ratio);
    }
    Ok(section)
}
