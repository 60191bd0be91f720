//! Micro-benchmarks of what crosses a process boundary on every spawn and at every reexec:
//! encoding and decoding a spawn state (manager and executor side), and a manager state.

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use steward_protocol::reexec::{self, ManagerState};
use steward_protocol::{Rlimit, SpawnState, Stdio};

/// A spawn state as a typical service produces it: a few arguments, a base environment plus
/// socket variables, two sockets, logging pipes, a limit and a cgroup.
fn spawn_state() -> SpawnState {
    SpawnState {
        name: "echo".into(),
        path: "/usr/libexec/echo-server".into(),
        argv: vec!["/usr/libexec/echo-server".into(), "--verbose".into()],
        env: vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "LISTEN_FDS=2".into(),
            "LISTEN_FDNAMES=echo:admin".into(),
            "SOCKET_TAKEOVER=1".into(),
            "HOME=/var/lib/echo".into(),
            "USER=echo".into(),
        ],
        pid_vars: vec!["LISTEN_PID".into()],
        stdio: [Stdio::Null, Stdio::Fd(7), Stdio::Fd(8)],
        fds: vec![5, 6],
        status_fd: 9,
        working_directory: "/var/lib/echo".into(),
        umask: 0o022,
        credentials: Some(steward_protocol::Credentials {
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 27],
        }),
        rlimits: vec![Rlimit {
            resource: 7,
            value: 1024,
        }],
        cgroups: vec!["/sys/fs/cgroup/steward/echo".into()],
        fds_at: Vec::new(),
        reset_signals: vec![13],
    }
}

fn codec(c: &mut Criterion) {
    let state = spawn_state();
    let bytes = steward_protocol::encode(&state).unwrap();
    c.bench_function("spawn_state_encode", |b| {
        b.iter(|| steward_protocol::encode(black_box(&state)).unwrap())
    });
    c.bench_function("spawn_state_decode", |b| {
        b.iter(|| steward_protocol::decode(black_box(&bytes)).unwrap())
    });
    // A manager state with 100 services, each holding 20 log lines.
    let manager: ManagerState = manager_state(100);
    let encoded = reexec::encode(&manager).unwrap();
    c.bench_function("manager_state_encode_100", |b| {
        b.iter(|| reexec::encode(black_box(&manager)).unwrap())
    });
    c.bench_function("manager_state_decode_100", |b| {
        b.iter(|| reexec::decode(black_box(&encoded), reexec::VERSION).unwrap())
    });
}

fn manager_state(services: usize) -> ManagerState {
    let line = |i: usize| reexec::LogLine {
        time_us: 1_790_000_000_000_000 + i as u64,
        name: "svc".into(),
        pid: 4242,
        stream: 0,
        text: format!("log line number {i} of a service that talks"),
    };
    ManagerState {
        version: "0.1.0".into(),
        exe: b"/sbin/steward".to_vec(),
        config: vec![(
            b"/etc/steward/steward.toml".to_vec(),
            "x".repeat(services * 80),
        )],
        written_ns: 0,
        control_fd: 4,
        client_fd: Some(5),
        notify_fd: Some(6),
        watchdog_fd: None,
        stop_jobs: vec![],
        services: (0..services)
            .map(|i| reexec::Service {
                name: format!("svc{i}"),
                state: reexec::State::Running {
                    pid: 1000 + i as i32,
                    age_ns: 5,
                    serving: reexec::Serving::Ready,
                },
                since_unix_ns: 0,
                restarts: 0,
                recent_restart_ages_ns: vec![],
                last_exit: None,
                last_failure: None,
                instances: vec![],
                next_instance: 1,
                sockets: vec![(0, 10 + i as i32)],
                watched: false,
                oom_baseline: None,
                log: (0..20).map(line).collect(),
                log_dropped: 0,
                pipes: vec![],
                writers: None,
                status_pipes: vec![],
                timers: vec![],
                cgroup_to_remove: false,
                parked_fd: None,
                status_text: None,
                errno: None,
                ready_fd: None,
                stored_fds: vec![],
                watchdog_usec: None,
            })
            .collect(),
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
