//! `runtime_directory`, `state_directory`, `cache_directory`, `logs_directory`: made under the
//! real /run, /var/lib, /var/cache and /var/log before each spawn, owned by the service's user,
//! and the runtime ones removed when the service stops but not when it restarts. The names
//! carry the test's pid, so runs never meet.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use steward_integration_tests::*;

/// Removes the test's directories however the test ends.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_dir_all(path);
            let _ = std::fs::remove_file(path);
        }
    }
}

fn nobody() -> (u32, u32) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("a nobody user");
    let fields: Vec<&str> = line.split(':').collect();
    (fields[2].parse().unwrap(), fields[3].parse().unwrap())
}

fn owner_and_mode(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(meta.is_dir(), "{} is not a directory", path.display());
    (meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777)
}

#[test]
#[ignore = "needs root"]
fn directories_are_the_services_and_runtime_ones_go_at_stop_not_at_restart() {
    let name = format!("steward-test-dirs-{}", std::process::id());
    let run = Path::new("/run").join(&name);
    let state = Path::new("/var/lib").join(&name);
    let cache = Path::new("/var/cache").join(&name);
    let logs = Path::new("/var/log").join(&name);
    let _cleanup = Cleanup(vec![
        run.clone(),
        state.clone(),
        cache.clone(),
        logs.clone(),
    ]);
    let s = Steward::start(&format!(
        r#"
[service.dirs]
exec = ["/bin/sh", "-c", "echo $$ > /run/{name}/pid && echo kept > /var/lib/{name}/data && exec sleep 1000"]
user = "nobody"
runtime_directory = ["{name}"]
state_directory = ["{name}"]
cache_directory = ["{name}"]
logs_directory = ["{name}"]
directory_mode = "0750"
"#
    ));
    let first = s.wait_state("dirs", "running")["pid"].as_i64().unwrap();
    wait_until("the service wrote its pid file", || {
        run.join("pid").exists()
    });
    let (uid, gid) = nobody();
    for dir in [&run, &state, &cache, &logs] {
        assert_eq!(owner_and_mode(dir), (uid, gid, 0o750), "{}", dir.display());
    }

    // A restart keeps the runtime directory: a file only the test wrote is still there.
    std::fs::write(run.join("marker"), "").unwrap();
    let (code, out, err) = s.ctl(&["restart", "dirs"]);
    assert_eq!(code, 0, "{out}{err}");
    let second = s.wait_state("dirs", "running")["pid"].as_i64().unwrap();
    assert_ne!(first, second);
    assert!(
        run.join("marker").exists(),
        "a restart removed the runtime directory"
    );

    // A stop removes it with what it holds; the others stay, with their content.
    let (code, out, err) = s.ctl(&["stop", "dirs"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("the runtime directory is removed", || !run.exists());
    assert_eq!(
        std::fs::read_to_string(state.join("data")).unwrap(),
        "kept\n"
    );
    assert!(cache.is_dir() && logs.is_dir());

    // A start makes it again.
    let (code, out, err) = s.ctl(&["start", "dirs"]);
    assert_eq!(code, 0, "{out}{err}");
    wait_until("the service wrote its pid file again", || {
        run.join("pid").exists()
    });

    // Shutting steward down stops it: the runtime directory goes again.
    let mut s = s;
    s.terminate();
    assert!(!run.exists(), "the runtime directory outlived the shutdown");
    assert!(state.join("data").exists());
}

/// A setup task's runtime directory is gone once it has exited, and a failed one's once it
/// failed: both have come to rest.
#[test]
#[ignore = "needs root"]
fn runtime_directories_go_when_a_service_exits_or_fails() {
    let name = format!("steward-test-rest-{}", std::process::id());
    let ok = Path::new("/run").join(format!("{name}-ok"));
    let bad = Path::new("/run").join(format!("{name}-bad"));
    let _cleanup = Cleanup(vec![ok.clone(), bad.clone()]);
    let s = Steward::start(&format!(
        r#"
[service.ok]
exec = ["/bin/sh", "-c", "test -d /run/{name}-ok"]
ready = "exit"
runtime_directory = ["{name}-ok"]

[service.bad]
exec = ["/bin/sh", "-c", "test -d /run/{name}-bad && exit 3"]
runtime_directory = ["{name}-bad"]
"#
    ));
    // Each checked its directory was there: exit 0 for `ok`, 3 (not 1) for `bad`.
    s.wait_state("ok", "exited");
    s.wait_for("bad: exited with status 3");
    s.wait_state("bad", "failed");
    wait_until("both runtime directories are removed", || {
        !ok.exists() && !bad.exists()
    });
}

/// An automatic restart is no rest: what the first run left in its runtime directory is
/// there for the second, which only then stays up.
#[test]
#[ignore = "needs root"]
fn an_automatic_restart_keeps_the_runtime_directory() {
    let name = format!("steward-test-crash-{}", std::process::id());
    let run = Path::new("/run").join(&name);
    let _cleanup = Cleanup(vec![run.clone()]);
    let s = Steward::start(&format!(
        r#"
[service.crash]
exec = ["/bin/sh", "-c", "test -e /run/{name}/marker && exec sleep 1000; touch /run/{name}/marker; exit 1"]
keep_alive = true
restart_delay = "0"
runtime_directory = ["{name}"]
"#
    ));
    wait_until("the second run is up", || {
        let json = s.service("crash");
        json["state"] == "running" && json["restarts"] == 1
    });
    assert!(run.join("marker").exists());
}

#[test]
#[ignore = "needs root"]
fn a_directory_that_cannot_be_made_fails_at_its_step_with_systemds_status() {
    let name = format!("steward-test-baddirs-{}", std::process::id());
    let run = Path::new("/run").join(&name);
    let state = Path::new("/var/lib").join(&name);
    let _cleanup = Cleanup(vec![run.clone(), state.clone()]);
    // Files where the directories should be: nothing is removed to make room.
    std::fs::write(&run, "not a directory").unwrap();
    std::fs::write(&state, "not a directory").unwrap();
    let s = Steward::start(&format!(
        r#"
[service.noruntime]
exec = ["/bin/true"]
runtime_directory = ["{name}"]

[service.nostate]
exec = ["/bin/true"]
state_directory = ["{name}"]
"#
    ));
    s.wait_for(&format!(
        "steward: noruntime: failed at runtime_directory: /run/{name}: Not a directory"
    ));
    s.wait_for(&format!(
        "steward: nostate: failed at state_directory: /var/lib/{name}: Not a directory"
    ));
    let runtime = s.wait_state("noruntime", "failed");
    assert_eq!(runtime["failure"]["step"], "runtime_directory");
    assert_eq!(runtime["failure"]["status"], 233);
    let state_json = s.wait_state("nostate", "failed");
    assert_eq!(state_json["failure"]["step"], "state_directory");
    assert_eq!(state_json["failure"]["status"], 238);
    assert_eq!(
        std::fs::read_to_string(&run).unwrap(),
        "not a directory",
        "the file in the way was touched"
    );
}

/// A config that names a directory outside its root is refused at load, at the name.
#[test]
fn a_directory_outside_its_root_is_a_config_error() {
    let dir = temp_dir();
    let path = dir.path().join("steward.toml");
    std::fs::write(
        &path,
        "[service.a]\nexec = [\"/bin/true\"]\nruntime_directory = [\"../etc\"]\n",
    )
    .unwrap();
    let (status, out, err) = run(std::process::Command::new(bin("steward"))
        .arg("--check")
        .arg("--config")
        .arg(&path));
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains(&format!(
            "{}:3:22: `runtime_directory`: \"../etc\" must not contain `..`",
            path.display()
        )),
        "{err}"
    );
}
