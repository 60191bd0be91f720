//! `steward-bench`: steward's benchmarks, run against the release binaries and the real kernel,
//! side by side with the tools people would pick instead. Writes `report.md` and SVG plots.
//!
//! ```text
//! steward-bench [--bin-dir DIR] [--out DIR] [--quick] [SCENARIO…]
//! ```
//! Scenarios, in the default order: spawn, cow, accept, lazy, respawn, ready, memory, reexec,
//! codec (the last reads the criterion results `make bench` produced before).
#![deny(unsafe_code)]

mod accept;
mod codec;
mod fdstore;
mod memory;
mod plot;
mod ready;
mod reexec;
mod respawn;
mod spawn;
mod sys;
mod util;

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::util::{Ctx, Section};

const SCENARIOS: [&str; 10] = [
    "spawn", "cow", "accept", "lazy", "respawn", "ready", "memory", "reexec", "fdstore", "codec",
];

fn main() -> anyhow::Result<()> {
    let mut bin_dir = PathBuf::from("target/release");
    let mut out = PathBuf::from("target/bench");
    let mut quick = false;
    let mut chosen = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bin-dir" => bin_dir = args.next().context("--bin-dir needs a directory")?.into(),
            "--out" => out = args.next().context("--out needs a directory")?.into(),
            "--quick" => quick = true,
            "-h" | "--help" => {
                println!(
                    "usage: steward-bench [--bin-dir DIR] [--out DIR] [--quick] [SCENARIO…]\n\
                     scenarios: {}",
                    SCENARIOS.join(" ")
                );
                return Ok(());
            }
            s if s.starts_with('-') => bail!("unknown option {s}"),
            s if SCENARIOS.contains(&s) => chosen.push(s.to_string()),
            s => bail!("unknown scenario {s} (known: {})", SCENARIOS.join(" ")),
        }
    }
    if chosen.is_empty() {
        chosen = SCENARIOS.iter().map(|s| s.to_string()).collect();
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let bin_dir = bin_dir
        .canonicalize()
        .with_context(|| format!("{}: build the release binaries first", bin_dir.display()))?;
    let ctx = Ctx {
        bin_dir,
        out: out.clone(),
        quick,
    };
    let mut sections = Vec::new();
    for scenario in &chosen {
        println!("== {scenario}");
        let section = match scenario.as_str() {
            "spawn" => spawn::run(&ctx),
            "cow" => spawn::cow(&ctx),
            "accept" => accept::run(&ctx),
            "lazy" => accept::lazy(&ctx),
            "respawn" => respawn::run(&ctx),
            "ready" => ready::run(&ctx),
            "memory" => memory::run(&ctx),
            "reexec" => reexec::run(&ctx),
            "fdstore" => fdstore::run(&ctx),
            "codec" => codec::run(&ctx),
            _ => unreachable!("checked above"),
        }
        .with_context(|| format!("scenario {scenario}"))?;
        sections.push(section);
    }
    let report = report(&ctx, &sections);
    let path = out.join("report.md");
    std::fs::write(&path, &report)?;
    println!("\n{report}\nwrote {}", path.display());
    Ok(())
}

/// One line of the targets table: the figure's key, what it is, the target and its direction.
struct Target {
    key: &'static str,
    what: &'static str,
    target: f64,
    /// `true`: the figure must be at most the target; `false`: at least.
    at_most: bool,
    unit: &'static str,
    /// The key of the same figure for the floor of the design (`bench/floor/`), if measured.
    floor: Option<&'static str>,
}

