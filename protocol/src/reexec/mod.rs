//! The manager's state as it crosses a `reexec`: written by the running manager into a sealed
//! memfd, read by the `steward` binary it execs (`--deserialize FD`).
//!
//! The format is versioned on its own (not with the spawn state): a newer manager must read
//! every older state, because an upgrade execs a new binary with the old binary's state. So a
//! version's types, once released, are frozen: a change of shape is a new version with its own
//! types and a conversion from the older ones in [`decode`]. Version 1 lives in [`v1`]; the
//! types here are version 2's. The fixture tests keep every version readable.
//!
//! Fds are carried as numbers: the old manager clears FD_CLOEXEC on exactly the fds named here,
//! so they are open at the same numbers in the new image.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The first bytes of an encoded manager state.
pub const MAGIC: [u8; 4] = *b"STWR";
/// The newest state version this build writes and reads.
pub const VERSION: u32 = 2;
/// magic + version + payload length.
pub const HEADER_LEN: usize = 12;
/// The largest payload accepted. Log rings dominate: 1000 services with 64 KiB rings are
/// 64 MiB.
pub const MAX_PAYLOAD: usize = 256 << 20;

pub mod v1;

pub use v1::{Exit, Failure, Instance, LogLine, Pipe};

/// Everything a manager hands to the binary it re-executes into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerState {
    /// The package version of the manager that wrote it.
    pub version: String,
    /// The path the first manager was started from (bytes: a path need not be UTF-8): what
    /// every later `reexec` executes.
    pub exe: Vec<u8>,
    /// The config it runs: every file as it was read at the last successful load or reload,
    /// as (path, text). The new manager parses these to know what each service runs with,
    /// then applies whatever is on disk now as a reload.
    pub config: Vec<(Vec<u8>, String)>,
    /// CLOCK_MONOTONIC, in nanoseconds, just before the exec: how long the handover took.
    pub written_ns: u64,
    /// The listening control socket.
    pub control_fd: i32,
    /// The control connection waiting for the `reexec` reply, if any.
    pub client_fd: Option<i32>,
    /// The sd_notify socket, if the manager had one.
    pub notify_fd: Option<i32>,
    /// The hardware watchdog device, if the manager had it open.
    pub watchdog_fd: Option<i32>,
    /// Services waiting to be stopped once what depends on them has: (name, start again).
    pub stop_jobs: Vec<(String, bool)>,
    /// Every service, in the manager's order.
    pub services: Vec<Service>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Its name; the key into the config.
    pub name: String,
    /// Where it is.
    pub state: State,
    /// When it entered that state: nanoseconds since the epoch.
    pub since_unix_ns: u64,
    /// Automatic restarts since it was last started by hand or at boot.
    pub restarts: u32,
    /// The restarts inside the start-limit window, as ages in nanoseconds.
    pub recent_restart_ages_ns: Vec<u64>,
    /// How its last process ended.
    pub last_exit: Option<Exit>,
    /// Its last failure.
    pub last_failure: Option<Failure>,
    /// Accept mode: running instances.
    pub instances: Vec<Instance>,
    /// Accept mode: the number the next instance gets.
    pub next_instance: u32,
    /// Its open sockets: (index into the service's configured sockets, fd).
    pub sockets: Vec<(u32, i32)>,
    /// Whether the sockets are watched for connections.
    pub watched: bool,
    /// The cgroup's OOM-kill count at the last spawn.
    pub oom_baseline: Option<u64>,
    /// The kept log lines, oldest first.
    pub log: Vec<LogLine>,
    /// Lines dropped from the ring.
    pub log_dropped: u64,
    /// Read ends of its output pipes.
    pub pipes: Vec<Pipe>,
    /// The write ends passed to each spawn (stdout, stderr).
    pub writers: Option<[i32; 2]>,
    /// Status pipes of its executors that have not exec'd or reported yet: (pid, fd).
    pub status_pipes: Vec<(i32, i32)>,
    /// Its armed timers: (purpose, nanoseconds left). A purpose the reader does not know is
    /// dropped.
    pub timers: Vec<(String, u64)>,
    /// Whether its cgroup still waits to be removed.
    pub cgroup_to_remove: bool,
    /// Accept mode: a connection accepted but not yet given an instance (out of fds, say).
    pub parked_fd: Option<i32>,
    /// What it last said with `STATUS=`.
    pub status_text: Option<String>,
    /// What it last said with `ERRNO=`.
    pub errno: Option<i32>,
    /// `ready = "fd:N"`: the read end of the readiness pipe of this process: (pid, fd).
    pub ready_fd: Option<(i32, i32)>,
    /// Its fd store.
    pub stored_fds: Vec<StoredFd>,
    /// A watchdog interval the service set itself (`WATCHDOG_USEC=`), in microseconds.
    pub watchdog_usec: Option<u64>,
}

