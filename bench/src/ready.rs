//! `ready`: readiness and boot order. How long a dependent waits once what it requires said
//! `READY=1` (the tiny service stamps CLOCK_MONOTONIC when it sends it, its dependent when it
//! is exec'd), and how long a boot graph takes against the sum of its critical path.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::util::{Ctx, Manager, Section, Stats, ms, us};

const PAIR: &str = r#"
[service.db]
exec = ["@TINY@", "notify"]
ready = "notify"
stdio = "@DIR@/db.out"
autostart = false

[service.app]
exec = ["@TINY@", "stamp"]
requires = ["db"]
stdio = "@DIR@/app.out"
autostart = false
"#;

/// The issue's boot graph with fixed work: setup (100 ms) → mount (100 ms) → a notify database
/// (200 ms) → two apps; a lazy service one app is after; two independent ones.
const GRAPH: &str = r#"
[service.setup]
exec = ["@TINY@", "sleep-exit", "100"]
ready = "exit"
autostart = false
stdio = "null"

[service.mount]
exec = ["@TINY@", "sleep-exit", "100"]
ready = "exit"
requires = ["setup"]
autostart = false
stdio = "null"

[service.db]
exec = ["@TINY@", "sleep-notify", "200"]
ready = "notify"
requires = ["mount"]
autostart = false
stdio = "null"

[service.app1]
exec = ["@TINY@", "pause"]
requires = ["db"]
after = ["cache"]
autostart = false
stdio = "null"

[service.app2]
exec = ["@TINY@", "pause"]
requires = ["db"]
autostart = false
stdio = "null"

[service.cache]
exec = ["@TINY@", "accept"]
lazy = true
keep_alive = true
autostart = false
stdio = "null"
[[service.cache.socket]]
path = "@DIR@/cache.sock"

[service.solo1]
exec = ["@TINY@", "pause"]
autostart = false
stdio = "null"

[service.solo2]
exec = ["@TINY@", "pause"]
autostart = false
stdio = "null"
"#;

/// A service with a watchdog that pings as fast as the notify socket takes it.
const PINGER: &str = r#"
[service.pinger]
exec = ["@TINY@", "ping", "@PINGS@"]
ready = "notify"
watchdog = "1h"
stdio = "null"
autostart = false
"#;

/// The CPU time `pid` has used: all of it, from /proc/PID/schedstat (ns), and in user mode,
/// from /proc/PID/stat (clock ticks of 10 ms).
fn cpu(pid: u32) -> anyhow::Result<(Duration, Duration)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))?;
    let all = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .context("no CPU time in schedstat")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks: u64 = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(11)?.parse().ok())
        .context("no utime in stat")?;
    Ok((Duration::from_nanos(all), Duration::from_millis(ticks * 10)))
}

/// The manager's CPU time (all, user mode) for a run of the pinger sending `pings` pings,
/// from its start to the moment the manager has read its last message.
fn pinger_cpu(ctx: &Ctx, pings: u64) -> anyhow::Result<(Duration, Duration)> {
    let config = PINGER.replace("@PINGS@", &pings.to_string());
    let manager = Manager::start(ctx, "ping", &config, &[])?;
    let before = cpu(manager.pid())?;
    manager.ctl(ctx, &["start", "--no-block", "pinger"])?;
    // Asked rarely: each question costs the manager CPU of its own.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !manager
        .ctl(ctx, &["--json", "status", "pinger"])
        .is_ok_and(|out| out.contains("\"pinged\""))
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pinger never said it was done"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = cpu(manager.pid())?;
    Ok((
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
    ))
}

/// The critical path of [`GRAPH`]: setup, then mount, then the database's warm-up.
const CRITICAL: Duration = Duration::from_millis(400);

/// The last number in a file the tiny service wrote its stamps to.
fn last_stamp(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no stamp in {}", path.display()))
}

