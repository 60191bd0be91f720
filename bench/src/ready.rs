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
             | graph wall time p50 | p99 | ÷ critical path |\n|---|---|---|\n| {} | {} | **{ratio:.2}×** |\n",
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
    Ok(section)
}
