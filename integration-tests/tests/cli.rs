//! The command lines of `steward` and `steward-executor`, and every bad input they refuse: each
//! a clear, positioned, one-screen error and the documented exit status.

use std::process::Command;

use steward_integration_tests::*;

fn check(config: &str) -> (i32, String, String) {
    let dir = temp_dir();
    let path = dir.path().join("steward.toml");
    std::fs::write(&path, config).unwrap();
    let (status, out, err) = run(Command::new(bin("steward"))
        .arg("--check")
        .arg("--config")
        .arg(&path));
    // Positions are reported against the path given; make them comparable.
    let err = err.replace(path.to_str().unwrap(), "FILE");
    (status.code().unwrap(), out, err)
}

#[test]
fn check_accepts_a_good_config_and_prints_each_service() {
    let (code, out, err) = check(
        r#"
[manager]
log_buffer = "32K"

[service.web]
exec = ["/usr/bin/env", "true"]
keep_alive = true
stop_signal = "SIGINT"
limits = { nofile = 1024 }

[service.once]
exec = ["/bin/true"]
"#,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
    assert_eq!(
        out,
        "web: /usr/bin/env true (keep_alive)\nonce: /bin/true (one-shot)\n"
    );
}

#[test]
fn check_reports_all_five_mistakes_with_positions() {
    let (code, out, err) = check(
        r#"[service.a]
exec = ["relative/path"]
restart_delay = "soon"
colour = "blue"

[service.b]
keep_alive = true
stop_signal = "SIGNOPE"
"#,
    );
    assert_eq!(code, 1);
    assert_eq!(out, "");
    let expected = [
        "FILE:2:9: `exec[0]` must be an absolute path, not \"relative/path\"",
        "FILE:3:17: `restart_delay`: bad duration \"soon\"",
        "FILE:4:1: unknown key `colour` in service `a`",
        "FILE:6:10: service `b` has no `exec`",
        "FILE:8:15: `stop_signal`: unknown signal \"SIGNOPE\"",
        "steward: error: 5 errors in the config",
    ];
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, want) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(want),
            "{line:?} should start with {want:?}"
        );
    }
}

/// Each bad case on its own, named, with the message it must produce.
#[test]
fn check_refuses_each_bad_case() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "syntax error",
            "[service.a\nexec = [\"/bin/true\"]\n",
            "FILE:1:",
        ),
        (
            "unknown top-level key",
            "[services.a]\nexec = [\"/bin/true\"]\n",
            "FILE:1:2: unknown top-level key `services`",
        ),
        (
            "missing exec",
            "[service.a]\nkeep_alive = true\n",
            "FILE:1:10: service `a` has no `exec`",
        ),
        (
            "empty exec",
            "[service.a]\nexec = []\n",
            "FILE:2:8: `exec` must name a program",
        ),
        (
            "wrong type",
            "[service.a]\nexec = \"/bin/true\"\n",
            "FILE:2:8: `exec` must be an array, not string",
        ),
        (
            "reserved environment variable",
            "[service.a]\nexec = [\"/bin/true\"]\nenvironment = { LISTEN_FDS = \"1\" }\n",
            "FILE:3:17: `environment`: LISTEN_FDS is set by steward",
        ),
        (
            "bad umask",
            "[service.a]\nexec = [\"/bin/true\"]\numask = \"999\"\n",
            "FILE:3:9: `umask` must be octal",
        ),
        (
            "unknown limit",
            "[service.a]\nexec = [\"/bin/true\"]\nlimits = { files = 3 }\n",
            "FILE:3:12: `limits`: unknown limit `files`",
        ),
        (
            "burst out of range",
            "[service.a]\nexec = [\"/bin/true\"]\nstart_limit_burst = 0\n",
            "FILE:3:21: `start_limit_burst` must be between 1 and",
        ),
        (
            "accept with keep_alive",
            "[service.a]\nexec = [\"/bin/true\"]\naccept = true\nkeep_alive = true\n",
            "`accept` cannot be combined with `keep_alive`",
        ),
        (
            "lazy without a socket",
            "[service.a]\nexec = [\"/bin/true\"]\nlazy = true\nkeep_alive = true\n",
            "`lazy` needs at least one [[service.a.socket]]",
        ),
        (
            "bad size",
            "[service.a]\nexec = [\"/bin/true\"]\nmemory_max = \"lots\"\n",
            "FILE:3:14: `memory_max`: bad size \"lots\"",
        ),
    ];
    for (name, config, want) in cases {
        let (code, _, err) = check(config);
        assert_eq!(code, 1, "case {name:?}: {err}");
        assert!(
            err.contains(want),
            "case {name:?}: {err:?} should contain {want:?}"
        );
        assert!(
            err.lines().count() <= 24,
            "case {name:?}: not one screen:\n{err}"
        );
    }
}

