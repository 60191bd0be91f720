//! Chaos under load: clients on a lazy and an accept-mode service while services, instances
//! and executors in flight are SIGKILLed at random, control requests (reloads among them)
//! come in bursts, and a service floods its log. Afterwards steward must be alive and
//! answering, with no zombie, its fds and memory back near where they started, every service
//! where the config puts it, and every client connection served or (killed instance) closed,
//! never left hanging.
//!
//! `make test` runs it for 8 s; `make chaos` for 60 (`STEWARD_CHAOS_SECS`). The random seed is
//! printed, and `STEWARD_CHAOS_SEED` replays one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use steward_integration_tests::*;
use steward_protocol::control::{Request, encode_frame};

/// xorshift64*: enough randomness for choosing victims, and replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const CONFIG: &str = r#"
[service.eager]
exec = ["/bin/sleep", "1000"]
keep_alive = true
restart_delay = "0"
start_limit_burst = 999999
start_limit_interval = "1s"

[service.lazy]
exec = ["@PROBE@", "serve"]
lazy = true
keep_alive = true
start_limit_burst = 999999
start_limit_interval = "1s"
[[service.lazy.socket]]
path = "@DIR@/lazy.sock"
backlog = 512

[service.inst]
exec = ["@PROBE@", "connection"]
accept = true
[[service.inst.socket]]
path = "@DIR@/inst.sock"
backlog = 512

# Fills its log ring over and over.
[service.flood]
exec = ["/bin/sh", "-c", "while true; do head -c 200000 /dev/zero | tr '\\0' 'x' | fold -w 100; sleep 0.2; done"]
keep_alive = true
start_limit_burst = 999999
start_limit_interval = "1s"
"#;

/// What one client connection came to.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    served: u64,
    closed: u64,
    hung: u64,
    refused: u64,
}

fn client(path: PathBuf, expect: &'static str, stop: Arc<AtomicBool>) -> Outcome {
    let mut out = Outcome::default();
    for _ in 0..1_000_000 {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // Long enough for a lazy respawn under load; a hang is anything longer.
        match first_line(&path, Duration::from_secs(10)) {
            Ok(line) if line.starts_with(expect) => out.served += 1,
            Err(ClientError::Connect(_)) => out.refused += 1,
            Err(e) if e.timed_out() => out.hung += 1,
            Ok(_) | Err(_) => out.closed += 1,
        }
    }
    out
}

/// Processes that are still the executor (not yet exec'd into their service).
fn executors(steward: i32) -> Vec<i32> {
    children(steward)
        .into_iter()
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/exe"))
                .is_ok_and(|t| t.to_string_lossy().contains("steward-executor"))
        })
        .collect()
}

fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// One control request over the socket, the reply read and dropped.
fn control(path: &Path, request: &Request) {
    let _ = send_request(path, &encode_frame(request), Duration::from_secs(10));
}

#[test]
fn chaos_under_load() {
    let secs: u64 = std::env::var("STEWARD_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let seed: u64 = std::env::var("STEWARD_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("chaos: {secs} s, seed {seed} (STEWARD_CHAOS_SEED={seed} replays it)");
    let mut rng = Rng(seed);

    let s = Steward::start(&CONFIG.replace("@PROBE@", bin("steward-probe").to_str().unwrap()));
    s.wait_for("flood: started");
    s.wait_for("eager: started");
    let steward = s.pid();
    let dir = s.dir.path().to_path_buf();
    // Warm up, then the baseline: the flood's ring is full, every socket made.
    let mut warm = 0;
    while warm < 20 {
        if client_once(&dir.join("inst.sock"), "instance pid ") {
            warm += 1;
        }
    }
    let fds_before = fd_count(steward);
    let rss_before = anon_rss_kib(steward);

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [
        ("lazy.sock", "pid "),
        ("lazy.sock", "pid "),
        ("inst.sock", "instance pid "),
        ("inst.sock", "instance pid "),
    ]
    .into_iter()
    .map(|(socket, expect)| {
        let path = dir.join(socket);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || client(path, expect, stop))
    })
    .collect();

    let control_path = s.control();
    let began = Instant::now();
    let mut kills = 0;
    let mut requests = 0;
    while began.elapsed() < Duration::from_secs(secs) {
        match rng.below(4) {
            // A service, an instance, or (while it is still the executor) a spawn in flight.
            0 | 1 => {
                let mut victims = children(steward);
                victims.extend(executors(steward));
                if !victims.is_empty() {
                    let victim = victims[rng.below(victims.len())];
                    if send_signal(victim, libc::SIGKILL).is_ok() {
                        kills += 1;
                    }
                }
            }
            // A burst of control requests, a reload among them.
            2 => {
                for _ in 0..rng.below(8) + 1 {
                    let request = match rng.below(4) {
                        0 => Request::Reload,
                        1 => Request::Status {
                            names: vec!["flood".into()],
                        },
                        2 => Request::Logs {
                            name: "flood".into(),
                            lines: Some(50),
                            follow: false,
                        },
                        _ => Request::Status { names: vec![] },
                    };
                    control(&control_path, &request);
                    requests += 1;
                }
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(rng.below(40) as u64 + 5));
    }
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<Outcome> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let total = outcomes.iter().fold(Outcome::default(), |a, o| Outcome {
        served: a.served + o.served,
        closed: a.closed + o.closed,
        hung: a.hung + o.hung,
        refused: a.refused + o.refused,
    });

    // Settled: every service where its config puts it, no zombie child.
    for (name, states) in [
        ("eager", &["running"][..]),
        ("flood", &["running"][..]),
        ("lazy", &["listening", "running"][..]),
        ("inst", &["listening"][..]),
    ] {
        wait_until(&format!("{name} to settle"), || {
            states.contains(&s.service(name)["state"].as_str().unwrap_or(""))
        });
    }
    wait_until("no zombie", || {
        children(steward)
            .iter()
            .all(|&p| process_state(p).is_some_and(|st| st != 'Z'))
    });
    // Instances of the killed clients' connections are gone once their clients are.
    wait_until("instances to end", || {
        s.service("inst")["instances"]
            .as_array()
            .is_some_and(|i| i.is_empty())
    });
    let fds_after = fd_count(steward);
    let rss_after = anon_rss_kib(steward);
    eprintln!(
        "chaos: {} served, {} closed, {} hung, {} refused; {kills} kills, {requests} control requests; fds {fds_before} -> {fds_after}, anonymous RSS {rss_before} -> {rss_after} kB",
        total.served, total.closed, total.hung, total.refused
    );
    assert!(alive(steward), "steward died");
    assert_eq!(total.hung, 0, "client connections left hanging");
    assert_eq!(total.refused, 0, "connections refused: a socket went away");
    assert!(total.served > 0);
    // Within a small bound: a control client or a pipe may be on its way out.
    assert!(
        fds_after <= fds_before + 4,
        "fds grew: {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after <= rss_before + 4096,
        "anonymous RSS grew: {rss_before} -> {rss_after} kB"
    );
    let status = s.status();
    assert_eq!(status["manager"]["pid"], steward);
}

fn client_once(path: &Path, expect: &str) -> bool {
    first_line(path, DEADLINE).is_ok_and(|line| line.starts_with(expect))
}
