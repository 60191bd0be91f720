//! A unit: one service's state machine ([`Supervisor`]) beside what it holds of the kernel
//! ([`Io`]: sockets, output pipes, status pipes, its cgroup), and how both cross a `reexec`.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thin_vec::ThinVec;

use steward_protocol::control::{LogLine, Stream};
use steward_protocol::reexec as saved;

use crate::cgroups::Prepared;
use crate::config;
use crate::fd_store::{Poll, Stored};
use crate::logfile::LogFile;
use crate::output::{Pipe, Ring, Splitter};
use crate::pid_map::PidMap;
use crate::pool::Pool;
use crate::sockets::{Connection, Listener};
use crate::supervisor::{Pid, Supervisor, Timer, save::Listening};

/// A service under supervision.
pub struct Unit {
    /// Its state machine, with its config.
    pub supervisor: Supervisor,
    /// What it holds.
    pub io: Io,
}

/// A service's cgroup, as far as the manager knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// Not made (or removed).
    Absent,
    /// Made, with these limits; joined by every spawn.
    Made(Prepared),
    /// At rest, but not removed yet: a process of it was still being reaped.
    Lingering,
}

/// What a unit holds of the kernel.
pub struct Io {
    /// Its sockets, in config order.
    pub sockets: ThinVec<Listener>,
    /// Whether the sockets are in the epoll set: the loop's record of what it asked the kernel,
    /// kept in step with [`Supervisor::wants_connections`].
    pub watched: bool,
    /// Its cgroup.
    pub cgroup: Cgroup,
    /// The cgroup's OOM-kill count when the current process was spawned.
    pub oom_baseline: Option<u64>,
    /// Its captured output.
    pub output: Ring,
    /// Its log file in `log_dir`, once a line was written there. Boxed: a hundred bytes a
    /// unit that logs nothing would pay for.
    pub disk: Option<Box<LogFile>>,
    /// Read ends of its stdout and stderr pipes (services that log, but not accept mode, whose
    /// instances get pipes of their own). Kept across restarts.
    pub pipes: ThinVec<Pipe>,
    /// The write ends of those pipes, passed to each spawn.
    pub writers: Option<[OwnedFd; 2]>,
    /// Status pipes of its executors that have not exec'd or reported yet.
    pub status: PidMap<OwnedFd>,
    /// Output pipes of accept instances, until their end of file (which may come after the
    /// instance was reaped).
    pub instances: InstancePipes,
    /// Accept mode: a connection accepted while its instance could not be spawned, served
    /// first when spawning works again. A resource, not a state: it outlives a stop. Boxed:
    /// it is rare, and inline every unit would pay 32 bytes for it.
    pub parked: Option<Box<Connection>>,
    /// When the supervisor entered its current state.
    pub since: SystemTime,
    /// What it last said with `STATUS=` and `ERRNO=`. Boxed: most services say neither, and
    /// inline every unit would pay 32 bytes for them.
    pub said: Option<Box<Said>>,
    /// `ready = "fd:N"`: the read end of the readiness pipe of this process, until it said it
    /// is ready (or closed the pipe).
    pub ready_pipe: Option<(Pid, OwnedFd)>,
    /// Its fd store, in the order stored: kept across restarts, emptied by a stop.
    pub stored: ThinVec<Stored>,
    /// Its idle executors (`executor_pool`), while its state wants them. Not carried across a
    /// reexec: they see their sockets close and exit, and the new image fills the pool again.
    pub pool: Pool,
}

/// What a service said of itself with `STATUS=` and `ERRNO=`, each kept until it says it again.
#[derive(Debug, Default)]
pub struct Said {
    /// `STATUS=`.
    pub status: Option<String>,
    /// `ERRNO=`.
    pub errno: Option<i32>,
}

impl Said {
    /// Those words, or None if neither was said.
    pub fn of(status: Option<String>, errno: Option<i32>) -> Option<Box<Said>> {
        (status.is_some() || errno.is_some()).then(|| Box::new(Said { status, errno }))
    }
}

impl Io {
    /// What it last said with `STATUS=`.
    pub fn status_text(&self) -> Option<&str> {
        self.said.as_ref()?.status.as_deref()
    }
}

