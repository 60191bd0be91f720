//! `spawn`: how long a spawn takes as the manager grows, steward's real path against fork+exec
//! and a bare posix_spawn; and `cow`: the cost fork leaves behind in the parent.
//!
//! The baselines run in this process, holding the same amount of touched memory steward holds
//! (its `STEWARD_BENCH_BALLAST` knob). Every spawn runs the tiny static service, which writes
//! one byte: the latency is from the request to that byte.

use std::ffi::CString;
use std::hint::black_box;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::fcntl::OFlag;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, posix_spawn};
use nix::sys::wait::waitpid;

use crate::plot;
use crate::sys;
use crate::util::{Ctx, Manager, Section, Stats, ballast, size_name, us};

fn sizes(ctx: &Ctx) -> Vec<usize> {
    if ctx.quick {
        vec![16 << 20, 256 << 20]
    } else {
        vec![16 << 20, 256 << 20, 1 << 30, 4 << 30]
    }
}

/// Waits until the manager `pid` is at rest: asleep, with no child but armed executors.
fn settle(pid: u32) -> anyhow::Result<()> {
    let at_rest = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let asleep = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('S'));
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let children: Vec<&str> = children.split_whitespace().collect();
        asleep && !children.is_empty() && children.iter().all(|child| armed(child))
    };
    crate::util::poll_until(
        "the manager to rest",
        Duration::from_secs(2),
        Duration::from_micros(100),
        at_rest,
    )
}

/// Whether process `pid` waits in an epoll set: an executor armed, not one starting or a
/// service running.
fn armed(pid: &str) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy().contains("eventpoll"))
        })
}

/// Samples of each of `measures`, taken in turns (one of each per round): up to 300 rounds,
/// or as many as fit in `budget`, at least 20.
fn sample<const N: usize>(
    budget: Duration,
    mut measures: [&mut dyn FnMut() -> anyhow::Result<Duration>; N],
) -> anyhow::Result<[Vec<Duration>; N]> {
    for _ in 0..5 {
        for measure in measures.iter_mut() {
            measure()?; // warm-up: page cache, the kernel's caches, lazy binding in the manager
        }
    }
    let began = Instant::now();
    let mut samples: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::with_capacity(300));
    let mut rounds = 0;
    while rounds < 300 && (rounds < 20 || began.elapsed() < budget) {
        for (measure, taken) in measures.iter_mut().zip(samples.iter_mut()) {
            taken.push(measure()?);
        }
        rounds += 1;
    }
    Ok(samples)
}

#[derive(Clone, Copy)]
enum Local {
    ForkExec,
    PosixSpawn,
}

/// One spawn from this process: start the tiny service with a pipe as its stdout, wait for
/// its byte.
fn local_once(how: Local, path: &CString, argv: &[CString]) -> anyhow::Result<Duration> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let began = Instant::now();
    let pid = match how {
        Local::ForkExec => sys::fork_exec(path, argv, &write_end)?,
        Local::PosixSpawn => {
            let mut actions = PosixSpawnFileActions::init()?;
            actions.add_dup2(write_end.as_raw_fd(), 1)?;
            let attr = PosixSpawnAttr::init()?;
            let envp: [CString; 0] = [];
            posix_spawn(path.as_c_str(), &actions, &attr, argv, &envp)?
        }
    };
    drop(write_end);
    let mut byte = [0u8; 1];
    let mut file = std::fs::File::from(read_end);
    file.read_exact(&mut byte)
        .context("reading the service's byte")?;
    let took = began.elapsed();
    waitpid(pid, None)?;
    Ok(took)
}

/// One spawn through the executor alone, no manager: what the split costs by itself. The spawn
/// state is prepared once; each run posix_spawns the executor on it, which execs the tiny
/// service with our pipe as its stdout.
struct ExecutorOnly {
    executor: CString,
    memfd: std::fs::File,
    status: std::os::fd::OwnedFd,
    stdout: std::os::fd::OwnedFd,
    stdout_read: std::fs::File,
}

