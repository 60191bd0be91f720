//! `codec`: the criterion micro-benchmarks of the protocol crate (`make bench` runs them
//! first), read back from criterion's estimates for the report.

use std::path::Path;

use anyhow::Context;

use crate::util::{Ctx, Section};

const BENCHES: [(&str, &str); 4] = [
    (
        "spawn_state_encode",
        "encode a spawn state (manager, per spawn)",
    ),
    (
        "spawn_state_decode",
        "decode a spawn state (executor, per spawn)",
    ),
    (
        "manager_state_encode_100",
        "encode a manager state, 100 services (reexec)",
    ),
    (
        "manager_state_decode_100",
        "decode a manager state, 100 services (reexec)",
    ),
];

/// The mean, in nanoseconds, criterion estimated for one benchmark.
fn mean_ns(dir: &Path, name: &str) -> anyhow::Result<f64> {
    let path = dir.join(name).join("new/estimates.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: run `cargo bench -p steward-protocol --bench codec` first",
            path.display()
        )
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    json["mean"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("{}: no mean.point_estimate", path.display()))
}

/// Runs the scenario: reads criterion's results from `target/criterion`.
pub fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let dir = ctx
        .out
        .parent()
        .map_or_else(|| Path::new("target").to_path_buf(), Path::to_path_buf)
        .join("criterion");
    let mut md = String::from(
        "## Codec (criterion)\n\n\
         The formats that cross a process boundary, from `protocol/benches/codec.rs` \
         (criterion, mean).\n\n| operation | mean |\n|---|---|\n",
    );
    let mut section = Section::default();
    for (name, what) in BENCHES {
        let ns = mean_ns(&dir, name)?;
        let shown = if ns >= 1000.0 {
            format!("{:.1} µs", ns / 1000.0)
        } else {
            format!("{ns:.0} ns")
        };
        md.push_str(&format!("| {what} | {shown} |\n"));
        section.figures.insert(format!("codec.{name}.ns"), ns);
    }
    section.markdown = md;
    Ok(section)
}
