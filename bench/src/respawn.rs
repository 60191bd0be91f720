//! `respawn`: one keep-alive service that exits at once, `restart_delay = "0"`: the whole
//! cycle (reap → state machine → a word to the executor armed for the restart, or a fresh
//! executor with `executor_pool = 0` → exec → exit) back to back, against the least a
//! respawning supervisor must do: posix_spawn and wait, in a loop.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
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

/// The same without an executor waiting for each restart: each one starts a fresh executor.
fn fresh_config() -> String {
    CONFIG.replace(
        "stdio = \"null\"\n",
        "stdio = \"null\"\nexecutor_pool = 0\n",
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
/// the same through the exec-only stub (`bench/floor/stub.c`), two execs per cycle, the floor
/// of a manager/executor split; and the pooled floor: an idle stub waits on a socket, a cycle
/// writes it one byte (it execs the service), starts the next idle stub while the service runs,
/// and waits for the service, the least an executor armed for each restart can do.
fn bare_rates(ctx: &Ctx, window: Duration) -> anyhow::Result<[f64; 3]> {
    let tiny = CString::new(ctx.tiny().as_os_str().as_bytes())?;
    let stub = CString::new(ctx.bin("steward-floor-stub").as_os_str().as_bytes())?;
    let waiter = vec![stub.clone(), CString::new("-w")?, tiny.clone()];
    let programs = [
        (tiny.clone(), vec![tiny.clone()]),
        (stub.clone(), vec![stub.clone(), tiny]),
    ];
    let envp: [CString; 0] = [];
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // Stdio on /dev/null, and what `more` places after it.
    let on_null = |more: &[(i32, i32)]| -> anyhow::Result<PosixSpawnFileActions> {
        let mut actions = PosixSpawnFileActions::init()?;
        for fd in 0..3 {
            actions.add_dup2(null.as_raw_fd(), fd)?;
        }
        for &(from, to) in more {
            actions.add_dup2(from, to)?;
        }
        Ok(actions)
    };
    let actions = on_null(&[])?;
    let attr = PosixSpawnAttr::init()?;
    // An idle stub, blocked reading its end of the pair at fd 3.
    let spawn_waiter = || -> anyhow::Result<(nix::unistd::Pid, UnixStream)> {
        let (ours, theirs) = UnixStream::pair()?;
        let actions = on_null(&[(theirs.as_raw_fd(), 3)])?;
        let pid = posix_spawn(stub.as_c_str(), &actions, &attr, &waiter, &envp)?;
        Ok((pid, ours))
    };
    let (mut cycles, mut spent) = ([0u64; 3], [Duration::ZERO; 3]);
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
        let mut waiting = spawn_waiter()?;
        let began = Instant::now();
        while began.elapsed() < SLICE {
            let (pid, go) = waiting;
            (&go).write_all(b"x")?;
            waiting = spawn_waiter()?;
            waitpid(pid, None)?;
            cycles[2] += 1;
        }
        spent[2] += began.elapsed();
        // The last one reads end of file and exits.
        let (pid, go) = waiting;
        drop(go);
        waitpid(pid, None)?;
    }
    Ok([0, 1, 2].map(|i| cycles[i] as f64 / spent[i].as_secs_f64()))
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
    let fresh = fresh_config();
    let (mut rates, mut fresh_rates, mut bare, mut two, mut pooled_floor) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // steward and the bare loops take turns, window by window, so that a burst of other work
    // on this shared machine falls on one window of each rather than on all of one. Each
    // steward is stopped before the next runs: on two cores, a respawning steward would slow
    // the others.
    for _ in 0..windows {
        rates.push(steward_rate(ctx, CONFIG, window)?);
        fresh_rates.push(steward_rate(ctx, &fresh, window)?);
        let [one, both, waited] = bare_rates(ctx, window)?;
        bare.push(one);
        two.push(both);
        pooled_floor.push(waited);
    }
    let fresh_ms = 1000.0 / median(&mut fresh_rates);
    let steward = median(&mut rates);
    let cycle_ms = 1000.0 / steward;
    let bare_ms = 1000.0 / median(&mut bare);
    let two_ms = 1000.0 / median(&mut two);
    let pooled_floor_ms = 1000.0 / median(&mut pooled_floor);
    let pooled_floor_ratio = pooled_floor_ms / bare_ms;
    let ratio = cycle_ms / bare_ms;
    let floor = two_ms / bare_ms;
    let fresh_ratio = fresh_ms / bare_ms;
    println!(
        "respawn: steward {cycle_ms:.3} ms per cycle, {fresh_ms:.3} ms with executor_pool = 0; \
         bare posix_spawn+wait {bare_ms:.3} ms; through the exec-only stub {two_ms:.3} ms; \
         pooled floor {pooled_floor_ms:.3} ms; steward ÷ bare {ratio:.2}× ({fresh_ratio:.2}× \
         fresh), pooled floor ÷ bare {pooled_floor_ratio:.2}×, stub ÷ bare {floor:.2}×"
    );
    let mut section = Section {
        markdown: format!(
            "## Respawn\n\n\
             One keep-alive service (the tiny static one, exiting at once) with \
             `restart_delay = \"0\"`: started lines counted over {secs} s, {windows} windows \
             (a fresh steward for each), median. By default, from the service's first restart \
             on, an idle executor waits in its cgroup, armed with the next main process's spawn \
             state while the service runs (the exit's cleanup of the cgroup spares it): each \
             cycle is reap → state machine → one word to that executor → exec → exit, and the \
             next one is armed beside the service. With `executor_pool = 0`, each cycle is \
             reap → state machine → spawn state → a fresh executor → exec → exit. Beside them, \
             while no steward runs, the least any supervisor does per respawn: the benchmark \
             process itself posix_spawns the same service (stdio on /dev/null, as \
             `stdio = \"null\"` gives it) and waits for it, back to back, for the same time \
             after each of steward's windows; and the same loop spawning the exec-only stub of \
             `bench/floor/`, which execs the service: two execs per cycle, the floor of \
             steward's split (manager, executor, service) without any of its work, the floor of \
             `executor_pool = 0`. The two loops alternate in {slice} ms slices. The floor of \
             the default is the third loop, in turn with the other two: an idle stub \
             (`steward-floor-stub -w`) blocks reading a socket; each cycle writes it one byte, \
             on which it execs the service, then posix_spawns the next idle stub while the \
             service runs, and waits for the service. It has what the pool's design cannot do \
             without (one message, a process woken wherever the scheduler put it, the refill \
             beside the service) and none of the work of either side.\n\n\
             | | cycles/s (windows) | per cycle |\n|---|---|---|\n\
             | steward | {} | **{cycle_ms:.3} ms** |\n\
             | steward, `executor_pool = 0` | {} | **{fresh_ms:.3} ms** |\n\
             | bare posix_spawn + waitpid loop | {} | {bare_ms:.3} ms |\n\
             | the same through the exec-only stub (two execs) | {} | {two_ms:.3} ms |\n\
             | an idle stub woken by one byte, refilled beside the service (pooled floor) | {} \
             | {pooled_floor_ms:.3} ms |\n\n\
             steward ÷ bare loop, per cycle: **{ratio:.2}×** (the pooled floor ÷ bare loop: \
             {pooled_floor_ratio:.2}×); with `executor_pool = 0` **{fresh_ratio:.2}×** (the \
             two-exec floor ÷ bare loop: {floor:.2}×).\n",
            list(&rates),
            list(&fresh_rates),
            list(&bare),
            list(&two),
            list(&pooled_floor),
            secs = window.as_secs(),
            slice = SLICE.as_millis(),
        ),
        ..Section::default()
    };
    section.figures.insert("respawn.ms".into(), cycle_ms);
    section.figures.insert("respawn.bare_ms".into(), bare_ms);
    section.figures.insert("respawn.ratio_bare".into(), ratio);
    section.figures.insert("respawn.fresh_ms".into(), fresh_ms);
    section
        .figures
        .insert("respawn.fresh_ratio_bare".into(), fresh_ratio);
    section.figures.insert("respawn.two_exec_ms".into(), two_ms);
    section.figures.insert("respawn.floor_ratio".into(), floor);
    section
        .figures
        .insert("respawn.pooled_floor_ms".into(), pooled_floor_ms);
    section
        .figures
        .insert("respawn.pooled_floor_ratio".into(), pooled_floor_ratio);
    Ok(section)
}