impl ExecutorOnly {
    fn new(ctx: &Ctx) -> anyhow::Result<ExecutorOnly> {
        let (stdout_read, stdout) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (_status_read, status) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let tiny = ctx.tiny().display().to_string();
        let state = steward_protocol::SpawnState {
            name: "tiny".into(),
            path: tiny.clone(),
            argv: vec![tiny],
            env: vec![],
            pid_vars: Vec::new(),
            stdio: [
                steward_protocol::Stdio::Null,
                steward_protocol::Stdio::Fd(stdout.as_raw_fd()),
                steward_protocol::Stdio::Null,
            ],
            fds: vec![],
            status_fd: status.as_raw_fd(),
            working_directory: "/".into(),
            umask: 0o022,
            credentials: None,
            rlimits: vec![],
            cgroups: vec![],
            fds_at: Vec::new(),
            reset_signals: vec![libc::SIGPIPE],
        };
        let memfd = memfd::MemfdOptions::default()
            .close_on_exec(true)
            .create("bench-spawn-state")?
            .into_file();
        std::io::Write::write_all(&mut &memfd, &steward_protocol::encode(&state)?)?;
        Ok(ExecutorOnly {
            executor: CString::new(ctx.bin("steward-executor").as_os_str().as_bytes())?,
            memfd,
            status,
            stdout,
            stdout_read: std::fs::File::from(stdout_read),
        })
    }

    fn once(&mut self) -> anyhow::Result<Duration> {
        let fd_arg = CString::new(self.memfd.as_raw_fd().to_string())?;
        let argv = [
            c"steward-executor".to_owned(),
            c"--deserialize".to_owned(),
            fd_arg,
        ];
        let began = Instant::now();
        let mut actions = PosixSpawnFileActions::init()?;
        for fd in [
            self.memfd.as_raw_fd(),
            self.status.as_raw_fd(),
            self.stdout.as_raw_fd(),
        ] {
            actions.add_dup2(fd, fd)?;
        }
        let attr = PosixSpawnAttr::init()?;
        let envp: [CString; 0] = [];
        let pid = posix_spawn(self.executor.as_c_str(), &actions, &attr, &argv, &envp)?;
        let mut byte = [0u8; 1];
        self.stdout_read.read_exact(&mut byte)?;
        let took = began.elapsed();
        let mut rest = [0u8; 1];
        self.stdout_read.read_exact(&mut rest)?; // the "\n"
        waitpid(pid, None)?;
        Ok(took)
    }
}

/// One spawn through steward: connect to its accept-mode socket, wait for the byte.
fn steward_once(socket: &Path) -> anyhow::Result<Duration> {
    let began = Instant::now();
    let mut stream = UnixStream::connect(socket)?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    let took = began.elapsed();
    if byte[0] != b'x' {
        bail!("unexpected answer {byte:?}");
    }
    Ok(took)
}

const CONFIG: &str = r#"
[service.tiny]
exec = ["@TINY@"]
accept = true
stdio = "socket"
[[service.tiny.socket]]
path = "@DIR@/tiny.sock"
"#;

/// One manager size: fork+exec, posix_spawn, steward, two execs.
type Row = (usize, Stats, Stats, Stats, Stats);