/// Accept instances' output pipes, with the `NAME@N` each instance's lines are tagged with
/// while it has pipes: the last lines of an instance are often read after it was reaped. Made
/// at the first instance's pipes and dropped with the last: most services are not accept
/// mode, and inline every unit would pay 48 bytes for the two maps.
#[derive(Debug, Default)]
pub struct InstancePipes(Option<Box<InstanceMaps>>);

#[derive(Debug, Default)]
struct InstanceMaps {
    pipes: BTreeMap<(Pid, Stream), Pipe>,
    tags: BTreeMap<Pid, String>,
}

impl InstancePipes {
    /// Adds the pipes of instance `pid` and, if it has any, the tag its lines carry (made
    /// only then: most connections' instances log nothing).
    pub fn add(
        &mut self,
        pid: Pid,
        tag: impl FnOnce() -> Option<String>,
        pipes: impl IntoIterator<Item = Pipe>,
    ) {
        let mut pipes = pipes.into_iter().peekable();
        if pipes.peek().is_none() {
            return;
        }
        let maps = self.0.get_or_insert_default();
        if let Some(tag) = tag() {
            maps.tags.insert(pid, tag);
        }
        for pipe in pipes {
            maps.pipes.insert((pid, pipe.stream), pipe);
        }
    }

    /// The tag of instance `pid`'s lines.
    pub fn tag(&self, pid: Pid) -> Option<&str> {
        self.0.as_ref()?.tags.get(&pid).map(String::as_str)
    }

    /// Its pipe for `stream`.
    pub fn get_mut(&mut self, pid: Pid, stream: Stream) -> Option<&mut Pipe> {
        self.0.as_mut()?.pipes.get_mut(&(pid, stream))
    }

    /// Takes its pipe for `stream` out; its tag goes with its last pipe, the maps with the
    /// last instance's.
    pub fn remove(&mut self, pid: Pid, stream: Stream) -> Option<Pipe> {
        let maps = self.0.as_mut()?;
        let pipe = maps.pipes.remove(&(pid, stream));
        if maps.pipes.is_empty() {
            self.0 = None;
        } else if maps
            .pipes
            .range(InstancePipes::of_pid(pid))
            .next()
            .is_none()
        {
            maps.tags.remove(&pid);
        }
        pipe
    }

    /// The keys of instance `pid`'s pipes: stdout and stderr are the least and the greatest
    /// stream.
    fn of_pid(pid: Pid) -> std::ops::RangeInclusive<(Pid, Stream)> {
        (pid, Stream::Stdout)..=(pid, Stream::Stderr)
    }

    /// The pipes of instance `pid`: found in the map by range, since the unit is saved at every
    /// change for each of its instances, and a walk of every pipe for each made that quadratic
    /// in the instances running (15 % of the manager's time at 32).
    pub fn of(&self, pid: Pid) -> impl Iterator<Item = &Pipe> {
        self.0.iter().flat_map(move |maps| {
            maps.pipes
                .range(InstancePipes::of_pid(pid))
                .map(|(_, pipe)| pipe)
        })
    }

    /// Every instance's pipes, by pid.
    pub fn iter(&self) -> impl Iterator<Item = (Pid, &Pipe)> {
        self.0
            .iter()
            .flat_map(|maps| maps.pipes.iter().map(|(&(pid, _), pipe)| (pid, pipe)))
    }
}

impl Unit {
    /// A service that has not started, with its sockets made.
    pub fn new(config: config::Service, sockets: Vec<Listener>, log_buffer: u64) -> Unit {
        Unit::with(Supervisor::new(config), sockets, log_buffer)
    }

    /// A service refused for the errors in its table, with nothing to run and no sockets.
    pub fn refused(broken: &config::Broken, log_buffer: u64) -> Unit {
        Unit::with(Supervisor::refused(broken), Vec::new(), log_buffer)
    }

