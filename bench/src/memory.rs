//! `memory`: the manager's PSS with 10, 100 and 1000 services, against s6 and runit
//! supervising 100.
//!
//! steward supervises every service from its one process, so its figure is that process. s6
//! and runit run one supervisor process per service under a scanner: their figure is the
//! scanner plus every supervisor. The services themselves (the tiny static one, pausing) are
//! counted for nobody.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::plot;
use crate::util::{
    Ctx, Manager, Peer, Proc, Section, children, comm, descendants, poll_until, process_tree, pss,
};

/// How many services s6 and runit supervise.
const PEER_SERVICES: usize = 100;

/// After everything runs and before reading PSS: let start-up work (log lines, reaping,
/// scanner rescans) finish, so the figure is the idle state.
const SETTLE: Duration = Duration::from_millis(500);

/// `/proc` scans are not free: poll them at this pace while the peers start and stop.
const POLL: Duration = Duration::from_millis(20);

const MIB: f64 = 1_048_576.0;

/// `n` eager services `s0`…, each the tiny one pausing forever.
fn steward_config(n: usize) -> String {
    (0..n)
        .map(|i| format!("[service.s{i}]\nexec = [\"@TINY@\", \"pause\"]\nstdio = \"null\"\n\n"))
        .collect()
}

/// steward's PSS with `n` services running.
fn steward(ctx: &Ctx, n: usize) -> anyhow::Result<u64> {
    let manager = Manager::start(ctx, &format!("memory-{n}"), &steward_config(n), &[])?;
    manager.wait_for_nth("started (pid", n, Duration::from_secs(120))?;
    std::thread::sleep(SETTLE);
    // The services are the manager's children (the executor execs them): all of them still
    // run, or the figure would be of a smaller manager.
    let running = children(manager.pid())
        .into_iter()
        .filter(|&p| comm(p).as_deref() == Some("steward-tiny"))
        .count();
    if running != n {
        bail!("{running} of {n} services run");
    }
    let bytes = pss(manager.pid())?;
    println!(
        "memory: steward with {n} services: {:.2} MiB",
        bytes as f64 / MIB
    );
    // Dropping the manager stops its services and waits for it to exit.
    Ok(bytes)
}

/// A peer supervision tree: a scanner starting one supervisor per service directory.
struct Tree {
    /// Figure key.
    key: &'static str,
    /// The scanner's program, run as `PROGRAM DIR`.
    scanner: &'static str,
    /// The supervisors' command name.
    supervisor: &'static str,
}

const TREES: [Tree; 2] = [
    Tree {
        key: "s6",
        scanner: "s6-svscan",
        supervisor: "s6-supervise",
    },
    Tree {
        key: "runit",
        scanner: "runsvdir",
        supervisor: "runsv",
    },
];

/// The same `PEER_SERVICES` service directories for both: `run` execs the tiny service.
fn service_dirs(dir: &Path, tiny: &Path) -> anyhow::Result<()> {
    let run = format!("#!/bin/sh\nexec {} pause\n", tiny.display());
    for i in 0..PEER_SERVICES {
        let service = dir.join(format!("s{i}"));
        std::fs::create_dir(&service).with_context(|| format!("creating {}", service.display()))?;
        let path = service.join("run");
        std::fs::write(&path, &run).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok(())
}

/// The scanner's supervisors in `tree`.
fn supervisors(tree: &BTreeMap<u32, Vec<u32>>, scanner: u32, name: &str) -> Vec<u32> {
    tree.get(&scanner)
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .copied()
        .filter(|&p| comm(p).as_deref() == Some(name))
        .collect()
}

/// Waits until every supervisor runs its service; returns the PSS of the scanner and the
/// supervisors, and how many processes that is.
fn measure_tree(t: &Tree, scanner: u32) -> anyhow::Result<(u64, usize)> {
    let mut found = Vec::new();
    poll_until(
        &format!("{PEER_SERVICES} {} each running its service", t.supervisor),
        Duration::from_secs(60),
        POLL,
        || {
            let tree = process_tree();
            found = supervisors(&tree, scanner, t.supervisor);
            // The service has exec'd the tiny one (not still the shell running `run`).
            found.len() == PEER_SERVICES
                && found.iter().all(|s| {
                    tree.get(s).is_some_and(|kids| {
                        kids.iter()
                            .any(|&k| comm(k).as_deref() == Some("steward-tiny"))
                    })
                })
        },
    )?;
    std::thread::sleep(SETTLE);
    let mut bytes = pss(scanner).with_context(|| t.scanner)?;
    for &s in &found {
        bytes += pss(s).with_context(|| t.supervisor)?;
    }
    Ok((bytes, found.len() + 1))
}

/// Stops the tree the way its tool is meant to be stopped, then makes sure nothing it started
/// is left: whatever still runs after a grace period is killed, by pid. Returns how many
/// processes had to be killed.
fn stop_tree(t: &Tree, dir: &Path, mut peer: Peer) -> anyhow::Result<usize> {
    let scanner = peer.pid();
    // Every process the scanner started, as they are now, so a reused pid is never killed.
    let started: Vec<Proc> = descendants(&process_tree(), scanner)
        .into_iter()
        .filter_map(Proc::of)
        .collect();
    let asked = match t.key {
        // -t: s6-svscan brings its supervisors (and so their services) down, then exits.
        "s6" => Command::new("s6-svscanctl")
            .arg("-t")
            .arg(dir)
            .status()
            .context("running s6-svscanctl")
            .and_then(|status| {
                if status.success() {
                    Ok(())
                } else {
                    bail!("s6-svscanctl -t {}: {status}", dir.display())
                }
            }),
        // SIGHUP: runsvdir sends TERM to every runsv (each stops its service) and exits.
        _ => kill(Pid::from_raw(scanner as i32), Signal::SIGHUP)
            .with_context(|| format!("SIGHUP to {}", t.scanner)),
    };
    let exited = asked.and_then(|()| {
        poll_until(
            &format!("{} to exit", t.scanner),
            Duration::from_secs(20),
            POLL,
            || peer.has_exited(),
        )
    });
    // If it did not exit by itself, the drop stops it (SIGTERM, then SIGKILL); either way the
    // leftovers are looked for below before any error is returned.
    drop(peer);
    // runsvdir does not wait for its runsv processes: they finish stopping on their own.
    let gone = poll_until(
        &format!("{}'s supervisors and services to exit", t.scanner),
        Duration::from_secs(10),
        POLL,
        || started.iter().all(|p| !p.alive()),
    );
    let left: Vec<&Proc> = started.iter().filter(|p| p.alive()).collect();
    if gone.is_err() {
        println!(
            "memory: {}: {} processes left behind; killing them",
            t.scanner,
            left.len()
        );
    }
    for p in &left {
        p.kill();
    }
    exited?;
    Ok(left.len())
}

/// Runs one peer tree: starts it on fresh service directories, measures, stops it.
fn peer_tree(ctx: &Ctx, t: &Tree) -> anyhow::Result<(u64, usize, usize)> {
    let dir = ctx.scratch(&format!("memory-{}", t.key))?;
    service_dirs(&dir, &ctx.tiny())?;
    let arg = dir.to_str().context("UTF-8 path")?;
    let peer = Peer::start(t.key, t.scanner, &[arg])?;
    let measured = measure_tree(t, peer.pid());
    // Stopped whether the measurement worked or not.
    let stopped = stop_tree(t, &dir, peer);
    let (bytes, procs) = measured?;
    let killed = stopped?;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "memory: {} with {PEER_SERVICES} services: {:.2} MiB over {procs} processes",
        t.scanner,
        bytes as f64 / MIB
    );
    Ok((bytes, procs, killed))
}