/// Spawn latency against manager size.
pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let path = CString::new(ctx.tiny().as_os_str().as_bytes())?;
    let argv = [path.clone()];
    let budget = if ctx.quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(4)
    };
    let mut executor_only = ExecutorOnly::new(ctx)?;
    let [alone] = sample(budget, [&mut || executor_only.once()])?.map(|s| Stats::of(&s));
    println!("spawn: executor alone (no manager) p50 {}", us(alone.p50));
    // The floor of any split into a spawner and a service: two execs, the first of a static
    // stub that does nothing else (`bench/floor/stub.c`).
    let stub = CString::new(ctx.bin("steward-floor-stub").as_os_str().as_bytes())?;
    let stub_argv = [stub.clone(), path.clone()];
    let mut rows = Vec::new();
    for size in sizes(ctx) {
        let name = size_name(size);
        let held = ballast(size);
        let [fork] = sample(budget, [&mut || local_once(Local::ForkExec, &path, &argv)])?
            .map(|s| Stats::of(&s));
        println!("spawn: {name}: fork+exec p50 {}", us(fork.p50));
        // The figures compared are sampled in turns, one of each per round, so that what else
        // the machine does meanwhile falls on all of them alike.
        let manager = Manager::start(ctx, "spawn", CONFIG, &[("STEWARD_BENCH_BALLAST", &name)])?;
        let socket = manager.dir.join("tiny.sock");
        let [spawn, two_exec, steward] = sample(
            budget,
            [
                &mut || local_once(Local::PosixSpawn, &path, &argv),
                &mut || local_once(Local::PosixSpawn, &stub, &stub_argv),
                &mut || {
                    let took = steward_once(&socket)?;
                    // As the loops above wait for their child: the next sample, of any kind,
                    // starts on a manager at rest again, its instance reaped and its armed
                    // executors back in place.
                    settle(manager.pid())?;
                    Ok(took)
                },
            ],
        )?
        .map(|samples| Stats::of(&samples));
        let rss = crate::util::pss(manager.pid()).unwrap_or(0);
        drop(manager);
        drop(held);
        println!(
            "spawn: {name}: posix_spawn p50 {}, two execs p50 {}, steward p50 {} (manager PSS \
             {} MiB)",
            us(spawn.p50),
            us(two_exec.p50),
            us(steward.p50),
            rss >> 20
        );
        rows.push((size, fork, spawn, steward, two_exec));
    }

    let mut md = String::from(
        "## Spawn latency against manager size\n\n\
         From the request to the tiny static service's first byte. *fork+exec* and \
         *posix_spawn* are done by the benchmark process itself while it holds that much \
         touched memory; posix_spawn, two execs and steward are sampled in turns, one of each \
         per round, while both the benchmark and the manager hold it, and after steward's \
         sample the round waits until the manager is at rest again (its instance reaped, its \
         armed executors back), as the others wait for their child; *steward* is the real \
         path (a connection to an accept-mode socket: \
         one of the service's armed executors, holding its spawn state already, wakes, accepts \
         and execs the service; a connection none of them takes is accepted by the manager and \
         spawned through a fresh executor), with the manager holding the same amount \
         (`STEWARD_BENCH_BALLAST`). \
         *two execs* is the floor of any split into a spawner and a service: this process \
         posix_spawns a static, libc-free stub (`bench/floor/stub.c`) that only execs the tiny \
         service.\n\n\
         | manager size | fork+exec p50 / p99 | posix_spawn p50 / p99 | steward p50 / p99 | \
         steward ÷ posix_spawn (p50) | two execs p50 / p99 | two execs ÷ posix_spawn (p50) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    let mut section = Section::default();
    let (mut worst, mut worst_floor): (f64, f64) = (0.0, 0.0);
    for (size, fork, spawn, steward, two_exec) in &rows {
        let ratio = steward.p50.as_secs_f64() / spawn.p50.as_secs_f64();
        worst = worst.max(ratio);
        let floor = two_exec.p50.as_secs_f64() / spawn.p50.as_secs_f64();
        worst_floor = worst_floor.max(floor);
        md.push_str(&format!(
            "| {} | {} / {} | {} / {} | {} / {} | {ratio:.2}× | {} / {} | {floor:.2}× |\n",
            size_name(*size),
            us(fork.p50),
            us(fork.p99),
            us(spawn.p50),
            us(spawn.p99),
            us(steward.p50),
            us(steward.p99),
            us(two_exec.p50),
            us(two_exec.p99),
        ));
        let key = |what: &str| format!("spawn.{what}.{}.p50_us", size_name(*size));
        section
            .figures
            .insert(key("fork"), fork.p50.as_secs_f64() * 1e6);
        section
            .figures
            .insert(key("posix_spawn"), spawn.p50.as_secs_f64() * 1e6);
        section
            .figures
            .insert(key("steward"), steward.p50.as_secs_f64() * 1e6);
        section
            .figures
            .insert(key("two_exec"), two_exec.p50.as_secs_f64() * 1e6);
    }
    section.figures.insert("spawn.ratio".into(), worst);
    // The same aggregate as the figure's, worst size.
    section
        .figures
        .insert("spawn.floor_ratio".into(), worst_floor);
    section.figures.insert(
        "spawn.executor_alone.p50_us".into(),
        alone.p50.as_secs_f64() * 1e6,
    );
    md.push_str(&format!(
        "\nThe executor alone, posix_spawned by this process on a prepared spawn state (no \
         manager, no socket): p50 {} / p99 {}. What steward adds on top of that is the accept \
         and its own bookkeeping; what the executor adds to the two execs is its reading of the \
         spawn state and setting the service up.\n",
        us(alone.p50),
        us(alone.p99),
    ));
    md.push_str("\n![spawn latency against manager size](spawn.svg)\n");
    let series = |name: &str, pick: fn(&Row) -> Duration| {
        (
            name.to_string(),
            rows.iter()
                .map(|r| ((r.0 >> 20) as f64, pick(r).as_secs_f64() * 1000.0))
                .collect(),
        )
    };
    plot::log_lines(
        &ctx.out.join("spawn.svg"),
        "Spawn latency (p50) against manager size",
        "manager RSS (MiB)",
        "latency (ms)",
        &[
            series("fork+exec", |r| r.1.p50),
            series("posix_spawn", |r| r.2.p50),
            series("steward (executor path)", |r| r.3.p50),
            series("two execs (the floor of a split)", |r| r.4.p50),
        ],
    )?;
    section.markdown = md;
    Ok(section)
}