/// How far a process has come from the executor to the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exec {
    /// The executor runs.
    Pending,
    /// The executor reported a failed step.
    Failed {
        /// The step's number.
        step: u32,
        /// Its errno.
        errno: i32,
    },
    /// The program runs.
    Done,
}

/// What a running service said about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Serving {
    /// Ready.
    Ready,
    /// `RELOADING=1`.
    Reloading,
    /// `STOPPING=1`.
    Stopping,
}

/// Why a service failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cause {
    /// Its own doing.
    Own,
    /// Its start limit (a cool-down may be running).
    StartLimit,
    /// This service it requires failed.
    Dependency(String),
    /// Its config has errors.
    Config,
}

/// What a stopping service does once stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Then {
    /// Rest.
    Rest,
    /// Start again.
    Start,
    /// Fail, for this reason.
    Fail(Cause),
}

/// A service's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Not started, or stopped.
    Inactive,
    /// Waiting for its dependencies.
    Waiting,
    /// Sockets watched, no process.
    Listening,
    /// Spawned, not ready.
    Starting {
        /// Its pid.
        pid: i32,
        /// How far it came.
        exec: Exec,
    },
    /// Ready.
    Running {
        /// Its pid.
        pid: i32,
        /// How long it has run, in nanoseconds.
        age_ns: u64,
        /// What it said about itself.
        serving: Serving,
    },
    /// Ran and exited, not kept alive.
    Exited,
    /// Waiting to restart.
    Restarting,
    /// Being stopped.
    Stopping {
        /// The main process, if still there.
        pid: Option<i32>,
        /// How far that process came.
        exec: Exec,
        /// Whether SIGKILL was sent.
        killed: bool,
        /// What then.
        then: Then,
    },
    /// Gave up.
    Failed(Cause),
}

/// An fd a service keeps in steward's fd store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFd {
    /// Its `FDNAME`.
    pub name: String,
    /// The fd.
    pub fd: i32,
    /// Whether it is watched for a hang-up (not sent with `FDPOLL=0`).
    pub poll: bool,
}

impl From<v1::ManagerState> for ManagerState {
    fn from(old: v1::ManagerState) -> ManagerState {
        ManagerState {
            version: old.version,
            exe: old.exe,
            config: old.config,
            written_ns: old.written_ns,
            control_fd: old.control_fd,
            client_fd: old.client_fd,
            notify_fd: None,
            watchdog_fd: None,
            stop_jobs: Vec::new(),
            services: old.services.into_iter().map(Service::from).collect(),
        }
    }
}

impl From<v1::Service> for Service {
    fn from(old: v1::Service) -> Service {
        let exec = match old.pending_report {
            Some((step, errno)) => Exec::Failed { step, errno },
            None => Exec::Pending,
        };
        // Version 1 kept one timer, whose purpose the state told.
        let purpose = match old.state {
            v1::State::Restarting => Some("restart_delay"),
            v1::State::Stopping { killed: false, .. } => Some("stop_timeout"),
            v1::State::Listening => Some("backoff"),
            _ => None,
        };
        let timers = old
            .timer_ns
            .zip(purpose)
            .map(|(ns, purpose)| (purpose.to_string(), ns))
            .into_iter()
            .collect();
        let state = match old.state {
            v1::State::Inactive => State::Inactive,
            v1::State::Listening => State::Listening,
            v1::State::Starting { pid } => State::Starting { pid, exec },
            v1::State::Running { pid, age_ns } => State::Running {
                pid,
                age_ns,
                serving: Serving::Ready,
            },
            v1::State::Exited => State::Exited,
            v1::State::Restarting => State::Restarting,
            v1::State::Stopping {
                pid,
                killed,
                then_start,
            } => State::Stopping {
                pid,
                exec,
                killed,
                then: if then_start { Then::Start } else { Then::Rest },
            },
            v1::State::Failed => State::Failed(Cause::Own),
        };
        Service {
            name: old.name,
            state,
            since_unix_ns: old.since_unix_ns,
            restarts: old.restarts,
            recent_restart_ages_ns: old.recent_restart_ages_ns,
            last_exit: old.last_exit,
            last_failure: old.last_failure,
            instances: old.instances,
            next_instance: old.next_instance,
            sockets: old.sockets,
            watched: old.watched,
            oom_baseline: old.oom_baseline,
            log: old.log,
            log_dropped: old.log_dropped,
            pipes: old.pipes,
            writers: old.writers,
            status_pipes: old.status_pipes,
            timers,
            cgroup_to_remove: old.cgroup_to_remove,
            parked_fd: old.parked_fd,
            status_text: None,
            errno: None,
            ready_fd: None,
            stored_fds: Vec::new(),
            watchdog_usec: None,
        }
    }
}

