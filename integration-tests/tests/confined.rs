//! A config error stays with its service: at boot (and at a reexec, which re-reads the config
//! on disk) a service whose own table has an error is `failed` with it, and so is what
//! `requires` it; everything else starts. `--check` and `reload` stay strict.

use steward_integration_tests::*;

/// Five services, two with errors of their own (a bad key, a bad duration), and a sixth that
/// requires one of the broken ones.
const FIVE: &str = r#"[service.one]
exec = ["/bin/sleep", "1000"]

[service.typo]
exec = ["/bin/sleep", "1000"]
kep_alive = true

[service.two]
exec = ["/bin/sleep", "1000"]

[service.slow]
exec = ["/bin/sleep", "1000"]
restart_delay = "soon"

[service.three]
exec = ["/bin/sleep", "1000"]

[service.needs-slow]
exec = ["/bin/sleep", "1000"]
requires = ["slow"]
"#;

/// `failure.reason` of a service in `status --json`.
fn reason(s: &Steward, name: &str) -> String {
    s.service(name)["failure"]["reason"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no failure"))
        .to_string()
}

fn config_file(s: &Steward) -> String {
    s.dir.path().join("steward.toml").display().to_string()
}

#[test]
fn a_broken_table_fails_its_service_and_what_requires_it_and_the_rest_runs() {
    let s = Steward::start(FIVE);
    for name in ["one", "two", "three"] {
        s.wait_state(name, "running");
    }
    let file = config_file(&s);
    assert_eq!(s.service("typo")["state"], "failed");
    assert_eq!(
        reason(&s, "typo"),
        format!("config: {file}:6:1: unknown key `kep_alive` in service `typo`")
    );
    assert_eq!(s.service("slow")["state"], "failed");
    assert!(
        reason(&s, "slow").starts_with(&format!(
            "config: {file}:13:17: `restart_delay`: bad duration \"soon\""
        )),
        "{}",
        reason(&s, "slow")
    );
    let dependent = s.wait_state("needs-slow", "failed");
    assert_eq!(dependent["failure"]["reason"], "dependency slow failed");
    assert!(s.count("refused typo, slow; everything else starts") > 0);

    // `status NAME` shows them too, and a start is refused with the reason.
    let (_, out, _) = s.ctl(&["status", "typo"]);
    assert!(out.contains("unknown key `kep_alive`"), "{out}");
    let (code, _, err) = s.ctl(&["start", "slow"]);
    assert_eq!(code, 1);
    assert!(err.contains("bad duration"), "{err}");
}

#[test]
fn check_still_lists_every_error_and_exits_1() {
    let dir = temp_dir();
    let path = dir.path().join("steward.toml");
    std::fs::write(&path, FIVE).unwrap();
    let (status, out, err) = run(std::process::Command::new(bin("steward"))
        .arg("--check")
        .arg("--config")
        .arg(&path));
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains(":6:1: unknown key `kep_alive`"), "{err}");
    assert!(
        err.contains(":13:17: `restart_delay`: bad duration"),
        "{err}"
    );
    assert!(err.contains("2 errors in the config"), "{err}");
}

#[test]
fn without_one_valid_service_steward_exits_1_and_starts_nothing() {
    let dir = temp_dir();
    let path = dir.path().join("steward.toml");
    std::fs::write(&path, "[service.bad]\nexec = [\"nope\"]\n").unwrap();
    let (status, _, err) = run(std::process::Command::new(bin("steward"))
        .arg("--config")
        .arg(&path)
        .arg("--control")
        .arg(dir.path().join("control")));
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("1 error in the config") && err.contains("no service without errors"),
        "{err}"
    );
}

#[test]
fn a_name_defined_twice_is_refused_both_times() {
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("a.toml"),
        "[service.dup]\nexec = [\"/bin/sleep\", \"1000\"]\n[service.fine]\nexec = [\"/bin/sleep\", \"1000\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "[service.dup]\nexec = [\"/bin/sleep\", \"2000\"]\n",
    )
    .unwrap();
    let config = dir.path().to_path_buf();
    let s = Steward::start_at(&config, dir);
    s.wait_state("fine", "running");
    let dup = s.service("dup");
    assert_eq!(dup["state"], "failed");
    let why = dup["failure"]["reason"].as_str().unwrap();
    assert_eq!(why.matches("is defined twice").count(), 2, "{why}");
    assert!(
        why.contains("a.toml:1:10") && why.contains("b.toml:1:10"),
        "{why}"
    );
    assert_eq!(s.status()["services"].as_array().unwrap().len(), 2);
}

