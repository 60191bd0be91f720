//! `steward-bench`: runs steward's benchmarks against the release binaries and writes what it
//! measured under `target/bench/`.
//!
//! ```text
//! steward-bench [--bin-dir DIR] [--out DIR] [SCENARIO…]
//! ```
//! Scenarios: `reexec` (the longest gap a client sees while the manager re-executes).

mod reexec;
mod util;

use std::path::PathBuf;

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let mut bin_dir = PathBuf::from("target/release");
    let mut out = PathBuf::from("target/bench");
    let mut scenarios = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bin-dir" => bin_dir = args.next().context("--bin-dir needs a directory")?.into(),
            "--out" => out = args.next().context("--out needs a directory")?.into(),
            "-h" | "--help" => {
                println!("usage: steward-bench [--bin-dir DIR] [--out DIR] [reexec]");
                return Ok(());
            }
            s if s.starts_with('-') => bail!("unknown option {s}"),
            s => scenarios.push(s.to_string()),
        }
    }
    if scenarios.is_empty() {
        scenarios.push("reexec".into());
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let bin_dir = bin_dir
        .canonicalize()
        .with_context(|| format!("{}: build the release binaries first", bin_dir.display()))?;
    let mut report = String::new();
    for scenario in &scenarios {
        let section = match scenario.as_str() {
            "reexec" => reexec::run(&bin_dir)?,
            other => bail!("unknown scenario {other}"),
        };
        report.push_str(&section);
        report.push('\n');
    }
    let path = out.join("report.md");
    std::fs::write(&path, &report)?;
    println!("{report}wrote {}", path.display());
    Ok(())
}
