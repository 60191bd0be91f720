//! Logs on disk (`[manager] log_dir`): each service's lines in `DIR/NAME.log`, rotated by size,
//! read back by `stewardctl logs -n` across the files, kept whole across a `reexec`, and a disk
//! that fills up costing lines, never the service or the manager.

use std::path::{Path, PathBuf};
use std::process::Command;

use steward_integration_tests::*;

/// The numbers of `line N …` lines, in order, from `stewardctl logs` output or a log file.
fn numbers(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" stdout: line ")?;
            rest.split(' ').next()?.parse().ok()
        })
        .collect()
}

/// Fails unless `got` is exactly `from..=to`, naming the first difference (not 200 000 numbers).
fn assert_run(got: &[u64], from: u64, to: u64) {
    let expect: Vec<u64> = (from..=to).collect();
    if got != expect {
        let at = got.iter().zip(&expect).position(|(a, b)| a != b);
        panic!(
            "expected lines {from}..={to}: got {} lines, {}..{}, first difference at index {at:?}",
            got.len(),
            got.first().unwrap_or(&0),
            got.last().unwrap_or(&0)
        );
    }
}

/// `svc.log` and its rotated files, oldest first.
fn files(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let file = path.file_name()?.to_str()?.to_string();
            let rest = file.strip_prefix(&format!("{name}.log"))?;
            let n = if rest.is_empty() {
                0
            } else {
                rest.strip_prefix('.')?.parse().ok()?
            };
            Some((n, path))
        })
        .collect();
    rotated.sort();
    rotated.reverse();
    rotated.into_iter().map(|(_, p)| p).collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

const LINES: u64 = 500_000;

#[test]
fn fifty_megabytes_rotate_into_four_files_read_back_in_order() {
    // 500 000 lines of 100 bytes: 50 MB.
    let s = Steward::start(&format!(
        r#"
[manager]
log_dir = "@DIR@/logs"
log_max_size = "1M"
log_keep = 3

[service.flood]
exec = ["/usr/bin/awk", "BEGIN {{ for (i = 1; i <= {LINES}; i++) printf \"line %07d %s\\n\", i, \"................................................................................\" }}"]
autostart = false
"#
    ));
    let logs = s.dir.path().join("logs");
    s.wait_for("version");
    // Settled after the start: the first status answer is served.
    s.status();
    let before = anon_rss_kib(s.pid());
    let (code, _, err) = s.ctl(&["start", "flood"]);
    assert_eq!(code, 0, "{err}");
    // Asked while the files rotate under it: still one run of lines, none twice or missing.
    wait_until("flood.log is rotated", || logs.join("flood.log.1").exists());
    let (code, out, err) = s.ctl(&["logs", "flood", "-n", "20000"]);
    assert_eq!(code, 0, "{err}");
    let during = numbers(&out);
    assert!(
        during.len() == 20_000 || during[0] == 1,
        "{} lines",
        during.len()
    );
    assert_run(&during, during[0], during[0] + during.len() as u64 - 1);
    s.wait_for(&format!("flood: line {LINES:07}"));
    let after = anon_rss_kib(s.pid());
    eprintln!("manager anonymous RSS: {before} KiB before the flood, {after} KiB after 50 MB");
    assert!(
        after <= before + 1024,
        "anonymous RSS grew from {before} to {after} KiB"
    );

    let files = files(&logs, "flood");
    assert_eq!(files.len(), 4, "{files:?}");
    let mut all = Vec::new();
    for file in &files {
        let text = read(file);
        let longest = text.lines().map(str::len).max().unwrap();
        assert!(
            text.len() as u64 <= 1024 * 1024 + longest as u64 + 1,
            "{} is {} bytes",
            file.display(),
            text.len()
        );
        assert!(text.ends_with('\n'));
        let n = numbers(&text);
        assert_eq!(
            n.len(),
            text.lines().count(),
            "a torn line in {}",
            file.display()
        );
        all.extend(n);
    }
    assert_eq!(
        *all.last().unwrap(),
        LINES,
        "the newest line is in flood.log"
    );
    let first = all[0];
    assert_run(&all, first, LINES);

    let (code, out, err) = s.ctl(&["logs", "flood", "-n", "20000"]);
    assert_eq!(code, 0, "{err}");
    assert_run(&numbers(&out), LINES - 19_999, LINES);
    // The manager's own log, beside them.
    assert!(read(&logs.join("steward.log")).contains("] stderr: flood: started (pid "));
}

