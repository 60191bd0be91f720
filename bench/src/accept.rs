//! `accept` and `lazy`: per-connection spawning against s6-ipcserver, ucspi-unix's unixserver
//! and systemd-socket-activate, against the floor of the design (`bench/floor/`), and with a
//! 4 GiB manager against a forking server as large; the cold first connection of a lazy service.
//!
//! Every tool runs the tiny static service with the connection as fds 0 and 1 (inetd style), on
//! a unix socket of its own, one tool at a time. Every reply is read to EOF and checked.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::plot;
use crate::util::{
    Ctx, Manager, Peer, Section, Stats, accepts, children, unix_listening, us, wait_until,
};

/// Accept mode, inetd style. `max_connections` well above the clients so that c=32 is not
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
const TOOLS: [(&str, &str); 6] = [
    ("steward", "steward (accept mode)"),
    ("s6", "s6-ipcserver"),
    ("unixserver", "unixserver (ucspi-unix)"),
    ("systemd", "systemd-socket-activate --accept"),
    ("floor_spawn", "*floor-spawn* (C: accept4 + posix_spawn)"),
    (
        "floor_two_exec",
        "*floor-two-exec* (C: posix_spawn of an exec-only stub)",
    ),
];

const CONCURRENCY: [usize; 3] = [1, 8, 32];

