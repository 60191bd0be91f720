//! Turning replies into what the user reads: the status table and details, durations, sizes,
//! UTC timestamps, log lines, and the `--json` documents. Pure functions of their inputs (the
//! clock and the tty test are the caller's), so every format is unit-tested here.

use serde_json::{Value, json};
use steward_protocol::control::{ExitStatus, FailureStatus, LogLine, ServiceStatus, Status};

/// The status table's columns, in order.
const HEADER: [&str; 6] = ["NAME", "STATE", "PID", "UPTIME", "RESTARTS", "MEMORY"];

/// Text columns read best flush left; numbers and durations flush right, so digits line up.
const RIGHT_ALIGNED: [bool; 6] = [false, false, true, true, true, true];

/// Which column holds the state: the only one that is ever coloured.
const STATE_COLUMN: usize = 1;

/// A cell shown when a value does not apply or is not known.
const NONE: &str = "-";

/// The ANSI colour for a state: green when it serves, red when it failed, yellow while it is
/// on its way somewhere. `None` leaves the text plain.
fn state_colour(state: &str) -> Option<&'static str> {
    match state {
        "running" | "listening" => Some("32"),
        "failed" => Some("31"),
        "restarting" | "starting" | "stopping" => Some("33"),
        _ => None,
    }
}

/// The status table: a header and one row per service, followed by a row per accept instance.
/// `now` is seconds since the epoch; `colour` is whether stdout is a terminal.
pub fn status_table(status: &Status, now: u64, colour: bool) -> String {
    let mut rows: Vec<[String; 6]> = vec![HEADER.map(String::from)];
    for service in &status.services {
        rows.push([
            service.name.clone(),
            service.state.clone(),
            service.pid.map_or(NONE.into(), |p| p.to_string()),
            duration(now.saturating_sub(service.since)),
            service.restarts.to_string(),
            memory(service.memory_bytes),
        ]);
        // An instance is only a pid: its state, age and memory belong to its service's row.
        for instance in &service.instances {
            rows.push([
                instance.name.clone(),
                NONE.into(),
                instance.pid.to_string(),
                NONE.into(),
                NONE.into(),
                NONE.into(),
            ]);
        }
    }
    table(&rows, colour)
}

/// Lays rows out in columns padded to the widest cell, two spaces apart, no trailing blanks.
/// The header (row 0) is never coloured.
fn table(rows: &[[String; 6]], colour: bool) -> String {
    let mut widths = [0usize; 6];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (r, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c > 0 {
                line.push_str("  ");
            }
            let pad = " ".repeat(widths[c] - cell.chars().count());
            // The escape codes go around the text only, so they do not count toward the width.
            let text = match (colour && r > 0 && c == STATE_COLUMN, state_colour(cell)) {
                (true, Some(code)) => format!("\x1b[{code}m{cell}\x1b[0m"),
                _ => cell.clone(),
            };
            if RIGHT_ALIGNED[c] {
                line.push_str(&pad);
                line.push_str(&text);
            } else {
                line.push_str(&text);
                line.push_str(&pad);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// What `status NAME` adds after the table for one service: a `NAME:` heading and its sockets,
/// last exit, last failure and last log lines, each indented; empty when there is none of them.
pub fn status_details(service: &ServiceStatus, now: u64) -> String {
    let mut lines = Vec::new();
    if let Some(at) = service.retry_at {
        lines.push(format!(
            "  next try: in {} (start_limit_cooldown)",
            duration(at.saturating_sub(now))
        ));
    }
    if let Some(text) = &service.status_text {
        lines.push(format!("  status: {text}"));
    }
    if !service.waiting_for.is_empty() {
        lines.push(format!("  waiting for: {}", service.waiting_for.join(", ")));
    }
    if !service.stored_fds.is_empty() {
        lines.push(format!(
            "  fd store: {} ({})",
            service.stored_fds.len(),
            stored_names(&service.stored_fds)
        ));
    }
    for socket in &service.sockets {
        lines.push(format!("  socket {}: {}", socket.name, socket.address));
    }
    if let Some(started) = service.instances_started {
        lines.push(format!(
            "  instances: {started} started, {} running",
            service.instances.len()
        ));
    }
    if let Some(exit) = service.last_exit {
        lines.push(format!("  last exit: {}", exit_status(exit)));
    }
    if let Some(failure) = &service.failure {
        lines.push(format!("  last failure: {}", failure_text(failure)));
    }
    for line in &service.log_tail {
        lines.push(format!("  {}", log_line(line)));
    }
    if lines.is_empty() {
        return String::new();
    }
    format!("\n{}:\n{}\n", service.name, lines.join("\n"))
}

/// `exited with status N`, or `killed by SIGNAME` (the manager's own wording in its log).
pub fn exit_status(exit: ExitStatus) -> String {
    match exit {
        ExitStatus::Code(code) => format!("exited with status {code}"),
        ExitStatus::Signal(signal) => match signal_name(signal) {
            Some(name) => format!("killed by {name}"),
            None => format!("killed by signal {signal}"),
        },
    }
}

/// The signals a service is commonly killed by; others are shown by number.
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return None,
    })
}