#[test]
fn a_file_that_does_not_parse_contributes_nothing_and_is_logged() {
    let dir = temp_dir();
    std::fs::write(
        dir.path().join("a.toml"),
        "[service.good]\nexec = [\"/bin/sleep\", \"1000\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "[service.lost]\nexec = [\"/bin/sleep\"\n",
    )
    .unwrap();
    let config = dir.path().to_path_buf();
    let s = Steward::start_at(&config, dir);
    s.wait_state("good", "running");
    let names: Vec<_> = s.status()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["good"]);
    assert!(s.count("b.toml:2:") > 0, "{}", s.lines().join("\n"));
    assert!(s.count("what has them is left out") > 0);
}

#[test]
fn a_reload_with_an_error_changes_nothing_and_a_fixed_table_starts() {
    let s = Steward::start(FIVE);
    s.wait_state("one", "running");
    let one = s.service("one")["pid"].clone();
    let path = s.dir.path().join("steward.toml");
    // Still broken (and one more error): nothing changes.
    std::fs::write(
        &path,
        FIVE.replace("[service.three]\n", "[service.three]\nbogus = 1\n"),
    )
    .unwrap();
    let (code, _, err) = s.ctl(&["reload"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown key `bogus`"), "{err}");
    assert_eq!(s.service("three")["state"], "running");
    // Fixed: the refused ones start, and what failed on their account starts with them.
    let fixed = FIVE
        .replace("kep_alive = true\n", "")
        .replace("restart_delay = \"soon\"\n", "");
    std::fs::write(&path, fixed).unwrap();
    let (code, out, err) = s.ctl(&["reload"]);
    assert_eq!(code, 0, "{out}{err}");
    for name in ["typo", "slow", "needs-slow"] {
        s.wait_state(name, "running");
    }
    assert_eq!(
        s.service("one")["pid"],
        one,
        "an unchanged service is not touched"
    );
}

#[test]
fn a_reexec_keeps_the_refused_refused_and_refuses_a_table_broken_since() {
    let s = Steward::start(FIVE);
    s.wait_state("two", "running");
    let one = s.service("one")["pid"].clone();
    let path = s.dir.path().join("steward.toml");
    std::fs::write(
        &path,
        FIVE.replace("[service.two]\n", "[service.two]\nbogus = 1\n"),
    )
    .unwrap();
    let (code, out, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 0, "{out}{err}");
    // The reexec re-reads the config on disk as a boot would: two's table is broken now.
    let two = s.wait_state("two", "failed");
    assert!(
        two["failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown key `bogus`"),
        "{two}"
    );
    assert_eq!(s.service("typo")["state"], "failed");
    assert!(reason(&s, "typo").contains("kep_alive"));
    assert_eq!(s.service("needs-slow")["state"], "failed");
    assert_eq!(s.service("one")["pid"], one, "the rest kept running");
    // And a second reexec reads the same: nothing refused starts, nothing running stops.
    let (code, out, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 0, "{out}{err}");
    s.wait_for_nth("took over from version", 2);
    assert_eq!(s.service("one")["pid"], one);
    assert_eq!(s.service("two")["state"], "failed");
}

#[test]
#[ignore = "needs root"]
fn as_pid_1_the_same_config_boots_the_good_services() {
    let dir = temp_dir();
    let path = dir.path().join("steward.toml");
    std::fs::write(&path, FIVE).unwrap();
    let cmd = Steward::command_under(PID_NAMESPACE, &bin("steward"), &path, dir.path());
    let s = Steward::spawn(cmd, dir);
    for name in ["one", "two", "three"] {
        s.wait_state(name, "running");
    }
    assert_eq!(s.status()["manager"]["pid"], 1);
    assert_eq!(s.service("typo")["state"], "failed");
    assert_eq!(
        s.wait_state("needs-slow", "failed")["failure"]["reason"],
        "dependency slow failed"
    );
    assert_eq!(s.count("emergency"), 0);
    let (code, _, err) = s.ctl(&["poweroff"]);
    assert_eq!(code, 0, "{err}");
}