    fn with(supervisor: Supervisor, sockets: Vec<Listener>, log_buffer: u64) -> Unit {
        Unit {
            supervisor,
            io: Io {
                sockets: sockets.into(),
                watched: false,
                cgroup: Cgroup::Absent,
                oom_baseline: None,
                output: Ring::new(log_buffer),
                disk: None,
                pipes: ThinVec::new(),
                writers: None,
                status: PidMap::Empty,
                instances: InstancePipes::default(),
                parked: None,
                since: SystemTime::now(),
                said: None,
                ready_pipe: None,
                stored: ThinVec::new(),
                pool: Pool::default(),
            },
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.supervisor.config().name
    }

    /// Writes the unit into `out`, and the fds it names into `keep` (those must stay open
    /// across the exec). `timers` are its armed timers with the time left on each.
    pub fn save<'a>(
        &'a self,
        now: Instant,
        timers: &[(Timer, Duration)],
        keep: &mut Vec<BorrowedFd<'a>>,
        output: Output,
    ) -> saved::Service {
        let mut out = blank();
        // The snapshot is saved at every change: a start limit of thousands of restarts would
        // make each save (and each respawn) cost thousands of time stamps. After a panic, a
        // start limit above this many is counted from the newest ones.
        let history = match output {
            Output::With => usize::MAX,
            Output::Without => SNAPSHOT_RESTART_HISTORY,
        };
        self.supervisor.save(now, &mut out, history);
        let io = &self.io;
        let mut fd = |f: &'a OwnedFd| -> RawFd {
            keep.push(f.as_fd());
            f.as_raw_fd()
        };
        let config = self.supervisor.config();
        out.sockets = io
            .sockets
            .iter()
            .filter_map(|l| {
                let index = config.sockets.iter().position(|c| *c == l.config)?;
                Some((index as u32, fd(&l.fd)))
            })
            .collect();
        out.watched = io.watched;
        out.oom_baseline = io.oom_baseline;
        if output == Output::With {
            out.log = io.output.tail(None).into_iter().map(save_line).collect();
        }
        out.log_dropped = io.output.dropped;
        out.pipes = io.pipes.iter().map(|p| save_pipe(p, &mut fd)).collect();
        out.writers = io.writers.as_ref().map(|[o, e]| [fd(o), fd(e)]);
        out.status_pipes = io
            .status
            .iter()
            .map(|(pid, f)| (pid.raw(), fd(f)))
            .collect();
        for instance in &mut out.instances {
            instance.pipes = Pid::new(instance.pid)
                .map(|pid| {
                    io.instances
                        .of(pid)
                        .map(|p| save_pipe(p, &mut fd))
                        .collect()
                })
                .unwrap_or_default();
        }
        out.timers = timers
            .iter()
            .map(|(t, left)| {
                (
                    t.name().to_string(),
                    left.as_nanos().min(u64::MAX as u128) as u64,
                )
            })
            .collect();
        out.status_text = io.status_text().map(str::to_string);
        out.errno = io.said.as_ref().and_then(|said| said.errno);
        out.ready_fd = io.ready_pipe.as_ref().map(|(pid, f)| (pid.raw(), fd(f)));
        out.stored_fds = io
            .stored
            .iter()
            .map(|s| saved::StoredFd {
                name: s.name.clone(),
                fd: fd(&s.fd),
                poll: s.poll.asked(),
            })
            .collect();
        out.cgroup_to_remove = io.cgroup == Cgroup::Lingering;
        out.parked_fd = io.parked.as_ref().map(|c| fd(&c.fd));
        out.since_unix_ns = io
            .since
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos().min(u64::MAX as u128) as u64);
        out
    }

    /// The unit a saved service describes. `take` adopts the fd a number names (checked open
    /// and named once by the caller).
    pub fn restore(
        config: config::Service,
        s: saved::Service,
        log_buffer: u64,
        now: Instant,
        take: &mut dyn FnMut(RawFd) -> OwnedFd,
    ) -> Unit {
        let listening = Listening {
            watched: s.watched,
            timer: s
                .timers
                .iter()
                .any(|(t, _)| Timer::named(t) == Some(Timer::Backoff)),
        };
        let sockets = s
            .sockets
            .iter()
            .filter_map(|&(index, fd)| {
                let fd = take(fd);
                let socket = config.sockets.get(index as usize)?.clone();
                Some(Listener::adopt(socket, fd))
            })
            .collect();
        let name = config.name.clone();
        let supervisor = Supervisor::restore(config, &s, listening, now);
        let mut instances = InstancePipes::default();
        for instance in &s.instances {
            let Some(pid) = Pid::new(instance.pid) else {
                continue;
            };
            let pipes = instance.pipes.iter().map(|p| load_pipe(p, take(p.fd)));
            instances.add(pid, || Some(format!("{name}@{}", instance.number)), pipes);
        }
        let status = s
            .status_pipes
            .iter()
            .filter_map(|&(pid, fd)| Some((Pid::new(pid)?, take(fd))))
            .collect();
        let lines = s.log.into_iter().map(load_line).collect();
        Unit {
            supervisor,
            io: Io {
                sockets,
                // Not in the new epoll set yet: the loop adds what the state wants.
                watched: false,
                cgroup: if s.cgroup_to_remove {
                    Cgroup::Lingering
                } else {
                    Cgroup::Absent
                },
                oom_baseline: s.oom_baseline,
                output: Ring::restore(log_buffer, lines, s.log_dropped),
                // Opened again by its path: see `event_loop::reexec`.
                disk: None,
                pipes: s.pipes.iter().map(|p| load_pipe(p, take(p.fd))).collect(),
                writers: s.writers.map(|[o, e]| [take(o), take(e)]),
                status,
                instances,
                parked: s.parked_fd.map(|fd| Box::new(Connection::adopt(take(fd)))),
                since: UNIX_EPOCH + Duration::from_nanos(s.since_unix_ns),
                said: Said::of(s.status_text, s.errno),
                ready_pipe: s
                    .ready_fd
                    .and_then(|(pid, fd)| Some((Pid::new(pid)?, take(fd)))),
                // Watched again by the loop, in its own epoll set.
                stored: s
                    .stored_fds
                    .iter()
                    .map(|f| Stored {
                        name: f.name.clone(),
                        fd: take(f.fd),
                        poll: if f.poll { Poll::Unpollable } else { Poll::Off },
                    })
                    .collect(),
                pool: Pool::default(),
            },
        }
    }

    /// The armed timers a saved service names, with the time left on each (those this build
    /// knows).
    pub fn saved_timers(s: &saved::Service) -> Vec<(Timer, Duration)> {
        s.timers
            .iter()
            .filter_map(|(name, ns)| Some((Timer::named(name)?, Duration::from_nanos(*ns))))
            .collect()
    }
}

