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

/// The same with an executor waiting for each restart.
fn pooled_config() -> String {
    CONFIG.replace(
        "stdio = \"null\"\n",
        "stdio = \"null\"\nexecutor_pool = 1\n",
    )
}

/// Cycles per second of one fresh steward on `config`, over `window`.
fn steward_rate(ctx: &Ctx, config: &str, window: Duration) -> anyhow::Result<f64> {
    let manager = Manager::start(ctx, "respawn", config, &[])?;
    manager.wait_for_nth("started (pid", 100, Duration::from_secs(20))?;
    let before = manager.count("started (pid");
    let began = Instant::now();
    std::thread::sleep(window);
    let cycles = manager.count("started (pid") - before;
    Ok(cycles as f64 / began.elapsed().as_secs_f64())
}

/// The bare loops alternate in slices this long, so that both see the same machine.
const SLICE: Duration = Duration::from_millis(20);

/// Cycles per second of the bare loops, each run for `window` in all: posix_spawn the tiny
/// service with its stdio on /dev/null (as `stdio = "null"` gives it), wait for it, again;
/// and the same through the exec-only stub (`bench/floor/stub.c`), two execs per cycle, the
/// floor of a manager/executor split.
fn bare_rates(ctx: &Ctx, window: Duration) -> anyhow::Result<(f64, f64)> {
    let tiny = CString::new(ctx.tiny().as_os_str().as_bytes())?;
    let stub = CString::new(ctx.bin("steward-floor-stub").as_os_str().as_bytes())?;
    let programs = [
        (tiny.clone(), vec![tiny.clone()]),
        (stub.clone(), vec![stub, tiny]),
    ];
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
    let (mut cycles, mut spent) = ([0u64; 2], [Duration::ZERO; 2]);
    while spent.iter().any(|&t| t < window) {
        for (i, (path, argv)) in programs.iter().enumerate() {
            let began = Instant::now();
            while began.elapsed() < SLICE {
                let pid = posix_spawn(path.as_c_str(), &actions, &attr, argv, &envp)?;
                waitpid(pid, None)?;
                cycles[i] += 1;
            }
            spent[i] += began.elapsed();
        }
    }
    let rate = |i: usize| cycles[i] as f64 / spent[i].as_secs_f64();
    Ok((rate(0), rate(1)))
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
    let (windows, window) = if ctx.quick {
        (3, Duration::from_secs(1))
    } else {
        (5, Duration::from_secs(2))
    };
    bare_rates(ctx, Duration::from_millis(200))?; // warm-up: page cache, the kernel's caches
    let pooled = pooled_config();
    let (mut rates, mut pool_rates, mut bare, mut two) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // steward and the bare loops take turns, window by window, so that a burst of other work
    // on this shared machine falls on one window of each rather than on all of one. Each
    // steward is stopped before the next runs: on two cores, a respawning steward would slow
    // the others.
    for _ in 0..windows {
        rates.push(steward_rate(ctx, CONFIG, window)?);
        pool_rates.push(steward_rate(ctx, &pooled, window)?);
        let (one, both) = bare_rates(ctx, window)?;
        bare.push(one);
        two.push(both);
    }
    let pool_ms = 1000.0 / median(&mut pool_rates);
    let steward = median(&mut rates);
    let cycle_ms = 1000.0 / steward;
    let bare_ms = 1000.0 / median(&mut bare);
    let two_ms = 1000.0 / median(&mut two);
    let ratio = cycle_ms / bare_ms;
    let floor = two_ms / bare_ms;
    let pool_ratio = pool_ms / bare_ms;
    println!(
        "respawn: steward {cycle_ms:.3} ms per cycle, {pool_ms:.3} ms with executor_pool = 1; \
         bare posix_spawn+wait {bare_ms:.3} ms; through the exec-only stub {two_ms:.3} ms; \
         steward ÷ bare {ratio:.2}× ({pool_ratio:.2}× pooled), stub ÷ bare {floor:.2}×"
    );
    let mut section = Section {
        markdown: format!(
            "## Respawn\n\n\
             One keep-alive service (the tiny static one, exiting at once) with \
             `restart_delay = \"0\"`: started lines counted over {secs} s, {windows} windows \
             (a fresh steward for each), median. Each cycle is reap → state machine → spawn \
             state → executor → exec → exit. Beside it, while no steward runs, the least any \
             supervisor does per respawn: the benchmark process itself posix_spawns the same \
             service (stdio on /dev/null, as `stdio = \"null\"` gives it) and waits for it, \
             back to back, for the same time after each of steward's windows; and the same \
             loop spawning the exec-only stub of `bench/floor/`, which execs the service: two \
             execs per cycle, the floor of steward's split (manager, executor, service) \
             without any of its work. The two loops alternate in {slice} ms slices. steward \
             runs twice in each window: as configured by default, and with \
             `executor_pool = 1`, where an idle executor waits in the service's cgroup for \
             the next restart (the exit's cleanup of the cgroup spares it), so that the \
             executor's exec is off the cycle's path.\n\n\
             | | cycles/s (windows) | per cycle |\n|---|---|---|\n\
             | steward | {} | **{cycle_ms:.3} ms** |\n\
             | steward, `executor_pool = 1` | {} | **{pool_ms:.3} ms** |\n\
             | bare posix_spawn + waitpid loop | {} | {bare_ms:.3} ms |\n\
             | the same through the exec-only stub (two execs) | {} | {two_ms:.3} ms |\n\n\
             steward ÷ bare loop, per cycle: **{ratio:.2}×**, with `executor_pool = 1` \
             **{pool_ratio:.2}×**; the two-exec floor ÷ bare loop: {floor:.2}×.\n",
            list(&rates),
            list(&pool_rates),
            list(&bare),
            list(&two),
            secs = window.as_secs(),
            slice = SLICE.as_millis(),
        ),
        ..Section::default()
    };
    section.figures.insert("respawn.ms".into(), cycle_ms);
    section.figures.insert("respawn.bare_ms".into(), bare_ms);
    section.figures.insert("respawn.ratio_bare".into(), ratio);
    section.figures.insert("respawn.pool_ms".into(), pool_ms);
    section
        .figures
        .insert("respawn.pool_ratio_bare".into(), pool_ratio);
    section.figures.insert("respawn.two_exec_ms".into(), two_ms);
    section.figures.insert("respawn.floor_ratio".into(), floor);
    Ok(section)
}