/// Writes every page once: what a parent does to its memory after a fork, page by page.
fn rewrite(memory: &mut [u8]) {
    for page in memory.chunks_mut(4096) {
        page[0] = page[0].wrapping_add(1);
    }
    black_box(memory);
}

/// The copy-on-write cost fork leaves behind in the parent.
pub fn cow(ctx: &Ctx) -> anyhow::Result<Section> {
    let mut rows = Vec::new();
    for size in sizes(ctx) {
        let mut memory = ballast(size);
        let began = Instant::now();
        rewrite(&mut memory);
        let alone = began.elapsed();
        let (gate_read, gate_write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let began = Instant::now();
        let child = sys::fork_waiting(&gate_read, &gate_write)?;
        let fork = began.elapsed();
        let began = Instant::now();
        rewrite(&mut memory);
        let after_fork = began.elapsed();
        drop(gate_write);
        waitpid(child, None)?;
        println!(
            "cow: {}: fork {:.1} ms, rewrite after fork {:.1} ms (alone {:.1} ms)",
            size_name(size),
            fork.as_secs_f64() * 1e3,
            after_fork.as_secs_f64() * 1e3,
            alone.as_secs_f64() * 1e3
        );
        rows.push((size, fork, after_fork, alone));
    }
    let mut md = String::from(
        "## What fork leaves behind: copy-on-write\n\n\
         A process holding that much touched memory forks a child that just waits; then the \
         parent writes one byte in each of its pages, as a busy manager would. Every write \
         faults and copies a page while the child lives. posix_spawn (CLONE_VM|CLONE_VFORK) \
         shares nothing to copy.\n\n\
         | size | fork() itself | rewrite after fork | rewrite, no fork |\n|---|---|---|---|\n",
    );
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    for (size, fork, after, alone) in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            size_name(*size),
            ms(*fork),
            ms(*after),
            ms(*alone)
        ));
    }
    md.push_str("\n![copy-on-write cost](cow.svg)\n");
    let series = |name: &str, pick: fn(&(usize, Duration, Duration, Duration)) -> Duration| {
        (
            name.to_string(),
            rows.iter()
                .map(|r| ((r.0 >> 20) as f64, pick(r).as_secs_f64() * 1000.0))
                .collect(),
        )
    };
    plot::log_lines(
        &ctx.out.join("cow.svg"),
        "The cost of fork in the parent",
        "process RSS (MiB)",
        "time (ms)",
        &[
            series("fork() itself", |r| r.1),
            series("rewriting memory after fork (CoW)", |r| r.2),
            series("rewriting memory, no fork", |r| r.3),
        ],
    )?;
    Ok(Section {
        markdown: md,
        ..Section::default()
    })
}