/// Runs the scenario.
pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let sizes: &[usize] = if ctx.quick {
        &[10, 100]
    } else {
        &[10, 100, 1000]
    };
    let mut section = Section::default();
    let mut rows = String::new();
    let mut groups = Vec::new();
    for &n in sizes {
        let bytes = steward(ctx, n).with_context(|| format!("memory: steward, {n} services"))?;
        let mib = bytes as f64 / MIB;
        rows.push_str(&format!(
            "| steward | {n} | 1 | **{mib:.2}** | {:.1} |\n",
            bytes as f64 / n as f64 / 1024.0
        ));
        groups.push((format!("steward {n}"), vec![mib]));
        section
            .figures
            .insert(format!("memory.steward.{n}.mb"), mib);
    }
    let mut notes = String::new();
    for t in &TREES {
        let (bytes, procs, killed) =
            peer_tree(ctx, t).with_context(|| format!("memory: {}", t.scanner))?;
        let mib = bytes as f64 / MIB;
        rows.push_str(&format!(
            "| {} + {} | {PEER_SERVICES} | {procs} | {mib:.2} | {:.1} |\n",
            t.scanner,
            t.supervisor,
            bytes as f64 / PEER_SERVICES as f64 / 1024.0
        ));
        groups.push((format!("{} {PEER_SERVICES}", t.key), vec![mib]));
        section
            .figures
            .insert(format!("memory.{}.{PEER_SERVICES}.mb", t.key), mib);
        if killed > 0 {
            notes.push_str(&format!(
                "- {}: {killed} processes were still running after it stopped and were killed.\n",
                t.scanner
            ));
        }
    }
    plot::bars(
        &ctx.out.join("memory.svg"),
        "Supervisor memory (PSS)",
        "MiB",
        &["PSS"],
        &groups,
    )?;
    section.markdown = format!(
        "## Memory: what supervision costs\n\n\
         Proportional set size (PSS, from `smaps_rollup`) of the supervising processes once \
         every service runs, in MiB (2^20 bytes). The services are the tiny static one \
         pausing (`steward-tiny pause`), `stdio = \"null\"`, and are not counted. steward: the \
         manager process alone, with {} services: it is the only supervising process. s6 and \
         runit: the scanner (`s6-svscan DIR`, `runsvdir DIR`) plus its {PEER_SERVICES} \
         supervisors (`s6-supervise`, `runsv`), each service directory's `run` being \
         `#!/bin/sh` + `exec steward-tiny pause`. Measured {} ms after the last service \
         started. See `memory.svg`.\n\n\
         | supervisor | services | processes | PSS (MiB) | PSS ÷ services (KiB) |\n\
         |---|---|---|---|---|\n{rows}{notes}",
        sizes
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        SETTLE.as_millis()
    );
    Ok(section)
}