/// Runs the scenario.
pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let rounds = if ctx.quick { 10 } else { 50 };
    let manager = Manager::start(ctx, "ready", PAIR, &[])?;
    let mut gaps = Vec::new();
    for _ in 0..rounds {
        manager.ctl(ctx, &["start", "app"])?;
        let ready = last_stamp(&manager.dir.join("db.out"))?;
        let exec = last_stamp(&manager.dir.join("app.out"))?;
        gaps.push(Duration::from_nanos(exec.saturating_sub(ready)));
        manager.ctl(ctx, &["stop", "db"])?;
    }
    drop(manager);
    let gap = Stats::of(&gaps);
    println!(
        "ready: READY=1 → dependent exec p50 {} p99 {}",
        us(gap.p50),
        us(gap.p99)
    );

    let manager = Manager::start(ctx, "graph", GRAPH, &[])?;
    let graph_rounds = if ctx.quick { 3 } else { 10 };
    let mut walls = Vec::new();
    for _ in 0..graph_rounds {
        let began = Instant::now();
        manager.ctl(ctx, &["start", "app1", "app2", "cache", "solo1", "solo2"])?;
        walls.push(began.elapsed());
        manager.ctl(
            ctx,
            &["stop", "setup", "mount", "db", "cache", "solo1", "solo2"],
        )?;
    }
    drop(manager);
    let wall = Stats::of(&walls);
    let ratio = wall.p50.as_secs_f64() / CRITICAL.as_secs_f64();
    println!(
        "ready: 8-service graph p50 {} against a critical path of {}",
        ms(wall.p50),
        ms(CRITICAL)
    );

    // The manager's cost per watchdog ping: a run with many against one with none.
    let pings: u64 = if ctx.quick { 100_000 } else { 500_000 };
    let idle = pinger_cpu(ctx, 0)?;
    let busy = pinger_cpu(ctx, pings)?;
    let each = |busy: Duration, idle: Duration| {
        busy.saturating_sub(idle).as_secs_f64() * 1e6 / pings as f64
    };
    let per_ping = each(busy.0, idle.0);
    let per_ping_user = each(busy.1, idle.1);
    println!(
        "ready: {pings} watchdog pings cost the manager {per_ping:.2} µs of CPU each, {per_ping_user:.2} µs of it in user mode"
    );

    let mut section = Section {
        markdown: format!(
            "## Readiness and boot order\n\n\
             A notify service and one that requires it, {rounds} rounds of `stewardctl start app` \
             then `stop db`: the time from the moment the tiny service sends `READY=1` to the \
             moment its dependent is exec'd (both stamp CLOCK_MONOTONIC).\n\n\
             | READY=1 → dependent's exec | p50 | p99 |\n|---|---|---|\n| steward | **{}** | {} |\n\n\
             The boot graph of issue 14 (setup 100 ms → mount 100 ms → notify database warming \
             up 200 ms → two apps that require it; a lazy service one app is after; two \
             independent ones), started by one waiting `stewardctl start`, {graph_rounds} rounds: \
             wall time against the sum of its critical path ({}).\n\n\
             | graph wall time p50 | p99 | ÷ critical path |\n|---|---|---|\n| {} | {} | **{ratio:.2}×** |\n\n\
             A service with a `watchdog` sending {pings} `WATCHDOG=1` as fast as the notify \
             socket takes them: the manager's CPU time for the run (schedstat; user mode from \
             /proc/PID/stat, in 10 ms ticks), less that of the same run without pings, per \
             ping. Most of it is the kernel's receive path (steward takes up to 16 datagrams \
             per recvmmsg, each with SCM_CREDENTIALS, and wakes the sender, whom the socket's \
             10-datagram queue keeps blocking), which any sd_notify receiver pays; user mode \
             is steward's own code (a bare ping is not saved into the recovery snapshot).\n\n\
             | manager CPU per ping | of it in user mode |\n|---|---|\n| **{per_ping:.2} µs** | {per_ping_user:.2} µs |\n",
            us(gap.p50),
            us(gap.p99),
            ms(CRITICAL),
            ms(wall.p50),
            ms(wall.p99),
        ),
        ..Section::default()
    };
    section
        .figures
        .insert("ready.gap_us".into(), gap.p50.as_secs_f64() * 1e6);
    section.figures.insert("ready.graph_ratio".into(), ratio);
    section.figures.insert("ready.ping_us".into(), per_ping);
    section
        .figures
        .insert("ready.ping_user_us".into(), per_ping_user);
    Ok(section)
}