/// A user or group unknown at load may be created before the service starts (by an earlier
/// boot step): a warning with its position, not an error.
#[test]
fn check_warns_about_unknown_users_and_groups_and_accepts_the_config() {
    let (code, out, err) = check(
        "[service.a]\nexec = [\"/bin/true\"]\nuser = \"no-such-user-xyz\"\nsupplementary_groups = [\"no-such-group-xyz\"]\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err,
        "FILE:3:8: warning: unknown user \"no-such-user-xyz\"\nFILE:4:25: warning: unknown group \"no-such-group-xyz\"\n"
    );
    assert_eq!(out, "a: /bin/true (one-shot)\n");
}

#[test]
fn a_name_defined_in_two_files_names_both_places() {
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("10-a.toml"),
        "[service.x]\nexec = [\"/bin/true\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("20-b.toml"),
        "\n[service.x]\nexec = [\"/bin/true\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("ignored.txt"), "not toml at all").unwrap();
    let (status, _, err) = run(Command::new(bin("steward"))
        .arg("--check")
        .arg("--config")
        .arg(dir.path()));
    assert_eq!(status.code(), Some(1));
    let d = dir.path().display();
    assert!(
        err.contains(&format!(
            "{d}/20-b.toml:2:10: service `x` is defined twice (also at {d}/10-a.toml:1:10)"
        )),
        "{err}"
    );
}

#[test]
fn a_config_directory_is_read_in_name_order() {
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("b.toml"),
        "[service.second]\nexec = [\"/bin/true\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("a.toml"),
        "[service.first]\nexec = [\"/bin/true\"]\n",
    )
    .unwrap();
    let (status, out, _) = run(Command::new(bin("steward"))
        .arg("--check")
        .arg("--config")
        .arg(dir.path()));
    assert!(status.success());
    assert_eq!(
        out,
        "first: /bin/true (one-shot)\nsecond: /bin/true (one-shot)\n"
    );
}

#[test]
fn a_missing_config_is_a_clear_error() {
    let (status, _, err) =
        run(Command::new(bin("steward")).args(["--config", "/nonexistent/steward.toml"]));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        err,
        "steward: error: cannot read the config: /nonexistent/steward.toml: No such file or directory (os error 2)\n"
    );
}

#[test]
fn a_missing_executor_is_a_clear_error() {
    let dir = temp_dir();
    let path = dir.path().join("steward.toml");
    std::fs::write(&path, "[service.a]\nexec = [\"/bin/true\"]\n").unwrap();
    let (status, _, err) = run(Command::new(bin("steward"))
        .arg("--config")
        .arg(&path)
        .args(["--executor", "/nonexistent/steward-executor"]));
    assert_eq!(status.code(), Some(1));
    assert_eq!(
        err,
        "steward: error: cannot open the executor /nonexistent/steward-executor: No such file or directory (os error 2)\n"
    );
}

#[test]
fn a_non_executable_executor_is_a_clear_error() {
    let dir = temp_dir();
    let path = dir.path().join("steward.toml");
    std::fs::write(&path, "[service.a]\nexec = [\"/bin/true\"]\n").unwrap();
    let fake = dir.path().join("steward-executor");
    std::fs::write(&fake, "not a program").unwrap();
    let (status, _, err) = run(Command::new(bin("steward"))
        .arg("--config")
        .arg(&path)
        .arg("--executor")
        .arg(&fake));
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("is not an executable file"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    let (status, _, err) = run(Command::new(bin("steward")).arg("--frobnicate"));
    assert_eq!(status.code(), Some(2));
    assert!(
        err.starts_with("steward: unknown argument '--frobnicate'\nusage: steward"),
        "{err}"
    );
    let (status, out, _) = run(Command::new(bin("steward")).arg("--version"));
    assert!(status.success());
    assert!(out.starts_with("steward "));
}