/// The goals of issue 19 (performance), as ratios to a peer measured in the same run where the
/// issue gives one: absolute times move with the machine, a ratio much less.
const TARGETS: [Target; 13] = [
    Target {
        key: "accept.ratio_s6.c1",
        what: "accept mode ÷ s6-ipcserver, conn/s, c=1",
        target: 1.2,
        at_most: false,
        unit: "×",
        floor: Some("accept.floor_two_exec.ratio_s6.c1"),
    },
    Target {
        key: "accept.ratio_s6.c8",
        what: "accept mode ÷ s6-ipcserver, conn/s, c=8",
        target: 1.1,
        at_most: false,
        unit: "×",
        floor: Some("accept.floor_two_exec.ratio_s6.c8"),
    },
    Target {
        key: "spawn.ratio",
        what: "executor path ÷ bare posix_spawn, p50 (worst manager size)",
        target: 1.5,
        at_most: true,
        unit: "×",
        floor: Some("spawn.floor_ratio"),
    },
    Target {
        key: "lazy.ratio_systemd",
        what: "lazy first connection (cold), p50, ÷ systemd-socket-activate's",
        target: 0.6,
        at_most: true,
        unit: "×",
        floor: Some("lazy.floor_ratio"),
    },
    Target {
        key: "respawn.ratio_bare",
        what: "respawn cycle (`restart_delay = \"0\"`; an executor armed for each restart from the first on) ÷ a bare posix_spawn+wait loop",
        target: 1.5,
        at_most: true,
        unit: "×",
        floor: Some("respawn.pooled_floor_ratio"),
    },
    Target {
        key: "respawn.fresh_ratio_bare",
        what: "the same with `executor_pool = 0` (a fresh executor for each restart)",
        target: 1.5,
        at_most: true,
        unit: "×",
        floor: Some("respawn.floor_ratio"),
    },
    Target {
        key: "memory.steward.100.mb",
        what: "manager PSS with 100 services",
        target: 1.2,
        at_most: true,
        unit: " MiB",
        floor: None,
    },
    Target {
        key: "memory.steward.1000.mb",
        what: "manager PSS with 1000 services",
        target: 2.0,
        at_most: true,
        unit: " MiB",
        floor: None,
    },
    Target {
        key: "ready.gap_us",
        what: "a service's READY=1 → its dependent's exec, p50",
        target: 1000.0,
        at_most: true,
        unit: " µs",
        floor: None,
    },
    Target {
        key: "ready.ping_us",
        what: "the manager's CPU per watchdog ping (`WATCHDOG=1`)",
        target: 2.0,
        at_most: true,
        unit: " µs",
        floor: None,
    },
    Target {
        key: "ready.graph_ratio",
        what: "8-service boot graph wall time ÷ its critical path, p50",
        target: 1.1,
        at_most: true,
        unit: "×",
        floor: None,
    },
    Target {
        key: "reexec.p90_ms",
        what: "longest gap a client sees during a reexec (p90 over reexecs)",
        target: 10.0,
        at_most: true,
        unit: " ms",
        floor: None,
    },
    Target {
        key: "fdstore.gap_p99_ms",
        what: "a client's wait across a service restart with the fd store, p99 (none failed)",
        target: 2.0,
        at_most: true,
        unit: " ms",
        floor: Some("fdstore.floor_gap_p99_ms"),
    },
];

fn report(ctx: &Ctx, sections: &[Section]) -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = format!(
        "# steward benchmarks\n\n{cpus} CPUs, Linux {}, release build{}. \
         Produced by `make bench` (`target/release/steward-bench`).\n\n",
        kernel.trim(),
        if ctx.quick { ", **quick run**" } else { "" }
    );
    let figure = |key: &str| sections.iter().find_map(|s| s.figures.get(key).copied());
    md.push_str(
        "## Targets\n\n\
         *floor*: the same figure for the least a design like steward's can do, measured in \
         the same run: two execs per spawn (a static stub that only execs, then the service) \
         and nothing else, in C (`bench/floor/`; see the sections for each experiment); for \
         the pooled respawn, one byte to an idle stub that execs the service, and the next \
         stub started beside it. A goal the floor misses cannot be met by this architecture on \
         this machine.\n\n\
         | target | figure | goal | met | floor |\n|---|---|---|---|---|\n",
    );
    for t in &TARGETS {
        let (value, met) = match figure(t.key) {
            Some(v) => {
                let met = if t.at_most {
                    v <= t.target
                } else {
                    v >= t.target
                };
                (
                    format!("{v:.2}{}", t.unit),
                    if met { "yes" } else { "**no**" },
                )
            }
            None => ("not run".to_string(), "–"),
        };
        let goal = format!(
            "{} {}{}",
            if t.at_most { "≤" } else { "≥" },
            t.target,
            t.unit
        );
        let floor = t
            .floor
            .and_then(figure)
            .map_or(String::new(), |v| format!("{v:.2}{}", t.unit));
        md.push_str(&format!(
            "| {} | {value} | {goal} | {met} | {floor} |\n",
            t.what
        ));
    }
    md.push('\n');
    for s in sections {
        md.push_str(&s.markdown);
        md.push('\n');
    }
    md
}
