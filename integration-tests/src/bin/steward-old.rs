//! The manager as an older release would be: it reads no manager-state version this one
//! writes. A `reexec` into it must come back to the binary that was running, losing nothing.

fn main() -> std::process::ExitCode {
    steward::main(steward::Build {
        version: "0.0.1-old",
        state_version: 0,
    })
}
