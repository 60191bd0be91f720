//! Writes the fuzz targets' seed corpora from real encodings (`fuzz/seeds/`), so the fuzzers
//! start from valid inputs and mutate from there. Run after a format change with
//! `STEWARD_WRITE_SEEDS=1 cargo test -p steward-protocol --test fuzz_seeds`; without the
//! variable it only checks that every seed still decodes.

use std::path::PathBuf;

use steward_protocol::control::{Reply, Request, encode_frame};
use steward_protocol::{Credentials, Rlimit, SpawnState, Stdio};

fn seeds_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
}

fn spawn_states() -> Vec<SpawnState> {
    let base = SpawnState {
        name: "echo".into(),
        path: "/usr/bin/echo-server".into(),
        argv: vec!["/usr/bin/echo-server".into(), "--idle".into(), "5".into()],
        env: vec!["PATH=/usr/bin:/bin".into(), "LISTEN_FDS=1".into()],
        pid_vars: vec!["LISTEN_PID".into()],
        stdio: [Stdio::Null, Stdio::Fd(7), Stdio::Fd(8)],
        fds: vec![5],
        status_fd: 9,
        working_directory: "/".into(),
        umask: 0o022,
        credentials: None,
        rlimits: vec![],
        cgroups: vec![],
        fds_at: Vec::new(),
        reset_signals: vec![13],
    };
    let full = SpawnState {
        stdio: [
            Stdio::Inherit,
            Stdio::Path("/dev/ttyS0".into()),
            Stdio::Fd(2),
        ],
        credentials: Some(Credentials {
            uid: 1000,
            gid: 100,
            groups: vec![100, 27],
        }),
        rlimits: vec![Rlimit {
            resource: 7,
            value: 1024,
        }],
        cgroups: vec!["/sys/fs/cgroup/memory/steward/echo".into()],
        fds: vec![5, 6, 10],
        ..base.clone()
    };
    vec![base, full]
}

fn requests() -> Vec<Request> {
    let names = vec!["echo".to_string(), "ticker".to_string()];
    vec![
        Request::Status { names: vec![] },
        Request::Status {
            names: names.clone(),
        },
        Request::Start {
            names: names.clone(),
            wait: true,
        },
        Request::Stop {
            names: names.clone(),
            wait: false,
        },
        Request::Restart { names, wait: true },
        Request::Logs {
            name: "echo".into(),
            lines: Some(10),
            follow: true,
        },
        Request::Reload,
        Request::Reexec,
        Request::Shutdown,
        Request::Poweroff,
        Request::Reboot,
        Request::Version,
    ]
}

fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, state) in spawn_states().iter().enumerate() {
        out.push((
            "spawn_state",
            format!("state-{i}"),
            steward_protocol::encode(state).unwrap(),
        ));
    }
    out.push((
        "manager_state",
        "fixture-v1".into(),
        include_bytes!("fixtures/manager-state-v1.bin").to_vec(),
    ));
    out.push((
        "manager_state",
        "fixture-v2".into(),
        include_bytes!("fixtures/manager-state-v2.bin").to_vec(),
    ));
    for (i, request) in requests().iter().enumerate() {
        out.push((
            "control_request",
            format!("request-{i}"),
            encode_frame(request),
        ));
    }
    out.push((
        "control_request",
        "reply-reexeced".into(),
        encode_frame(&Reply::Reexeced {
            old: "0.1.0".into(),
            new: "0.2.0".into(),
        }),
    ));
    out
}

#[test]
fn seeds_are_real_encodings() {
    let write = std::env::var_os("STEWARD_WRITE_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let dir = seeds_dir(target);
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(&name), &bytes).unwrap();
        } else {
            let stored = std::fs::read(dir.join(&name))
                .unwrap_or_else(|e| panic!("{target}/{name}: {e}: write the seeds"));
            assert_eq!(stored, bytes, "{target}/{name} is stale: rewrite the seeds");
        }
    }
}
