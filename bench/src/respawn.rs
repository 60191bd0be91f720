//! `respawn`: one keep-alive service that exits at once, `restart_delay = "0"`: the whole
//! cycle (reap → state machine → spawn state → executor → exec → exit) back to back.

use std::time::{Duration, Instant};

use crate::util::{Ctx, Manager, Section};

const CONFIG: &str = r#"
[service.tiny]
exec = ["@TINY@"]
keep_alive = true
restart_delay = "0"
stdio = "null"
# A benchmark, not a crash loop: the start limit must not stop it.
start_limit_burst = 999999
start_limit_interval = "1s"
"#;

/// Runs the scenario.
pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let manager = Manager::start(ctx, "respawn", CONFIG, &[])?;
    manager.wait_for_nth("started (pid", 100, Duration::from_secs(20))?;
    let window = if ctx.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    let mut rates = Vec::new();
    for _ in 0..3 {
        let before = manager.count("started (pid");
        let began = Instant::now();
        std::thread::sleep(window);
        let cycles = manager.count("started (pid") - before;
        rates.push(cycles as f64 / began.elapsed().as_secs_f64());
    }
    drop(manager);
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    let cycle_ms = 1000.0 / median;
    println!("respawn: {median:.0} cycles/s, {cycle_ms:.3} ms per cycle");
    let mut section = Section {
        markdown: format!(
            "## Respawn\n\n\
             One keep-alive service (the tiny static one, exiting at once) with \
             `restart_delay = \"0\"`: started lines counted over {} s, 3 windows, median. \
             Each cycle is reap → state machine → spawn state → executor → exec → exit.\n\n\
             | cycles/s (windows) | per cycle |\n|---|---|\n| {} | **{cycle_ms:.3} ms** |\n",
            window.as_secs(),
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ..Section::default()
    };
    section.figures.insert("respawn.ms".into(), cycle_ms);
    Ok(section)
}
