//! `respawn`: one keep-alive service that exits at once, `restart_delay = "0"`: the whole
//! cycle (reap → state machine → spawn state → executor → exec → exit) back to back, against
//! the least a respawning supervisor must do: posix_spawn and wait, in a loop.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, posix_spawn};
use nix::sys::wait::waitpid;

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

/// Windows per measurement; the median is reported.
const WINDOWS: usize = 3;

/// Cycles per second of the bare loop over `window`: posix_spawn the tiny service with its
/// stdio on /dev/null (as `stdio = "null"` gives it), wait for it, again. `via_stub`: spawn
/// it through the exec-only stub (`bench/floor/stub.c`), two execs per cycle, the floor of a
/// manager/executor split.
fn bare_rate(ctx: &Ctx, window: Duration, via_stub: bool) -> anyhow::Result<f64> {
    let tiny = CString::new(ctx.tiny().as_os_str().as_bytes())?;
    let (path, argv) = if via_stub {
        let stub = CString::new(ctx.bin("steward-floor-stub").as_os_str().as_bytes())?;
        (stub.clone(), vec![stub, tiny])
    } else {
        (tiny.clone(), vec![tiny])
    };
    let envp: [CString; 0] = [];
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let mut actions = PosixSpawnFileActions::init()?;
    for fd in 0..3 {
        actions.add_dup2(null.as_raw_fd(), fd)?;
    }
    let attr = PosixSpawnAttr::init()?;
    let began = Instant::now();
    let mut cycles = 0u64;
    while began.elapsed() < window {
        let pid = posix_spawn(path.as_c_str(), &actions, &attr, &argv, &envp)?;
        waitpid(pid, None)?;
        cycles += 1;
    }
    Ok(cycles as f64 / began.elapsed().as_secs_f64())
}

fn median(rates: &mut [f64]) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn list(rates: &[f64]) -> String {
    rates
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs the scenario.
pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let window = if ctx.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(3)
    };
    // Warm-up: page cache, the kernel's caches.
    bare_rate(ctx, Duration::from_millis(200), false)?;
    bare_rate(ctx, Duration::from_millis(200), true)?;
    let (mut rates, mut bare, mut two) = (Vec::new(), Vec::new(), Vec::new());
    // The three take turns, window by window, so that a burst of other work on this shared
    // machine falls on one window of each rather than on all of one.
    for _ in 0..WINDOWS {
        let manager = Manager::start(ctx, "respawn", CONFIG, &[])?;
        manager.wait_for_nth("started (pid", 100, Duration::from_secs(20))?;
        let before = manager.count("started (pid");
        let began = Instant::now();
        std::thread::sleep(window);
        let cycles = manager.count("started (pid") - before;
        rates.push(cycles as f64 / began.elapsed().as_secs_f64());
        // Stopped before the bare loops run: on two cores, a respawning steward would slow
        // them.
        drop(manager);
        bare.push(bare_rate(ctx, window, false)?);
        two.push(bare_rate(ctx, window, true)?);
    }
    let steward = median(&mut rates);
    let cycle_ms = 1000.0 / steward;
    let bare_ms = 1000.0 / median(&mut bare);
    let two_ms = 1000.0 / median(&mut two);
    let ratio = cycle_ms / bare_ms;
    let floor = two_ms / bare_ms;
    println!(
        "respawn: steward {cycle_ms:.3} ms per cycle; bare posix_spawn+wait {bare_ms:.3} ms; \
         through the exec-only stub {two_ms:.3} ms; steward ÷ bare {ratio:.2}×, \
         stub ÷ bare {floor:.2}×"
    );
    let mut section = Section {
        markdown: format!(
            "## Respawn\n\n\
             One keep-alive service (the tiny static one, exiting at once) with \
             `restart_delay = \"0\"`: started lines counted over {secs} s, {WINDOWS} windows \
             (a fresh steward for each), median. Each cycle is reap → state machine → spawn \
             state → executor → exec → exit. Beside it, while no steward runs, the least any \
             supervisor does per respawn: the benchmark process itself posix_spawns the same \
             service (stdio on /dev/null, as `stdio = \"null\"` gives it) and waits for it, \
             back to back, for the same time after each of steward's windows; and the same \
             loop spawning the exec-only stub of `bench/floor/`, which execs the service: two \
             execs per cycle, the floor of steward's split (manager, executor, service) \
             without any of its work.\n\n\
             | | cycles/s (windows) | per cycle |\n|---|---|---|\n\
             | steward | {} | **{cycle_ms:.3} ms** |\n\
             | bare posix_spawn + waitpid loop | {} | {bare_ms:.3} ms |\n\
             | the same through the exec-only stub (two execs) | {} | {two_ms:.3} ms |\n\n\
             steward ÷ bare loop, per cycle: **{ratio:.2}×**; the two-exec floor ÷ bare loop: \
             {floor:.2}×.\n",
            list(&rates),
            list(&bare),
            list(&two),
            secs = window.as_secs(),
        ),
        ..Section::default()
    };
    section.figures.insert("respawn.ms".into(), cycle_ms);
    section.figures.insert("respawn.bare_ms".into(), bare_ms);
    section.figures.insert("respawn.ratio_bare".into(), ratio);
    section.figures.insert("respawn.two_exec_ms".into(), two_ms);
    section.figures.insert("respawn.floor_ratio".into(), floor);
    Ok(section)
}