/// The large servers: steward's manager (`STEWARD_BENCH_BALLAST`) and a forking accept server
/// each holding this much touched memory, to show what fork costs at that size against the
/// split.
const BALLAST: &str = "4G";
/// The same, as `steward-floor` takes it.
const BALLAST_MIB: &str = "4096";
const BALLAST_TOOLS: [(&str, &str); 2] = [
    ("steward_4g", "steward (accept mode), manager holding 4 GiB"),
    (
        "floor_fork_4g",
        "*floor-fork* (C: accept4 + fork + exec), holding 4 GiB",
    ),
];
const BALLAST_CONCURRENCY: [usize; 2] = [1, 8];

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
        // Generous: a server holding a ballast touches all of it first (4 GiB took over 10 s
        // once, right after the last one that size had exited and was still giving it back).
        Duration::from_secs(60),
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
fn bench_tool(
    ctx: &Ctx,
    tool: &str,
    concurrency: &[usize],
    window: Duration,
) -> anyhow::Result<Vec<Measured>> {
    let tiny = ctx.tiny();
    let tiny = tiny.to_str().context("UTF-8 path")?;
    let floor = ctx.bin("steward-floor");
    let floor = floor.to_str().context("UTF-8 path")?;
    let stub = ctx.bin("steward-floor-stub");
    let stub = stub.to_str().context("UTF-8 path")?;
    let run = |path: &Path| -> anyhow::Result<Vec<Measured>> {
        ready(tool, path)?;
        let mut results = Vec::new();
        for &c in concurrency {
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
    if tool == "steward" || tool == "steward_4g" {
        let env: &[(&str, &str)] = if tool == "steward_4g" {
            &[("STEWARD_BENCH_BALLAST", BALLAST)]
        } else {
            &[]
        };
        // Stopped (SIGTERM, waited for) as this returns, before the next tool starts.
        let manager = Manager::start(ctx, "accept", ACCEPT_CONFIG, env)?;
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
        "floor_spawn" => (floor, vec!["spawn", "0", sock, tiny]),
        "floor_two_exec" => (floor, vec!["spawn", "0", sock, stub, tiny]),
        "floor_fork_4g" => (floor, vec!["fork", BALLAST_MIB, sock, tiny]),
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

/// One tool's conn/s at each concurrency, for the plot.
type Group = (String, Vec<f64>);

/// Measurements per tool, then per concurrency.
type Results = Vec<Vec<Measured>>;

/// One round: every tool of `tools`, one after the other, at each of `concurrency`.
fn round(
    ctx: &Ctx,
    tools: &[(&str, &str)],
    concurrency: &[usize],
    window: Duration,
) -> anyhow::Result<Results> {
    tools
        .iter()
        .map(|&(key, label)| {
            bench_tool(ctx, key, concurrency, window).with_context(|| format!("accept: {label}"))
        })
        .collect()
}

/// Of several rounds, per tool and concurrency, the one with the median conn/s, carrying the
/// failures of every round.
fn median_round(rounds: Vec<Results>) -> Results {
    let mut per_tool: Vec<Vec<Vec<Measured>>> = Vec::new();
    for results in rounds {
        for (t, per_c) in results.into_iter().enumerate() {
            if per_tool.len() <= t {
                per_tool.push(Vec::new());
            }
            for (c, m) in per_c.into_iter().enumerate() {
                if per_tool[t].len() <= c {
                    per_tool[t].push(Vec::new());
                }
                per_tool[t][c].push(m);
            }
        }
    }
    per_tool
        .into_iter()
        .map(|per_c| {
            per_c
                .into_iter()
                .map(|mut all| {
                    let failures = all.iter().map(|m| m.failures).sum();
                    let first_error = all.iter().find_map(|m| m.first_error.clone());
                    all.sort_by(|a, b| a.conns_per_s.total_cmp(&b.conns_per_s));
                    let mid = all.len() / 2;
                    let mut m = all.swap_remove(mid);
                    m.failures = failures;
                    m.first_error = first_error;
                    m
                })
                .collect()
        })
        .collect()
}

/// One table row per tool: conn/s and latency at each of `concurrency`, failures; the
/// figures go to `section` as `accept.KEY.cC`.
fn table_rows(
    tools: &[(&str, &str)],
    concurrency: &[usize],
    measured: &Results,
    section: &mut Section,
    errors: &mut String,
) -> (String, Vec<Group>) {
    let mut rows = String::new();
    let mut groups = Vec::new();
    for (&(key, label), results) in tools.iter().zip(measured) {
        let failures: usize = results.iter().map(|m| m.failures).sum();
        rows.push_str(&format!("| {label} |"));
        for (&c, m) in concurrency.iter().zip(results) {
            rows.push_str(&format!(
                " {:.0} | {} / {} |",
                m.conns_per_s,
                us(m.stats.p50),
                us(m.stats.p99)
            ));
            section
                .figures
                .insert(format!("accept.{key}.c{c}"), m.conns_per_s);
            for (what, d) in [("p50", m.stats.p50), ("p99", m.stats.p99)] {
                section.figures.insert(
                    format!("accept.{key}.c{c}.{what}_us"),
                    d.as_secs_f64() * 1e6,
                );
            }
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
    (rows, groups)
}

/// Inserts `accept.NAME.cC` = tool ÷ base in conn/s at each concurrency both were measured at.
fn ratios(section: &mut Section, name: &str, tool: &str, base: &str) {
    for c in CONCURRENCY {
        let figure = |t: &str| section.figures.get(&format!("accept.{t}.c{c}")).copied();
        if let (Some(a), Some(b)) = (figure(tool), figure(base))
            && b > 0.0
        {
            section.figures.insert(format!("accept.{name}.c{c}"), a / b);
        }
    }
}

/// `accept.NAME.cC` at each of `concurrency`, as "1.23× at c=1, …".
fn ratio_text(section: &Section, name: &str, concurrency: &[usize]) -> String {
    concurrency
        .iter()
        .map(|c| {
            let r = section
                .figures
                .get(&format!("accept.{name}.c{c}"))
                .map_or("–".to_string(), |r| format!("{r:.2}×"));
            format!("{r} at c={c}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table's header: one pair of columns per concurrency.
fn header(concurrency: &[usize]) -> String {
    let mut head = String::from("| tool |");
    let mut rule = String::from("|---|");
    for c in concurrency {
        head.push_str(&format!(" c={c} conn/s | c={c} p50 / p99 |"));
        rule.push_str("---|---|");
    }
    format!("{head} failures |\n{rule}---|\n")
}

/// Accept throughput and latency at each concurrency, then the 4 GiB servers.
pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let window = Duration::from_secs(1);
    let rounds = if ctx.quick { 1 } else { 3 };
    let (mut plain, mut large) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        plain.push(round(ctx, &TOOLS, &CONCURRENCY, window)?);
        large.push(round(ctx, &BALLAST_TOOLS, &BALLAST_CONCURRENCY, window)?);
    }
    let mut section = Section::default();
    let mut errors = String::new();
    let (rows, groups) = table_rows(
        &TOOLS,
        &CONCURRENCY,
        &median_round(plain),
        &mut section,
        &mut errors,
    );
    let (ballast_rows, _) = table_rows(
        &BALLAST_TOOLS,
        &BALLAST_CONCURRENCY,
        &median_round(large),
        &mut section,
        &mut errors,
    );
    ratios(&mut section, "ratio_s6", "steward", "s6");
    ratios(&mut section, "floor_spawn.ratio_s6", "floor_spawn", "s6");
    ratios(
        &mut section,
        "floor_two_exec.ratio_s6",
        "floor_two_exec",
        "s6",
    );
    ratios(
        &mut section,
        "ratio_floor_two_exec",
        "steward",
        "floor_two_exec",
    );
    ratios(&mut section, "ratio_s6_4g", "steward_4g", "s6");
    ratios(&mut section, "ratio_fork_4g", "steward_4g", "floor_fork_4g");
    let labels: Vec<String> = CONCURRENCY.iter().map(|c| format!("c={c}")).collect();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    plot::bars(
        &ctx.out.join("accept.svg"),
        "Accept: connections per second (unix socket, tiny service)",
        "connections/s",
        &labels,
        &groups,
    )?;
    // The peers without ballast again, from the table above, for reading side by side.
    let again = |label: &str, key: &str| {
        let mut row = format!("| {label}, no ballast (from above) |");
        for c in BALLAST_CONCURRENCY {
            let figure = |what: &str| section.figures.get(&format!("accept.{key}.c{c}{what}"));
            match (figure(""), figure(".p50_us"), figure(".p99_us")) {
                (Some(n), Some(p50), Some(p99)) => {
                    row.push_str(&format!(" {n:.0} | {p50:.0} µs / {p99:.0} µs |"))
                }
                _ => row.push_str(" – | – |"),
            }
        }
        row.push_str(" |\n");
        row
    };
    let ballast_peers = again("s6-ipcserver", "s6") + &again("steward (accept mode)", "steward");
    section.markdown = format!(
        "## Accept: one instance per connection\n\n\
         Each tool serves its own unix socket, one tool at a time, spawning the tiny static \
         service once per connection with the connection as its fds 0 and 1; it writes \"x\\n\" \
         and exits. Clients ({conc} threads) connect back to back for {secs} s each, read every \
         reply to EOF and check it is exactly \"x\\n\"; a wrong or missing reply is a failure. \
         Latency is connect to EOF. {rounds_text}Concurrency limits are {MAX_CONN} instances \
         everywhere (steward's `max_connections`, `-c` for s6-ipcserver and unixserver, the \
         floor servers' own; systemd-socket-activate has none) and backlogs {BACKLOG} \
         (systemd-socket-activate: its own). See `accept.svg`.\n\n\
         The *floor* rows are the least each design can do, written in C for this benchmark \
         (`bench/floor/`, built by `make release`): *floor-spawn* is an accept loop that \
         posix_spawns (glibc: clone with CLONE_VM|CLONE_VFORK) the tiny service with the \
         connection dup2'd to fds 0 and 1 and reaps with waitpid(WNOHANG): one exec per \
         connection, the floor of any spawning accept server. *floor-two-exec* is the same \
         loop spawning a static, libc-free stub that only execs the tiny service: two execs \
         per connection, steward's manager/executor split without any of either's work.\n\n\
         steward ÷ s6-ipcserver: **{r_s6}**. \
         floor-spawn ÷ s6-ipcserver: {r_fs}. \
         floor-two-exec ÷ s6-ipcserver: {r_f2}. \
         steward ÷ floor-two-exec: {r_sf}.\n\n\
         {head}{rows}\n\
         ### With a 4 GiB server\n\n\
         The same measurement at c=1 and c=8 with steward's manager holding 4 GiB of \
         touched memory (`STEWARD_BENCH_BALLAST={BALLAST}`), beside *floor-fork*: the C accept \
         loop above holding as much touched memory (transparent huge pages as the system \
         sets them) and starting each instance with fork + dup2 + execve, the classic inetd \
         way, whose every fork copies the page tables of those 4 GiB. \
         s6-ipcserver's and steward's figures without ballast are those of the table above, \
         from the same run.\n\n\
         steward (4 GiB) ÷ s6-ipcserver: **{r_s6_4g}**. \
         steward (4 GiB) ÷ floor-fork (4 GiB): {r_fork}.\n\n\
         {ballast_head}{ballast_rows}{ballast_peers}{}",
        if errors.is_empty() {
            String::new()
        } else {
            format!("\nFirst failure of each run that had any:\n\n{errors}")
        },
        conc = CONCURRENCY
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", then "),
        secs = window.as_secs(),
        rounds_text = if rounds > 1 {
            format!(
                "The whole measurement is made {rounds} times, the tools taking turns, so that \
                 a burst of other work on the machine falls on one round of several tools \
                 rather than on one tool; each figure is the round with the median conn/s \
                 (failures: all rounds). "
            )
        } else {
            String::new()
        },
        r_s6 = ratio_text(&section, "ratio_s6", &CONCURRENCY),
        r_fs = ratio_text(&section, "floor_spawn.ratio_s6", &CONCURRENCY),
        r_f2 = ratio_text(&section, "floor_two_exec.ratio_s6", &CONCURRENCY),
        r_sf = ratio_text(&section, "ratio_floor_two_exec", &CONCURRENCY),
        r_s6_4g = ratio_text(&section, "ratio_s6_4g", &BALLAST_CONCURRENCY),
        r_fork = ratio_text(&section, "ratio_fork_4g", &BALLAST_CONCURRENCY),
        head = header(&CONCURRENCY),
        ballast_head = header(&BALLAST_CONCURRENCY),
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

/// The floor of steward's lazy path (`bench/floor/`): a C server polls the listener and, once
/// it is readable, posix_spawns the exec-only stub, which execs the tiny service with the
/// listener as fd 3; each connection waits until that process has exited.
fn lazy_floor(ctx: &Ctx, rounds: usize) -> anyhow::Result<Cold> {
    let dir = ctx.scratch("lazy-floor")?;
    let path: PathBuf = dir.join("lz.sock");
    let sock = path.to_str().context("UTF-8 path")?;
    let (floor, stub, tiny) = (
        ctx.bin("steward-floor"),
        ctx.bin("steward-floor-stub"),
        ctx.tiny(),
    );
    let (floor, stub, tiny) = (
        floor.to_str().context("UTF-8 path")?,
        stub.to_str().context("UTF-8 path")?,
        tiny.to_str().context("UTF-8 path")?,
    );
    let peer = Peer::start(
        "floor-lazy",
        floor,
        &["lazy", "0", sock, stub, tiny, "accept"],
    )?;
    wait_until("floor-lazy to listen", Duration::from_secs(10), || {
        unix_listening(&path)
    })?;
    let mut cold = Cold::default();
    for round in 0..=rounds {
        std::thread::sleep(SETTLE);
        let began = Instant::now();
        let result = exchange(&path);
        if round > 0 {
            cold.record(began, result, "floor-lazy");
        }
        wait_until(
            "the floor's service to exit",
            Duration::from_secs(10),
            || children(peer.pid()).is_empty(),
        )?;
    }
    drop(peer);
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
    let floor = lazy_floor(ctx, rounds).context("lazy: floor")?;
    let f = Stats::of(&floor.samples);
    println!(
        "lazy: floor (C, two execs): p50 {}, p99 {}, max {}",
        us(f.p50),
        us(f.p99),
        us(f.max)
    );
    let mut section = Section {
        markdown: format!(
            "## Lazy: the first connection, cold\n\n\
             Connect and read the reply (\"x\\n\") while the service is not running, \
             {rounds} times each (after one uncounted round that warms the page cache). \
             steward: one `lazy = true`, `keep_alive = true` service, the tiny one in `accept` \
             mode (it accepts one connection on fd 3, answers, exits); each connection waits \
             until steward has logged the previous process's exit. Its idle executor is armed \
             meanwhile: it holds the next process's spawn state and the socket, wakes when a \
             client waits and execs the service, so the manager is not on the path. \
             systemd-socket-activate: `systemd-socket-activate -l PATH steward-tiny accept` \
             started fresh each round, measured once `/proc/net/unix` shows it listening; \
             it execs the service on the first connection. *floor*: the least steward's \
             design can do, in C (`bench/floor/`): a server polls the listener and, once it is \
             readable, posix_spawns a static stub that only execs the tiny service (two execs, \
             as manager → executor → service), with the listener as fd 3; each connection \
             waits until that process has exited. All listeners get \
             {} ms to settle before each connection.\n\n\
             | | p50 | p99 | max | failures |\n|---|---|---|---|---|\n\
             | steward | **{}** | {} | {} | {} |\n\
             | systemd-socket-activate | {} | {} | {} | {} |\n\
             | *floor* (C: poll + posix_spawn of an exec-only stub) | {} | {} | {} | {} |\n",
            SETTLE.as_millis(),
            us(s.p50),
            us(s.p99),
            us(s.max),
            steward.failures,
            us(d.p50),
            us(d.p99),
            us(d.max),
            systemd.failures,
            us(f.p50),
            us(f.p99),
            us(f.max),
            floor.failures,
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
            "\nsteward ÷ systemd-socket-activate, p50: {ratio:.2}×; the floor ÷ \
             systemd-socket-activate: {:.2}×.\n",
            f.p50.as_secs_f64() / d.p50.as_secs_f64()
        ));
        section.figures.insert("lazy.ratio_systemd".into(), ratio);
        section.figures.insert(
            "lazy.floor_ratio".into(),
            f.p50.as_secs_f64() / d.p50.as_secs_f64(),
        );
    }
    Ok(section)
}
