//! The manager as a later release would be: the same code, reporting another version. The
//! upgrade tests put it where `steward` was and `reexec` into it.

fn main() -> std::process::ExitCode {
    steward::main(steward::Build {
        version: concat!(env!("CARGO_PKG_VERSION"), "+next"),
        ..steward::Build::RELEASE
    })
}