/// Why a state could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Larger than [`MAX_PAYLOAD`].
    #[error("the manager state is {len} bytes, more than the limit of {max}")]
    TooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The serializer failed.
    #[error("the manager state could not be encoded: {reason}")]
    Encode {
        /// The serializer's message.
        reason: String,
    },
}

/// Why a state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a manager state.
    #[error("not a steward manager state (bad magic)")]
    BadMagic,
    /// Shorter than its header says.
    #[error("truncated: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// Written by a newer steward.
    #[error(
        "state version {found} was written by a newer steward; this one reads up to {readable}"
    )]
    Newer {
        /// The version found.
        found: u32,
        /// The newest this reader knows.
        readable: u32,
    },
    /// A version that never existed.
    #[error("unknown state version {found}")]
    Unknown {
        /// The version found.
        found: u32,
    },
    /// The header announces more than [`MAX_PAYLOAD`].
    #[error("payload of {len} bytes announced, more than the limit of {max}")]
    Oversized {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload does not decode.
    #[error("malformed manager state: {reason}")]
    Malformed {
        /// The deserializer's message.
        reason: String,
    },
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<MAX_PAYLOAD>()
}

/// Encodes a state at [`VERSION`].
pub fn encode(state: &ManagerState) -> Result<Vec<u8>, EncodeError> {
    let payload =
        bincode::serde::encode_to_vec(state, config()).map_err(|e| EncodeError::Encode {
            reason: e.to_string(),
        })?;
    if payload.len() > MAX_PAYLOAD {
        return Err(EncodeError::TooLarge {
            len: payload.len(),
            max: MAX_PAYLOAD,
        });
    }
    Ok(crate::with_header(MAGIC, VERSION, &payload))
}

/// Reads a state of any version up to `readable` (normally [`VERSION`]; lower only to act as
/// an older release would), converting older versions to the current types.
pub fn decode(bytes: &[u8], readable: u32) -> Result<ManagerState, DecodeError> {
    if bytes.len() < HEADER_LEN {
        if !MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
            return Err(DecodeError::BadMagic);
        }
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            got: bytes.len(),
        });
    }
    if bytes[..4] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let version = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    let len = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    if len > MAX_PAYLOAD {
        return Err(DecodeError::Oversized {
            len,
            max: MAX_PAYLOAD,
        });
    }
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != len {
        return Err(DecodeError::Truncated {
            needed: HEADER_LEN + len,
            got: bytes.len(),
        });
    }
    if version > readable.min(VERSION) {
        return Err(DecodeError::Newer {
            found: version,
            readable: readable.min(VERSION),
        });
    }
    match version {
        1 => decode_payload::<v1::ManagerState>(payload).map(ManagerState::from),
        2 => decode_payload::<ManagerState>(payload),
        found => Err(DecodeError::Unknown { found }),
    }
}

/// One service alone, without a header: what the manager's panic-recovery snapshot keeps of
/// each unit between its changes, a fraction of the decoded size (most fields are empty or
/// small numbers, a byte each).
pub fn encode_service(service: &Service) -> Result<Vec<u8>, EncodeError> {
    bincode::serde::encode_to_vec(service, config()).map_err(|e| EncodeError::Encode {
        reason: e.to_string(),
    })
}

