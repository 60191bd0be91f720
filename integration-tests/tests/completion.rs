//! `stewardctl list`, and the bash completion (packaging/completions/stewardctl.bash) that reads
//! it for service names: against a real steward, through --control and $STEWARD_CONTROL, and
//! quietly nothing when no manager answers. (`make deb-check` runs the same through an installed
//! package and bash-completion's loader.)

use std::path::{Path, PathBuf};
use std::process::Command;

use steward_integration_tests::*;

const CONFIG: &str = r#"
[service.web]
exec = ["/bin/sleep", "1000"]

[service.web-cache]
exec = ["/bin/sleep", "1000"]

[service.db]
exec = ["/bin/true"]
"#;

/// What bash's completion offers for the last of `words`, sorted and space-separated, with
/// `STEWARD_CONTROL` set to `env_control` if given; and what it printed on stderr.
fn complete(words: &[&str], env_control: Option<&Path>) -> (String, String) {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/completions/stewardctl.bash");
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-c"])
        .arg(
            r#". "$0"
            COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
            _stewardctl stewardctl "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD - 1]}"
            printf '%s\n' "${COMPREPLY[@]}""#,
        )
        .arg(&script)
        .args(words)
        .env("PATH", path)
        .env_remove("STEWARD_CONTROL");
    if let Some(control) = env_control {
        cmd.env("STEWARD_CONTROL", control);
    }
    let (status, out, err) = run(&mut cmd);
    assert!(status.success(), "bash: {err}");
    let mut offered: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    offered.sort();
    (offered.join(" "), err)
}

#[test]
fn list_prints_every_service_name_in_config_order() {
    let steward = Steward::start(CONFIG);
    steward.wait_state("web", "running");
    let (code, out, err) = steward.ctl(&["list"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(out, "web\nweb-cache\ndb\n");
    let (code, out, _) = steward.ctl(&["list", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out), serde_json::json!(["web", "web-cache", "db"]));

    let dir = temp_dir();
    let (code, out, err) = ctl_at(&dir.path().join("none"), &["list"]);
    assert_eq!((code, out.as_str()), (3, ""), "{err}");
}

#[test]
fn bash_completes_commands_options_and_the_managers_services() {
    let steward = Steward::start(CONFIG);
    steward.wait_state("web", "running");
    let control = steward.control();
    let control = control.to_str().unwrap();

    assert_eq!(complete(&["stewardctl", "st"], None).0, "start status stop");
    assert_eq!(complete(&["stewardctl", "li"], None).0, "list");
    assert_eq!(
        complete(&["stewardctl", "logs", "-"], None).0,
        "--control --follow --help --json --lines --version -f -h -n"
    );
    let names = |words: &[&str]| complete(words, None).0;
    assert_eq!(
        names(&["stewardctl", "--control", control, "restart", ""]),
        "db web web-cache"
    );
    assert_eq!(
        names(&["stewardctl", "status", "--control", control, "we"]),
        "web web-cache"
    );
    // bash splits `--control=PATH` at the '=' into three words.
    assert_eq!(
        names(&["stewardctl", "--control", "=", control, "logs", "d"]),
        "db"
    );
    assert_eq!(
        complete(&["stewardctl", "stop", ""], Some(&steward.control())).0,
        "db web web-cache"
    );
    // Commands that take no service name get none.
    assert_eq!(
        names(&["stewardctl", "--control", control, "reload", ""]),
        ""
    );
}

#[test]
fn bash_completion_is_silent_when_no_manager_answers() {
    let dir = temp_dir();
    let none = dir.path().join("control");
    let (offered, err) = complete(&["stewardctl", "status", ""], Some(&none));
    assert_eq!((offered.as_str(), err.as_str()), ("", ""));
    let (offered, err) = complete(
        &[
            "stewardctl",
            "--control",
            none.to_str().unwrap(),
            "start",
            "w",
        ],
        None,
    );
    assert_eq!((offered.as_str(), err.as_str()), ("", ""));
}
