//! `steward`: the service manager.

fn main() -> std::process::ExitCode {
    steward::main(steward::Build::RELEASE)
}
