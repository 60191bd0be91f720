//! The services' output pipes: made for services that log to the manager, read a bounded
//! amount per turn, cut into lines, kept in each unit's ring and log file (`log_dir`), echoed,
//! and sent to followers.

use std::time::Instant;

use steward_protocol::control::{LogLine, Reply, Stream};

use super::Manager;
use super::token::Token;
use crate::config::StdioMode;
use crate::log;
use crate::output::{self, Pipe};
use crate::registry::UnitId;
use crate::supervisor::Pid;

impl Manager {
    /// Opens the output pipes of a service that logs to the manager (not accept mode: its
    /// instances get their own), once. With `stdio = "socket"` only its stderr goes there.
    pub(super) fn open_log_pipes(&mut self, id: UnitId) {
        let Some(unit) = self.registry.get(id) else {
            return;
        };
        let config = unit.supervisor.config();
        let logs = matches!(config.stdio, StdioMode::Log | StdioMode::Socket);
        if !logs || config.accept || unit.io.writers.is_some() {
            return;
        }
        let name = config.name.clone();
        let mut pipes = Vec::new();
        let mut writers = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            match output::pipe(stream) {
                Ok((pipe, write)) => {
                    if !self.watch_fd(&pipe.fd, Token::Log(id, stream)) {
                        log::service(&name, format_args!("cannot watch its log pipe"));
                        return;
                    }
                    pipes.push(pipe);
                    writers.push(write);
                }
                Err(e) => {
                    log::service(&name, format_args!("cannot make its log pipe: {e}"));
                    for pipe in &pipes {
                        self.unwatch_fd(&pipe.fd);
                    }
                    return;
                }
            }
        }
        if let Some(unit) = self.registry.get_mut(id) {
            unit.io.pipes.extend(pipes);
            unit.io.writers = <[_; 2]>::try_from(writers).ok();
        }
    }

    /// Reads what a service wrote to one of its pipes.
    pub(super) fn on_log(&mut self, id: UnitId, stream: Stream) {
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        let pid = unit.supervisor.state().pid().map_or(0, Pid::raw);
        let name = &unit.supervisor.config().name;
        let Some(pipe) = unit.io.pipes.iter_mut().find(|p| p.stream == stream) else {
            return;
        };
        let lines = read_lines(pipe, name, pid).0;
        self.keep_lines(id, lines);
    }

    /// Reads what an accept instance wrote; at its end of file the pipe goes.
    pub(super) fn on_instance_log(&mut self, id: UnitId, pid: Pid, stream: Stream) {
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        // Tagged as when it was spawned: it may have been reaped since.
        let name = match unit.io.instances.tag(pid) {
            Some(tag) => tag.to_string(),
            None => unit.supervisor.config().name.clone(),
        };
        let Some(pipe) = unit.io.instances.get_mut(pid, stream) else {
            return;
        };
        let (lines, ended) = read_lines(pipe, &name, pid.raw());
        if ended {
            if let Some(pipe) = unit.io.instances.remove(pid, stream) {
                self.unwatch_fd(&pipe.fd);
            }
        }
        self.keep_lines(id, lines);
    }

    /// Keeps lines in the service's ring and log file, echoes them, and sends them to its
    /// followers.
    fn keep_lines(&mut self, id: UnitId, lines: Vec<LogLine>) {
        if lines.is_empty() {
            return;
        }
        let followers: Vec<u64> = self
            .control
            .clients
            .iter()
            .filter(|(_, c)| c.follow == Some(id))
            .map(|(cid, _)| *cid)
            .collect();
        if !followers.is_empty() {
            let reply = Reply::Logs {
                lines: lines.clone(),
                dropped: 0,
                files: Vec::new(),
            };
            for cid in followers {
                self.control.send(cid, &reply, false);
                self.flush_client(cid);
            }
        }
        let Some(unit) = self.registry.get_mut(id) else {
            return;
        };
        let mut at = vec![None; lines.len()];
        if let Some(settings) = &self.log_files {
            let name = &unit.supervisor.config().name;
            let file = unit
                .io
                .disk
                .get_or_insert_with(|| Box::new(settings.service_file(name)));
            let (written, note) = file.append(&lines, Instant::now());
            if let Some(note) = note {
                log::warning(format_args!("{name}: {note}"));
            }
            at = written.into_iter().map(Some).collect();
        }
        for (line, at) in lines.into_iter().zip(at) {
            log::output(&line.name, &line.text);
            unit.io.output.push(line, at);
        }
    }
}

/// Reads what is waiting in an output pipe (up to the read budget) and cuts it into lines;
/// also says whether the pipe reached its end.
fn read_lines(pipe: &mut Pipe, name: &str, pid: i32) -> (Vec<LogLine>, bool) {
    let mut lines = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut budget = output::READ_BUDGET;
    let mut ended = false;
    let time_us = output::now_us();
    let stream = pipe.stream;
    let mut push = |text: &str| {
        lines.push(LogLine {
            time_us,
            name: name.to_string(),
            pid,
            stream,
            text: text.to_string(),
        })
    };
    while budget > 0 {
        match rustix::io::read(&pipe.fd, &mut buf) {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(n) => {
                budget = budget.saturating_sub(n);
                pipe.splitter.feed(&buf[..n], &mut push);
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => break,
            Err(_) => {
                ended = true;
                break;
            }
        }
    }
    if ended {
        pipe.splitter.finish(&mut push);
    }
    (lines, ended)
}