/// The most recent restarts the panic-recovery snapshot keeps of a unit (a reexec keeps all).
const SNAPSHOT_RESTART_HISTORY: usize = 64;

/// Whether a saved unit carries its captured output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Every line the ring holds: a reexec.
    With,
    /// None: the panic-recovery snapshot, saved at every change, where copying the ring each
    /// time would cost more than the lines are worth.
    Without,
}

/// The fds a saved service names, for the new manager to check before it adopts any.
pub fn named_fds(s: &saved::Service) -> Vec<RawFd> {
    let mut fds: Vec<RawFd> = s.sockets.iter().map(|&(_, fd)| fd).collect();
    fds.extend(s.pipes.iter().map(|p| p.fd));
    fds.extend(s.writers.iter().flatten());
    fds.extend(s.status_pipes.iter().map(|&(_, fd)| fd));
    fds.extend(s.parked_fd);
    fds.extend(s.ready_fd.map(|(_, fd)| fd));
    fds.extend(s.stored_fds.iter().map(|f| f.fd));
    for instance in &s.instances {
        fds.extend(instance.pipes.iter().map(|p| p.fd));
    }
    fds
}

fn stream_code(stream: Stream) -> u8 {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

fn stream_of(code: u8) -> Stream {
    if code == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    }
}

fn save_pipe<'a>(pipe: &'a Pipe, fd: &mut impl FnMut(&'a OwnedFd) -> RawFd) -> saved::Pipe {
    saved::Pipe {
        fd: fd(&pipe.fd),
        stream: stream_code(pipe.stream),
        partial: pipe.splitter.partial().to_vec(),
    }
}