/// `failed at STEP: REASON (status N)`; the step and the status only when known.
pub fn failure_text(failure: &FailureStatus) -> String {
    let mut text = match &failure.step {
        Some(step) => format!("failed at {step}: {}", failure.reason),
        None => failure.reason.clone(),
    };
    if let Some(status) = failure.status {
        text.push_str(&format!(" (status {status})"));
    }
    text
}

/// A time span in its two largest units: `3s`, `5m12s`, `2h03m`, `4d02h`.
pub fn duration(secs: u64) -> String {
    let (m, s) = (secs / 60, secs % 60);
    let (h, m) = (m / 60, m % 60);
    let (d, h) = (h / 24, h % 24);
    if d > 0 {
        format!("{d}d{h:02}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

/// A byte count in binary units: `512B`, `640K`, `1.2M`, `3.0G`: one decimal below 10, so the
/// cell stays short while small values keep a useful digit. `-` when unknown.
pub fn memory(bytes: Option<u64>) -> String {
    let Some(bytes) = bytes else {
        return NONE.into();
    };
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

/// `TIMESTAMP NAME[PID] stdout|stderr: text`.
pub fn log_line(line: &LogLine) -> String {
    line.render()
}

/// One log line for `logs --json`.
pub fn log_json(line: &LogLine) -> Value {
    json!({
        "time_us": line.time_us,
        "name": line.name,
        "pid": line.pid,
        "stream": line.stream.name(),
        "text": line.text,
    })
}

/// The stderr note for lines the manager's ring no longer has.
pub fn dropped_note(dropped: u64) -> String {
    if dropped == 1 {
        "-- 1 earlier line was dropped --".into()
    } else {
        format!("-- {dropped} earlier lines were dropped --")
    }
}

/// `status --json`, in the shape of SPEC §6.
pub fn status_json(status: &Status) -> Value {
    json!({
        "manager": {"pid": status.manager_pid, "version": status.version},
        "services": status.services.iter().map(service_json).collect::<Vec<_>>(),
    })
}

fn service_json(service: &ServiceStatus) -> Value {
    json!({
        "name": service.name,
        "state": service.state,
        "pid": service.pid,
        "since": service.since,
        "restarts": service.restarts,
        "memory_bytes": service.memory_bytes,
        "sockets": service.sockets.iter()
            .map(|s| json!({"name": s.name, "address": s.address}))
            .collect::<Vec<_>>(),
        "instances": service.instances.iter()
            .map(|i| json!({"name": i.name, "pid": i.pid}))
            .collect::<Vec<_>>(),
        "instances_started": service.instances_started,
        "last_exit": match service.last_exit {
            Some(ExitStatus::Code(code)) => json!({"code": code}),
            Some(ExitStatus::Signal(signal)) => json!({"signal": signal}),
            None => Value::Null,
        },
        "failure": service.failure.as_ref().map(|f| json!({
            "step": f.step,
            "reason": f.reason,
            "status": f.status,
        })),
        "status_text": service.status_text,
        "waiting_for": service.waiting_for,
        "retry_at": service.retry_at,
        "stored_fds": service.stored_fds,
    })
}

/// The names of stored fds, each once with its count: `listener, client ×50`.
fn stored_names(names: &[String]) -> String {
    let mut counted: Vec<(&str, usize)> = Vec::new();
    for name in names {
        match counted.iter_mut().find(|(n, _)| n == name) {
            Some((_, count)) => *count += 1,
            None => counted.push((name, 1)),
        }
    }
    counted
        .iter()
        .map(|(name, count)| match count {
            1 => name.to_string(),
            n => format!("{name} ×{n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `NAME: STATE`, or `NAME: failed: REASON`: one service of a waiting command, settled.
pub fn settled(name: &str, state: &str, failure: Option<&str>) -> String {
    match failure {
        Some(reason) => format!("{name}: {state}: {reason}"),
        None => format!("{name}: {state}"),
    }
}

/// `added: a, b` / `removed: …` / `restarted: …`, only the non-empty ones; `nothing changed`
/// when all are empty.
pub fn reloaded(added: &[String], removed: &[String], restarted: &[String]) -> String {
    let lines: Vec<String> = [
        ("added", added),
        ("removed", removed),
        ("restarted", restarted),
    ]
    .into_iter()
    .filter(|(_, names)| !names.is_empty())
    .map(|(what, names)| format!("{what}: {}\n", names.join(", ")))
    .collect();
    if lines.is_empty() {
        "nothing changed\n".into()
    } else {
        lines.concat()
    }
}

/// `reload --json`.
pub fn reloaded_json(added: &[String], removed: &[String], restarted: &[String]) -> Value {
    json!({"added": added, "removed": removed, "restarted": restarted})
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_protocol::control::{
        InstanceStatus, SocketStatus, Stream, civil_from_days, timestamp,
    };

    const NOW: u64 = 1_700_000_000;

    fn service(name: &str, state: &str, pid: Option<i32>) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            state: state.into(),
            pid,
            since: NOW - 312,
            restarts: 0,
            memory_bytes: None,
            sockets: vec![],
            instances: vec![],
            instances_started: None,
            last_exit: None,
            failure: None,
            status_text: None,
            waiting_for: vec![],
            retry_at: None,
            stored_fds: vec![],
            log_tail: vec![],
        }
    }

    fn status(services: Vec<ServiceStatus>) -> Status {
        Status {
            manager_pid: 1,
            version: "0.1.0".into(),
            services,
        }
    }

    fn line(time_us: u64, text: &str) -> LogLine {
        LogLine {
            time_us,
            name: "web".into(),
            pid: 412,
            stream: Stream::Stdout,
            text: text.into(),
        }
    }

    #[test]
    fn the_table_is_aligned() {
        let mut web = service("web", "running", Some(412));
        web.memory_bytes = Some(1_258_291);
        web.restarts = 12;
        web.instances = vec![InstanceStatus {
            name: "echo@1".into(),
            pid: 51234,
        }];
        let mut db = service("database", "failed", None);
        db.since = NOW - 7;
        let table = status_table(&status(vec![web, db]), NOW, false);
        assert_eq!(
            table,
            "NAME      STATE      PID  UPTIME  RESTARTS  MEMORY\n\
             web       running    412   5m12s        12    1.2M\n\
             echo@1    -        51234       -         -       -\n\
             database  failed       -      7s         0       -\n"
        );
    }

    #[test]
    fn the_table_has_a_header_even_without_services() {
        assert_eq!(
            status_table(&status(vec![]), NOW, false),
            "NAME  STATE  PID  UPTIME  RESTARTS  MEMORY\n"
        );
    }

    #[test]
    fn only_the_state_is_coloured_and_alignment_survives() {
        let services = vec![
            service("a", "running", Some(1)),
            service("b", "failed", None),
            service("c", "stopping", Some(2)),
            service("d", "inactive", None),
        ];
        let table = status_table(&status(services), NOW, true);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "NAME  STATE     PID  UPTIME  RESTARTS  MEMORY");
        assert_eq!(
            lines[1],
            "a     \x1b[32mrunning\x1b[0m     1   5m12s         0       -"
        );
        assert_eq!(
            lines[2],
            "b     \x1b[31mfailed\x1b[0m      -   5m12s         0       -"
        );
        assert_eq!(
            lines[3],
            "c     \x1b[33mstopping\x1b[0m    2   5m12s         0       -"
        );
        assert_eq!(lines[4], "d     inactive    -   5m12s         0       -");
        let plain = status_table(&status(vec![service("a", "running", Some(1))]), NOW, false);
        assert!(!plain.contains('\x1b'));
    }

    #[test]
    fn details_of_a_named_service() {
        let mut web = service("web", "failed", None);
        web.sockets = vec![SocketStatus {
            name: "http".into(),
            address: "127.0.0.1:8080".into(),
        }];
        web.instances_started = Some(1234);
        web.last_exit = Some(ExitStatus::Code(200));
        web.failure = Some(FailureStatus {
            step: Some("chdir".into()),
            reason: "No such file or directory".into(),
            status: Some(200),
        });
        web.log_tail = vec![line(0, "hello")];
        assert_eq!(
            status_details(&web, NOW),
            "\nweb:\n  socket http: 127.0.0.1:8080\n  instances: 1234 started, 0 running\n  \
             last exit: exited with status 200\n  \
             last failure: failed at chdir: No such file or directory (status 200)\n  \
             1970-01-01T00:00:00.000000Z web[412] stdout: hello\n"
        );
        assert_eq!(status_details(&service("idle", "inactive", None), NOW), "");
        let mut cooling = service("sshd", "failed", None);
        cooling.retry_at = Some(NOW + 272);
        assert_eq!(
            status_details(&cooling, NOW),
            "\nsshd:\n  next try: in 4m32s (start_limit_cooldown)\n"
        );
        let mut holding = service("echo", "running", Some(7));
        holding.stored_fds = ["listener", "client", "client"].map(String::from).to_vec();
        assert_eq!(
            status_details(&holding, NOW),
            "\necho:\n  fd store: 3 (listener, client ×2)\n"
        );
    }

    #[test]
    fn exits_and_failures() {
        assert_eq!(exit_status(ExitStatus::Code(4)), "exited with status 4");
        assert_eq!(exit_status(ExitStatus::Signal(9)), "killed by SIGKILL");
        assert_eq!(exit_status(ExitStatus::Signal(40)), "killed by signal 40");
        let failure = |step: Option<&str>, status| FailureStatus {
            step: step.map(String::from),
            reason: "boom".into(),
            status,
        };
        assert_eq!(
            failure_text(&failure(Some("exec"), Some(203))),
            "failed at exec: boom (status 203)"
        );
        assert_eq!(failure_text(&failure(None, Some(4))), "boom (status 4)");
        assert_eq!(failure_text(&failure(None, None)), "boom");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(3), "3s");
        assert_eq!(duration(59), "59s");
        assert_eq!(duration(60), "1m00s");
        assert_eq!(duration(312), "5m12s");
        assert_eq!(duration(3599), "59m59s");
        assert_eq!(duration(3600), "1h00m");
        assert_eq!(duration(2 * 3600 + 3 * 60 + 59), "2h03m");
        assert_eq!(duration(86_399), "23h59m");
        assert_eq!(duration(4 * 86_400 + 2 * 3600 + 5), "4d02h");
        assert_eq!(duration(400 * 86_400), "400d00h");
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(memory(None), "-");
        assert_eq!(memory(Some(0)), "0B");
        assert_eq!(memory(Some(1023)), "1023B");
        assert_eq!(memory(Some(1024)), "1.0K");
        assert_eq!(memory(Some(640 * 1024)), "640K");
        assert_eq!(memory(Some(1_258_291)), "1.2M");
        assert_eq!(memory(Some(45 << 20)), "45M");
        assert_eq!(memory(Some(3 << 30)), "3.0G");
        assert_eq!(memory(Some(u64::MAX)), "16384P");
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(31 + 28), (1970, 3, 1));
        // 2000 is a leap year (divisible by 400): February has 29 days.
        assert_eq!(civil_from_days(11_015), (2000, 2, 28));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        // 2024 is a leap year; 2100 is not (divisible by 100, not 400).
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(10_956), (1999, 12, 31));
        assert_eq!(civil_from_days(10_957), (2000, 1, 1));
    }

    #[test]
    fn civil_dates_walk_day_by_day() {
        // Every day from 1970 to 2400 follows the previous one, by a hand-counted calendar.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let days_in = |y: i64, m: u32| match m {
            2 if leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut expect = (1970, 1, 1);
        for days in 0..157_000 {
            assert_eq!(civil_from_days(days), expect, "day {days}");
            let (y, m, d) = expect;
            expect = if d < days_in(y, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(timestamp(1), "1970-01-01T00:00:00.000001Z");
        assert_eq!(
            timestamp(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
        // The leap day of 2024, a second before midnight.
        assert_eq!(
            timestamp(1_709_251_199_999_999),
            "2024-02-29T23:59:59.999999Z"
        );
        assert_eq!(
            timestamp(1_709_251_200_000_000),
            "2024-03-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn log_lines() {
        let mut l = line(1_700_000_000_123_456, "listening on :80");
        assert_eq!(
            log_line(&l),
            "2023-11-14T22:13:20.123456Z web[412] stdout: listening on :80"
        );
        l.stream = Stream::Stderr;
        assert_eq!(
            log_json(&l),
            json!({"time_us": 1_700_000_000_123_456u64, "name": "web", "pid": 412,
                   "stream": "stderr", "text": "listening on :80"})
        );
        assert_eq!(dropped_note(1), "-- 1 earlier line was dropped --");
        assert_eq!(dropped_note(42), "-- 42 earlier lines were dropped --");
    }

    #[test]
    fn status_json_shape() {
        let mut web = service("web", "running", Some(412));
        web.memory_bytes = Some(4096);
        web.restarts = 2;
        web.sockets = vec![SocketStatus {
            name: "http".into(),
            address: "/run/web.sock".into(),
        }];
        web.instances = vec![InstanceStatus {
            name: "web@1".into(),
            pid: 500,
        }];
        web.instances_started = Some(41);
        web.last_exit = Some(ExitStatus::Signal(9));
        web.failure = Some(FailureStatus {
            step: None,
            reason: "killed by SIGKILL".into(),
            status: None,
        });
        web.log_tail = vec![line(0, "not in the JSON")];
        web.status_text = Some("serving 3 clients".into());
        let mut once = service("once", "failed", None);
        once.last_exit = Some(ExitStatus::Code(203));
        once.failure = Some(FailureStatus {
            step: Some("exec".into()),
            reason: "No such file or directory".into(),
            status: Some(203),
        });
        let idle = service("idle", "inactive", None);
        assert_eq!(
            status_json(&status(vec![web, once, idle])),
            json!({
                "manager": {"pid": 1, "version": "0.1.0"},
                "services": [
                    {
                        "name": "web", "state": "running", "pid": 412, "since": NOW - 312,
                        "restarts": 2, "memory_bytes": 4096,
                        "sockets": [{"name": "http", "address": "/run/web.sock"}],
                        "instances": [{"name": "web@1", "pid": 500}], "instances_started": 41,
                        "last_exit": {"signal": 9},
                        "failure": {"step": null, "reason": "killed by SIGKILL", "status": null},
                        "status_text": "serving 3 clients", "waiting_for": [], "retry_at": null, "stored_fds": [],
                    },
                    {
                        "name": "once", "state": "failed", "pid": null, "since": NOW - 312,
                        "restarts": 0, "memory_bytes": null, "sockets": [], "instances": [],
                        "instances_started": null, "last_exit": {"code": 203},
                        "failure": {"step": "exec", "reason": "No such file or directory",
                                    "status": 203},
                        "status_text": null, "waiting_for": [], "retry_at": null, "stored_fds": [],
                    },
                    {
                        "name": "idle", "state": "inactive", "pid": null, "since": NOW - 312,
                        "restarts": 0, "memory_bytes": null, "sockets": [], "instances": [],
                        "instances_started": null, "last_exit": null, "failure": null,
                        "status_text": null, "waiting_for": [], "retry_at": null, "stored_fds": [],
                    },
                ],
            })
        );
    }

    #[test]
    fn reload_summaries() {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            reloaded(&names(&["a", "b"]), &[], &names(&["c"])),
            "added: a, b\nrestarted: c\n"
        );
        assert_eq!(reloaded(&[], &names(&["x"]), &[]), "removed: x\n");
        assert_eq!(reloaded(&[], &[], &[]), "nothing changed\n");
        assert_eq!(
            reloaded_json(&names(&["a"]), &[], &[]),
            json!({"added": ["a"], "removed": [], "restarted": []})
        );
    }
}