/// A service [`encode_service`] wrote, by this same build.
pub fn decode_service(bytes: &[u8]) -> Result<Service, DecodeError> {
    decode_payload(bytes)
}

fn decode_payload<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice(payload, config()).map_err(|e| {
        DecodeError::Malformed {
            reason: e.to_string(),
        }
    })?;
    if used != payload.len() {
        return Err(DecodeError::Malformed {
            reason: alloc::format!("{} trailing bytes", payload.len() - used),
        });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// A state that uses every type and variant, as a version-1 manager writes it. It is what
    /// `tests/fixtures/manager-state-v1.bin` holds.
    pub fn sample_v1() -> v1::ManagerState {
        let pipe = |fd, stream| v1::Pipe {
            fd,
            stream,
            partial: b"half a li".to_vec(),
        };
        let service = |name: &str, state| v1::Service {
            name: name.into(),
            state,
            since_unix_ns: 1_790_000_000_000_000_000,
            restarts: 2,
            recent_restart_ages_ns: vec![5_000_000, 1_000_000],
            pending_report: Some((203, 2)),
            last_exit: Some(v1::Exit::Code(1)),
            last_failure: Some(v1::Failure {
                step: Some(203),
                reason: "exec /nope: No such file or directory".into(),
                exit: Some(v1::Exit::Signal(9)),
            }),
            instances: vec![v1::Instance {
                pid: 4242,
                number: 7,
                age_ns: 12,
                pipes: vec![pipe(20, 0), pipe(21, 1)],
            }],
            next_instance: 8,
            sockets: vec![(0, 5), (1, 6)],
            watched: true,
            oom_baseline: Some(3),
            log: vec![v1::LogLine {
                time_us: 1_790_000_000_000_000,
                name: "echo@7".into(),
                pid: 4242,
                stream: 1,
                text: "hello".into(),
            }],
            log_dropped: 9,
            pipes: vec![pipe(10, 0), pipe(11, 1)],
            writers: Some([12, 13]),
            status_pipes: vec![(4243, 14)],
            timer_ns: Some(250_000_000),
            cgroup_to_remove: false,
            parked_fd: Some(31),
        };
        v1::ManagerState {
            version: "0.1.0".into(),
            exe: b"/sbin/steward".to_vec(),
            config: vec![(
                b"/etc/steward/steward.toml".to_vec(),
                "[service.echo]\nexec = [\"/bin/cat\"]\n".into(),
            )],
            written_ns: 123_456_789,
            control_fd: 4,
            client_fd: Some(30),
            services: vec![
                service("a", v1::State::Inactive),
                service("b", v1::State::Listening),
                service("c", v1::State::Starting { pid: 10 }),
                service(
                    "d",
                    v1::State::Running {
                        pid: 11,
                        age_ns: 99,
                    },
                ),
                service("e", v1::State::Exited),
                service("f", v1::State::Restarting),
                service(
                    "g",
                    v1::State::Stopping {
                        pid: Some(12),
                        killed: true,
                        then_start: true,
                    },
                ),
                service("h", v1::State::Failed),
                v1::Service {
                    last_exit: Some(v1::Exit::Oom),
                    pending_report: None,
                    last_failure: None,
                    ..service(
                        "i",
                        v1::State::Stopping {
                            pid: None,
                            killed: false,
                            then_start: false,
                        },
                    )
                },
            ],
        }
    }

    const FIXTURE_V1: &[u8] = include_bytes!("../../tests/fixtures/manager-state-v1.bin");
    const FIXTURE_V2: &[u8] = include_bytes!("../../tests/fixtures/manager-state-v2.bin");

    /// A version-2 state that uses every type and variant: what
    /// `tests/fixtures/manager-state-v2.bin` holds.
    pub fn sample() -> ManagerState {
        let mut state = ManagerState::from(sample_v1());
        state.notify_fd = Some(30);
        state.watchdog_fd = Some(31);
        state.stop_jobs = vec![("b".into(), true), ("c".into(), false)];
        let base = state.services[0].clone();
        let service = |name: &str, state| Service {
            name: name.into(),
            state,
            ..base.clone()
        };
        state.services.extend([
            service("waiting", State::Waiting),
            service(
                "reloading",
                State::Running {
                    pid: 13,
                    age_ns: 5,
                    serving: Serving::Reloading,
                },
            ),
            service(
                "winding",
                State::Stopping {
                    pid: Some(14),
                    exec: Exec::Done,
                    killed: false,
                    then: Then::Fail(Cause::Dependency("db".into())),
                },
            ),
            service("dependent", State::Failed(Cause::Dependency("db".into()))),
            service("limited", State::Failed(Cause::StartLimit)),
            Service {
                status_text: Some("serving 3 clients".into()),
                errno: Some(2),
                ready_fd: Some((15, 40)),
                stored_fds: vec![StoredFd {
                    name: "conn".into(),
                    fd: 41,
                    poll: false,
                }],
                watchdog_usec: Some(2_000_000),
                timers: vec![("start_timeout".into(), 7), ("watchdog".into(), 8)],
                ..service(
                    "notifying",
                    State::Starting {
                        pid: 15,
                        exec: Exec::Failed {
                            step: 203,
                            errno: 2,
                        },
                    },
                )
            },
        ]);
        state
    }

    #[test]
    fn round_trip() {
        let state = sample();
        let bytes = encode(&state).unwrap();
        assert_eq!(decode(&bytes, VERSION).unwrap(), state);
    }

    #[test]
    fn a_service_round_trips_alone() {
        for service in sample().services {
            let bytes = encode_service(&service).unwrap();
            assert_eq!(decode_service(&bytes).unwrap(), service);
        }
        assert!(matches!(
            decode_service(&[0xff]),
            Err(DecodeError::Malformed { .. })
        ));
    }

    /// The compatibility promise: whatever this build is, it reads what version 1 wrote,
    /// converted; and what version 2 wrote.
    #[test]
    fn reads_the_version_1_and_2_fixtures() {
        assert_eq!(
            decode(FIXTURE_V1, VERSION).unwrap(),
            ManagerState::from(sample_v1())
        );
        assert_eq!(decode(FIXTURE_V2, VERSION).unwrap(), sample());
    }

    #[test]
    fn version_1_timers_get_the_purpose_their_state_says() {
        let converted = ManagerState::from(sample_v1());
        let restarting = converted.services.iter().find(|s| s.name == "f").unwrap();
        assert_eq!(
            restarting.timers,
            [("restart_delay".to_string(), 250_000_000)]
        );
        let running = converted.services.iter().find(|s| s.name == "d").unwrap();
        assert!(running.timers.is_empty());
    }

    #[test]
    fn refusals() {
        let bytes = encode(&sample()).unwrap();
        assert!(matches!(decode(b"", 1), Err(DecodeError::Truncated { .. })));
        assert!(matches!(
            decode(b"STWDxxxxxxxx", 1),
            Err(DecodeError::BadMagic)
        ));
        assert!(matches!(
            decode(&bytes[..bytes.len() - 1], 1),
            Err(DecodeError::Truncated { .. })
        ));
        let mut newer = bytes.clone();
        newer[4] = 3;
        let e = decode(&newer, VERSION).unwrap_err();
        assert_eq!(
            e.to_string(),
            "state version 3 was written by a newer steward; this one reads up to 2"
        );
        // An older release, which read nothing newer than version 1.
        assert!(matches!(
            decode(&bytes, 1),
            Err(DecodeError::Newer {
                found: 2,
                readable: 1
            })
        ));
        let mut zero = bytes.clone();
        zero[4] = 0;
        assert!(matches!(
            decode(&zero, VERSION),
            Err(DecodeError::Unknown { found: 0 })
        ));
        let mut garbage = bytes.clone();
        for b in &mut garbage[HEADER_LEN..] {
            *b = 0xff;
        }
        assert!(matches!(
            decode(&garbage, VERSION),
            Err(DecodeError::Malformed { .. })
        ));
    }

    /// Writes the newest fixture; run once per new version with
    /// `STEWARD_WRITE_FIXTURE=1 cargo test -p steward-protocol write_fixture`.
    #[test]
    fn write_fixture() {
        extern crate std;
        if std::env::var_os("STEWARD_WRITE_FIXTURE").is_none() {
            return;
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/manager-state-v2.bin"
        );
        std::fs::write(path, encode(&sample()).unwrap()).unwrap();
    }
}