fn load_pipe(saved: &saved::Pipe, fd: OwnedFd) -> Pipe {
    Pipe {
        fd,
        stream: stream_of(saved.stream),
        splitter: Splitter::with_partial(saved.partial.clone()),
    }
}

fn save_line(l: LogLine) -> saved::LogLine {
    saved::LogLine {
        time_us: l.time_us,
        name: l.name,
        pid: l.pid,
        stream: stream_code(l.stream),
        text: l.text,
    }
}

fn load_line(l: saved::LogLine) -> LogLine {
    LogLine {
        time_us: l.time_us,
        name: l.name,
        pid: l.pid,
        stream: stream_of(l.stream),
        text: l.text,
    }
}

/// A saved service with nothing in it, for the parts to fill in.
pub fn blank() -> saved::Service {
    saved::Service {
        name: String::new(),
        state: saved::State::Inactive,
        since_unix_ns: 0,
        restarts: 0,
        recent_restart_ages_ns: Vec::new(),
        last_exit: None,
        last_failure: None,
        instances: Vec::new(),
        next_instance: 1,
        sockets: Vec::new(),
        watched: false,
        oom_baseline: None,
        log: Vec::new(),
        log_dropped: 0,
        pipes: Vec::new(),
        writers: None,
        status_pipes: Vec::new(),
        timers: Vec::new(),
        cgroup_to_remove: false,
        parked_fd: None,
        status_text: None,
        errno: None,
        ready_fd: None,
        stored_fds: Vec::new(),
        watchdog_usec: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instances_pipes_are_both_of_its_streams_and_no_neighbours() {
        let loaded = config::load_str("t.toml", "[service.a]\nexec = [\"/bin/x\"]\n");
        let service = loaded.config.expect("a valid config").services.remove(0);
        let mut unit = Unit::new(service, Vec::new(), 1024);
        let pid = |raw| Pid::new(raw).unwrap();
        for (raw, stream) in [
            (7, Stream::Stderr),
            (8, Stream::Stdout),
            (8, Stream::Stderr),
            (9, Stream::Stdout),
        ] {
            let (pipe, _) = crate::output::pipe(stream).unwrap();
            unit.io.instances.add(pid(raw), || None, [pipe]);
        }
        let streams =
            |raw| -> Vec<Stream> { unit.io.instances.of(pid(raw)).map(|p| p.stream).collect() };
        assert_eq!(streams(8), [Stream::Stdout, Stream::Stderr]);
        assert_eq!(streams(7), [Stream::Stderr]);
        assert_eq!(streams(9), [Stream::Stdout]);
        assert!(streams(10).is_empty());
    }

    #[test]
    fn an_instances_tag_lasts_until_its_last_pipe_and_the_maps_until_the_last_instance() {
        let mut instances = InstancePipes::default();
        let pid = |raw| Pid::new(raw).unwrap();
        let pipe = |stream| crate::output::pipe(stream).unwrap().0;
        instances.add(pid(7), || panic!("no pipes, no tag"), []);
        assert!(instances.0.is_none());
        let tag = |n: u32| move || Some(format!("a@{n}"));
        instances.add(pid(7), tag(1), [pipe(Stream::Stdout), pipe(Stream::Stderr)]);
        instances.add(pid(8), tag(2), [pipe(Stream::Stdout)]);
        assert!(instances.remove(pid(7), Stream::Stdout).is_some());
        assert_eq!(instances.tag(pid(7)), Some("a@1"));
        assert!(instances.remove(pid(7), Stream::Stderr).is_some());
        assert_eq!(instances.tag(pid(7)), None);
        assert_eq!(instances.tag(pid(8)), Some("a@2"));
        assert!(instances.remove(pid(7), Stream::Stderr).is_none());
        assert!(instances.remove(pid(8), Stream::Stdout).is_some());
        assert!(instances.0.is_none());
    }

    #[test]
    fn a_units_record_stays_small() {
        // Every service pays for every field of its record, set or not: with 1000 services,
        // a byte here is a kilobyte of the manager. A field most units never set goes behind
        // a box (or in a thin vector). The bound is this build's size and a few words.
        let size = std::mem::size_of::<Unit>();
        assert!(size <= 720, "a unit's record is {size} bytes");
    }
}