#[test]
fn no_line_is_lost_or_doubled_across_a_reexec() {
    const N: u64 = 200_000;
    let s = Steward::start(&format!(
        r#"
[manager]
log_dir = "@DIR@/logs"
log_max_size = "1M"
log_keep = 20

[service.counter]
exec = ["/usr/bin/awk", "BEGIN {{ for (i = 1; i <= {N}; i++) {{ printf \"line %d\\n\", i; fflush() }} }}"]
"#
    ));
    let logs = s.dir.path().join("logs");
    wait_until("the counter has written some", || {
        read(&logs.join("counter.log")).len() > 100_000
    });
    let (code, out, err) = s.ctl(&["reexec"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        !read(&logs.join("counter.log")).contains(&format!("line {N}\n")),
        "the counter finished before the reexec: make it write more"
    );
    s.wait_for(&format!("counter: line {N}"));
    s.wait_for("took over from");
    let mut all = Vec::new();
    for file in files(&logs, "counter") {
        all.extend(numbers(&read(&file)));
    }
    assert_run(&all, 1, N);
    // The ring came over without positions in the files: `-n` reads the files for all of it.
    let (_, out, _) = s.ctl(&["logs", "counter", "-n", &N.to_string()]);
    assert_run(&numbers(&out), 1, N);
}

#[test]
fn accept_instances_write_to_the_service_file_tagged() {
    let s = Steward::start(
        r#"
[manager]
log_dir = "@DIR@/logs"

[service.inst]
exec = ["/bin/sh", "-c", "echo hello from an instance"]
accept = true
[[service.inst.socket]]
path = "@DIR@/inst.sock"
"#,
    );
    s.wait_state("inst", "listening");
    for _ in 0..2 {
        let _ = std::os::unix::net::UnixStream::connect(s.dir.path().join("inst.sock")).unwrap();
    }
    let file = s.dir.path().join("logs/inst.log");
    wait_until("both instances' lines are in inst.log", || {
        let text = read(&file);
        text.contains(" inst@1[") && text.contains(" inst@2[")
    });
    let text = read(&file);
    for line in text.lines() {
        assert!(line.ends_with("] stdout: hello from an instance"), "{text}");
    }
    // The file's lines are what `stewardctl logs` prints.
    let (_, out, _) = s.ctl(&["logs", "inst"]);
    assert_eq!(out, text);
}

#[test]
#[ignore = "needs root"]
fn a_full_disk_drops_lines_once_and_writing_resumes_when_space_is_freed() {
    // Mounted before steward starts, so that the file it opens is the tmpfs's.
    let dir = temp_dir();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&logs)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(logs.clone());
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[manager]
log_dir = "{}"
log_max_size = "8M"
log_keep = 1

[service.chatty]
exec = ["/bin/sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x | fold -w 99; echo; while [ ! -e {go} ]; do sleep 0.05; done; while :; do echo tick; sleep 0.05; done"]
"#,
            logs.display(),
            go = dir.path().join("go").display()
        ),
    )
    .unwrap();
    let s = Steward::start_at(&config, dir);

    let said = s.wait_for("dropping lines until it can be written again");
    assert!(said.contains("No space left on device"), "{said}");
    // The rest of the 3 MB goes on arriving (the ring has it), and is dropped.
    wait_until("the flood is read to its end", || {
        s.lines().iter().any(|l| l == "chatty: xxx")
    });
    assert_eq!(s.count("dropping lines"), 1);
    assert_eq!(s.service("chatty")["state"], "running");
    let text = read(&logs.join("chatty.log"));
    assert!(text.len() > 900_000, "{} bytes written", text.len());
    for line in text.lines() {
        assert!(
            line.ends_with(&format!("] stdout: {}", "x".repeat(99))),
            "torn: {line}"
        );
    }

    // Space freed: writing resumes by itself, saying how many lines were lost.
    std::fs::OpenOptions::new()
        .write(true)
        .open(logs.join("chatty.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    std::fs::write(s.dir.path().join("go"), "").unwrap();
    let resumed = s.wait_for("writing again");
    assert!(resumed.contains("lines were dropped"), "{resumed}");
    wait_until("ticks are written again", || {
        read(&logs.join("chatty.log")).contains("] stdout: tick")
    });
    assert_eq!(s.count("dropping lines"), 1);
    assert_eq!(s.service("chatty")["state"], "running");
}

#[test]
#[ignore = "needs root"]
fn a_read_only_log_dir_at_boot_is_written_once_it_is_remounted_read_write() {
    // As on a board whose root is read-only until a boot step remounts it.
    let dir = temp_dir();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(&logs)
        .status()
        .unwrap();
    assert!(mounted.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(logs.clone());
    let config = dir.path().join("steward.toml");
    std::fs::write(
        &config,
        format!(
            "[manager]\nlog_dir = \"{}\"\n\n[service.ticker]\nexec = [\"/bin/sh\", \"-c\", \"while :; do echo tick; sleep 0.05; done\"]\n",
            logs.display()
        ),
    )
    .unwrap();
    let s = Steward::start_at(&config, dir);
    let said = s.wait_for("ticker: log file");
    assert!(
        said.contains("Read-only file system; dropping lines"),
        "{said}"
    );
    s.wait_for_nth("ticker: tick", 30);
    assert_eq!(s.count("ticker: log file"), 1);

    let remounted = Command::new("mount")
        .args(["-o", "remount,rw"])
        .arg(&logs)
        .status()
        .unwrap();
    assert!(remounted.success());
    let resumed = s.wait_for("ticker.log: writing again");
    assert!(resumed.contains("lines were dropped"), "{resumed}");
    wait_until("ticks are in the file", || {
        read(&logs.join("ticker.log")).contains("] stdout: tick")
    });
    // The manager's own log too, once it has something to say.
    s.wait_for("steward.log: writing again");
    let own = read(&logs.join("steward.log"));
    assert!(
        own.contains("] stderr: ticker: log file"),
        "{own}\n{:?}",
        s.lines()
    );
    assert_eq!(s.service("ticker")["state"], "running");
}
