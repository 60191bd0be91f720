//! steward installed under a prefix, as `make install` lays it out: `PREFIX/sbin/steward` finds
//! `PREFIX/libexec/steward-executor` without `--executor`.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use steward_integration_tests::*;

#[test]
fn an_installed_steward_runs_the_executor_in_its_prefix_libexec() {
    let prefix = temp_dir();
    let sbin = prefix.path().join("sbin");
    let libexec = prefix.path().join("libexec");
    std::fs::create_dir_all(&sbin).unwrap();
    std::fs::create_dir_all(&libexec).unwrap();
    let (status, _, err) = run(Command::new("cp").arg(bin("steward")).arg(&sbin));
    assert!(status.success(), "copying steward: {err}");
    // A wrapper, not a copy: steward names a script executor in its log when it pins it, so the
    // log says which file was found (a copy could not be told from /usr/libexec's).
    let executor = libexec.join("steward-executor");
    let script = format!(
        "#!/bin/sh\nexec {} \"$@\"\n",
        bin("steward-executor").display()
    );
    std::fs::write(&executor, script).unwrap();
    std::fs::set_permissions(&executor, std::fs::Permissions::from_mode(0o755)).unwrap();

    let dir = temp_dir();
    let config = dir.path().join("steward.toml");
    std::fs::write(&config, "[service.once]\nexec = [\"/bin/true\"]\n").unwrap();
    let steward = Steward::spawn(
        Steward::command_under(&[], &sbin.join("steward"), &config, dir.path()),
        dir,
    );
    steward.wait_for(&format!(
        "the executor {} is not an ELF binary",
        executor.display()
    ));
    steward.wait_state("once", "exited");
}
