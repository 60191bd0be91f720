//! The spawn path itself: the manager never forks, the executor is pinned by fd, and the
//! executor is a static binary.

use std::collections::HashSet;
use std::path::Path;

use steward_integration_tests::*;

/// Two keep-alive services that exit at once and are restarted without delay, so the manager
/// spawns as fast as it can for the length of the test.
const CHURN: &str = r#"
[service.churn1]
exec = ["/bin/true"]
keep_alive = true
restart_delay = "0"
start_limit_burst = 100000

[service.churn2]
exec = ["/bin/sh", "-c", "exit 7"]
keep_alive = true
restart_delay = "10ms"
start_limit_burst = 100000
"#;

#[test]
fn the_manager_only_clones_with_clone_vm() {
    let dir = temp_dir();
    let config = dir.path().join("steward.toml");
    std::fs::write(&config, CHURN).unwrap();
    let trace = dir.path().join("trace");
    let trace_arg = trace.to_str().expect("utf-8 temp dir");
    let cmd = Steward::command_under(
        &[
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=clone,clone3,fork,vfork",
            "-o",
            trace_arg,
        ],
        &bin("steward"),
        &config,
        dir.path(),
    );
    let mut s = Steward::spawn(cmd, dir);
    let first = s.wait_for("version");
    let manager = first
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.parse::<i32>().ok())
        .expect("the start line names the manager's pid");
    // Seconds of restarting under strace, counted by the log rather than by the clock (kept
    // well inside the wait deadline: strace makes each spawn cost milliseconds).
    s.wait_for_nth("churn1: started", 100);
    s.wait_for_nth("churn2: started", 10);
    send_signal(manager, libc::SIGTERM).unwrap();
    assert!(s.wait_exit().success());

    let trace = std::fs::read_to_string(&trace).unwrap();
    let by_manager: Vec<&str> = trace
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(&manager.to_string()))
        .collect();
    let clones: Vec<&&str> = by_manager
        .iter()
        .filter(|l| l.contains("clone(") || l.contains("clone3("))
        .collect();
    assert!(
        clones.len() >= 110,
        "every spawn is a clone by the manager: saw {}\n{trace}",
        clones.len()
    );
    // No page copied, ever. A clone that does not wait for the child's exec (CLONE_VFORK)
    // has the kernel clear the child's tid at its exec (CLONE_CHILD_CLEARTID): that is when
    // the child's stack may be used again.
    for line in &clones {
        assert!(
            line.contains("CLONE_VM"),
            "a clone without CLONE_VM: {line}"
        );
        assert!(
            line.contains("CLONE_VFORK") || line.contains("CLONE_CHILD_CLEARTID"),
            "a clone whose stack nobody knows the end of: {line}"
        );
    }
    // "fork(" also matches "vfork(".
    for line in &by_manager {
        assert!(
            !line.contains("fork("),
            "the manager called fork or vfork: {line}"
        );
    }
}

#[test]
fn the_executor_is_pinned_at_start() {
    // A private copy of the binaries, so the executor can be deleted without harm.
    let dir = temp_dir();
    let bin_copy = dir.path().join("bin");
    std::fs::create_dir(&bin_copy).unwrap();
    for name in ["steward", "steward-executor"] {
        std::fs::copy(bin(name), bin_copy.join(name)).unwrap();
    }
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        r#"
[service.again]
exec = ["/bin/true"]
keep_alive = true
restart_delay = "20ms"
start_limit_burst = 100000
"#,
    )
    .unwrap();
    let cmd = Steward::command_under(&[], &bin_copy.join("steward"), &config, dir.path());
    let mut s = Steward::spawn(cmd, dir);
    s.wait_for_nth("again: exited with status 0", 1);

    std::fs::remove_file(bin_copy.join("steward-executor")).unwrap();
    let before = s.count("again: exited with status 0");
    s.wait_for_nth("again: exited with status 0", before + 5);
    assert_eq!(s.count("failed at"), 0, "{:#?}", s.lines());
    assert_eq!(s.count("cannot spawn"), 0, "{:#?}", s.lines());
    assert!(s.terminate().success());
}

#[test]
fn the_default_executor_is_the_one_beside_steward() {
    let dir = temp_dir();
    let bin_copy = dir.path().join("bin");
    std::fs::create_dir(&bin_copy).unwrap();
    std::fs::copy(bin("steward"), bin_copy.join("steward")).unwrap();
    // A script standing in for the executor proves which file was chosen: the real one would
    // exec /bin/true, which exits 0. (Not an ELF, so it is pinned with a warning instead of a
    // protocol check.)
    std::fs::write(bin_copy.join("steward-executor"), "#!/bin/sh\nexit 7\n").unwrap();
    std::fs::set_permissions(
        bin_copy.join("steward-executor"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let config = dir.path().join("steward.toml");
    std::fs::write(&config, "[service.a]\nexec = [\"/bin/true\"]\n").unwrap();
    let cmd = Steward::command_under(&[], &bin_copy.join("steward"), &config, dir.path());
    let mut s = Steward::spawn(cmd, dir);
    s.wait_for("is not an ELF binary: its protocol version cannot be checked");
    s.wait_for("a: exited with status 7");
    assert!(s.terminate().success());
}

#[test]
fn an_executor_speaking_another_protocol_is_a_startup_error() {
    let dir = temp_dir();
    let config = dir.path().join("steward.toml");
    std::fs::write(&config, "[service.a]\nexec = [\"/bin/true\"]\n").unwrap();
    // An ELF without our marker, and one whose marker names another version.
    let other = dir.path().join("other-executor");
    let mut elf = std::fs::read(bin("steward-executor")).unwrap();
    let marker = b"steward-executor-protocol=";
    let at = elf.windows(marker.len()).position(|w| w == marker).unwrap() + marker.len();
    elf[at] = b'9';
    std::fs::write(&other, elf).unwrap();
    std::fs::set_permissions(&other, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for (executor, found) in [
        (
            Path::new("/bin/true"),
            "none (it carries no protocol marker)",
        ),
        (other.as_path(), "9"),
    ] {
        let (status, _, err) = run(Steward::command(&config, dir.path())
            .arg("--executor")
            .arg(executor));
        assert_eq!(status.code(), Some(1), "{err}");
        let expected = format!(
            "the executor {} speaks spawn protocol {found}; this steward speaks {}",
            executor.display(),
            steward_protocol::VERSION
        );
        assert!(err.contains(&expected), "{err}");
    }
}

#[test]
fn the_executor_is_statically_linked() {
    let elf = std::fs::read(bin("steward-executor")).unwrap();
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    let types: HashSet<u32> = (0..phnum)
        .map(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(elf[o..o + 4].try_into().unwrap())
        })
        .collect();
    const PT_INTERP: u32 = 3;
    assert!(
        !types.contains(&PT_INTERP),
        "steward-executor asks for a dynamic loader: build it with `make build`, which links it with +crt-static"
    );
}
