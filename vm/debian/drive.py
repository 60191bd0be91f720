#!/usr/bin/env python3
"""Boots one vm-debian image under QEMU and checks it from the host (vm/debian/vm-debian runs it).

`drive.py check ...`: boot, login prompt, a scripted root login on the serial line, ssh with
the image's key, logger into rsyslog's file, reboot into a second boot that comes up the same
way, poweroff with QEMU's exit status 0, a clean file system after it. Prints one
`vm-debian: ok: ...` or `vm-debian: FAIL: ...` line per check and exits 1 if any failed.

`drive.py measure ...`: boot, wait until every daemon is up, read the memory figures, power
off; prints one JSON line of figures. `drive.py table FILE` turns those lines into the
markdown table of medians.

The console is QEMU's serial port on a pipe. A reader thread keeps every byte, with the host's
time at which each line arrived, so a line without a kernel time stamp (steward's own) is put
on the guest's clock through the kernel lines around it. Only the standard library is used.
"""

import argparse
import json
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time

PASSWORD = "steward"  # set by vm/debian/build-image: the image is a test artefact
PRINTK = re.compile(r"^\[\s*(\d+\.\d+)\]")
KERNEL_BANNER = r"Linux version \d"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours (stewardctl's states on a tty)


class Timeout(Exception):
    """A pattern did not appear on the console in time."""


class Console:
    """QEMU with its serial port on a pipe, every line of it kept with the host's time."""

    def __init__(self, argv, log_path):
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.text = ""  # the console so far, decoded, without carriage returns
        self.lines = []  # (host monotonic time, offset in text where the line starts, line)
        self.cond = threading.Condition()
        self.eof = False
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        fd = self.proc.stdout.fileno()
        partial = ""
        while True:
            chunk = os.read(fd, 65536)
            now = time.monotonic()
            if not chunk:
                break
            self.log.write(chunk)
            self.log.flush()
            text = chunk.decode("utf-8", "replace").replace("\r", "")
            with self.cond:
                start = len(self.text) - len(partial)
                self.text += text
                partial += text
                *done, partial = partial.split("\n")
                for line in done:
                    self.lines.append((now, start, line))
                    start += len(line) + 1
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def mark(self):
        """The current end of the console text: search from here for what comes next."""
        with self.cond:
            return len(self.text)

    def wait_for(self, pattern, timeout, since=0):
        """The first match of `pattern` in the console text after `since`, as a match object
        on the whole text (so .end() is a mark); raises Timeout."""
        regex = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = regex.search(self.text, since)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    raise Timeout(f"no {pattern!r} on the console within {timeout}s")
                self.cond.wait(left)

    def send(self, text):
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def wait_exit(self, timeout):
        """QEMU's exit status, or None if it is still running after `timeout`."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        self.log.close()

    def guest_time(self, mark, boot_start):
        """The guest's uptime at the text offset `mark`: the kernel time stamp just before it,
        else that of the line that holds it, or, for a line without one, its host arrival
        time less the smallest (host - kernel) difference over the kernel lines of the same
        boot (the least delayed one)."""
        with self.cond:
            lines = [entry for entry in self.lines if entry[1] >= boot_start]
            # A kernel line that came in the middle of another (a login prompt, say).
            stamp = re.search(r"\[\s*(\d+\.\d+)\] $", self.text[max(0, mark - 20):mark])
        if stamp:
            return float(stamp.group(1))
        offset = None
        target = None
        for host, start, line in lines:
            stamp = PRINTK.match(line)
            if stamp:
                diff = host - float(stamp.group(1))
                offset = diff if offset is None else min(offset, diff)
            if target is None and start <= mark < start + len(line) + 1:
                if stamp:
                    return float(stamp.group(1))
                target = host
        if target is None or offset is None:
            return None
        return target - offset

    def kernel_time(self, pattern, since):
        """The kernel time stamp of the first line after `since` that matches `pattern`."""
        found = re.compile(r"^\[\s*(\d+\.\d+)\][^\n]*" + pattern, re.MULTILINE).search(
            self.text, since
        )
        return float(found.group(1)) if found else None


class Checks:
    """Prints ok/FAIL lines and remembers whether any failed."""

    def __init__(self):
        self.failed = 0

    def ok(self, what):
        print(f"vm-debian: ok: {what}", flush=True)

    def fail(self, what, why):
        print(f"vm-debian: FAIL: {what}: {why}", flush=True)
        self.failed += 1

    def check(self, what, cond, why=""):
        if cond:
            self.ok(what)
        else:
            self.fail(what, why)
        return cond


def qemu_argv(args, port):
    accel = ["-accel", "kvm", "-cpu", "host"] if args.accel == "kvm" else ["-accel", "tcg"]
    return [
        "qemu-system-x86_64", *accel, "-m", str(args.memory), "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
        "-drive", f"file={args.image},format=raw,if=virtio",
        "-nic", f"user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-kernel", args.kernel, "-initrd", args.initrd, "-append", args.append,
    ]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssh(args, port, command, timeout=90):
    """Runs `command` in the guest over ssh as root with the image's key: (status, output)."""
    argv = [
        "ssh", "-p", str(port), "-i", args.key, "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=30", "root@127.0.0.1", command,
    ]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timeout"
    return done.returncode, done.stdout + done.stderr


def serial_login(con, since, timeout):
    """Logs in as root on the serial console at the login prompt after `since`; returns the
    mark after the shell's first answer."""
    prompt = con.wait_for(r"\blogin: ", timeout, since)
    con.send("root\n")
    con.wait_for(r"Password: ", 60, prompt.end())
    con.send(PASSWORD + "\n")
    # Bash's prompt (Debian's root PS1): what is typed before it may be eaten by login.
    shell = con.wait_for(r"root@[^:\s]*:~# ", timeout, prompt.end())
    return serial_run(con, "true", 120, shell.end())[2]


def serial_run(con, command, timeout, since):
    """Runs `command` in the serial login shell: (status, its output, the mark after it). The
    markers are split in the typed line so that the echo of the line does not match them."""
    tag = secrets.token_hex(4)
    con.send(f'echo "B""EGIN-{tag}"; {command}; echo "E""ND-{tag} rc=$?"\n')
    begin = con.wait_for(rf"BEGIN-{tag}\n", timeout, since)
    end = con.wait_for(rf"END-{tag} rc=(\d+)", timeout, begin.end())
    output = ANSI.sub("", con.text[begin.end():end.start()])
    return int(end.group(1)), output, end.end()


def measure_memory(args, port):
    """PID 1's VmRSS and Pss and the memory in use, in KiB, read over ssh."""
    status, out = ssh(
        args, port,
        "grep '^VmRSS:' /proc/1/status; grep '^Pss:' /proc/1/smaps_rollup; "
        "free -k | awk '/^Mem:/ {print \"Used:\", $3}'",
    )
    figures = {}
    for key, name in (("VmRSS", "pid1_rss_kib"), ("Pss", "pid1_pss_kib"), ("Used", "used_kib")):
        found = re.search(rf"^{key}:\s+(\d+)", out or "", re.MULTILINE)
        figures[name] = int(found.group(1)) if found else None
    return figures


def boot_times(con, args, boot_start, done):
    """Kernel start -> PID 1 start -> every daemon up, in guest seconds, for the boot whose
    kernel banner is at `boot_start`; `done` is the match of the probe's line."""
    if args.flavour == "steward":
        pid1 = con.wait_for(r"steward: version \S+ starting", 1, boot_start)
        pid1_at = con.guest_time(pid1.start(), boot_start)
    else:
        pid1_at = con.kernel_time(r"systemd \d+[^\n]* running in system mode", boot_start)
    up_at = con.guest_time(done.start(), boot_start)
    return {"pid1_s": pid1_at, "all_up_s": up_at}


def wait_boot(con, args, since, checks, label):
    """Waits for the kernel banner, the login prompt and the probe's `all up` of one boot;
    returns (banner mark, login prompt match, probe match) or None after a FAIL line."""
    try:
        banner = con.wait_for(KERNEL_BANNER, args.timeout, since)
        prompt = con.wait_for(r"\blogin: ", args.timeout, banner.end())
        checks.ok(f"{label}: the serial console shows a login prompt")
        done = con.wait_for(r"vm-boot-done: (all up|gave up[^\n]*)", args.timeout, banner.end())
    except Timeout as e:
        checks.fail(f"{label}: boot", str(e))
        return None
    if not checks.check(f"{label}: every daemon is up (the probe)", done.group(1) == "all up",
                        done.group(0)):
        return None
    return banner.start(), prompt, done


def serial_check(con, args, prompt, checks, label):
    """The scripted root login on the serial line and the init's own status command; returns
    the mark after it (the shell stays logged in) or None."""
    try:
        mark = serial_login(con, prompt.start(), 120)
    except Timeout as e:
        checks.fail(f"{label}: root login on the serial line", str(e))
        return None
    checks.ok(f"{label}: root login on the serial line")
    try:
        if args.flavour == "steward":
            status, out, mark = serial_run(con, "stewardctl status", 60, mark)
            # The daemons of any config (steward-today/, the graph of steward/, or its daemons
            # imported: sshd hand-written is an accept service, ssh imported a lazy one, which
            # runs once a client came); their setup tasks differ, but none may have failed.
            # Names are patterns.
            want = {"udevd": "running", "rsyslog": "running", "cron": "running",
                    "getty": "running", "sshd|ssh": "listening|running",
                    "dbus": "running|listening", "boot-done": "exited"}
            wrong = [f"{name} not {state}" for name, state in want.items()
                     if not re.search(rf"^\s*(?:{name})\s+({state})\b", out, re.M)]
            wrong += [f"{name} failed" for name in
                      re.findall(r"^\s*(\S+)\s+failed\b", out, re.M)]
            checks.check(f"{label}: `stewardctl status` on the serial login", status == 0
                         and not wrong, f"status {status}, {', '.join(wrong)}:\n{out}")
        else:
            status, out, mark = serial_run(
                con, "systemctl is-system-running --wait; systemctl --no-pager --plain "
                "--no-legend list-units --failed", 180, mark)
            checks.check(f"{label}: `systemctl is-system-running` says running, no failed unit",
                         re.search(r"^running$", out, re.M) and "failed" not in out,
                         f"status {status}:\n{out}")
            status, out, mark = serial_run(
                con, "systemctl is-active ssh.socket cron rsyslog dbus systemd-udevd "
                "systemd-networkd serial-getty@ttyS0", 60, mark)
            checks.check(f"{label}: `systemctl is-active` of the daemons",
                         out.split().count("active") == 7, out)
    except Timeout as e:
        checks.fail(f"{label}: a command on the serial login", str(e))
        return None
    return mark


def check(args):
    checks = Checks()
    port = free_port()
    con = Console(qemu_argv(args, port), args.log)
    summary = {"flavour": args.flavour, "accel": args.accel}
    try:
        boot = wait_boot(con, args, 0, checks, "boot 1")
        if boot is None:
            return 1
        banner, prompt, done = boot
        summary.update(boot_times(con, args, banner, done))
        mark = serial_check(con, args, prompt, checks, "boot 1")

        status, out = ssh(args, port, "echo ok")
        checks.check("boot 1: ssh with the image's key answers ok", status == 0
                     and out.strip() == "ok", f"status {status}: {out.strip()}")
        summary.update(measure_memory(args, port))

        tag = f"hello-from-check-{secrets.token_hex(4)}"
        status, out = ssh(args, port, f"logger {tag}; for i in $(seq 50); do "
                          f"cat /var/log/syslog /var/log/messages 2>/dev/null | grep {tag} "
                          f"&& exit 0; sleep 0.2; done; exit 1")
        checks.check("boot 1: `logger` reaches rsyslog's /var/log/syslog", status == 0
                     and tag in out, f"status {status}: {out.strip()}")

        if mark is None:
            return 1
        reboot = "stewardctl reboot" if args.flavour == "steward" else "systemctl reboot"
        con.send(reboot + "\n")
        boot = wait_boot(con, args, mark, checks, f"boot 2 (after `{reboot}`)")
        if boot is None:
            return 1
        banner, prompt, done = boot
        status, out = ssh(args, port, "echo ok")
        checks.check("boot 2: ssh answers ok", status == 0 and out.strip() == "ok",
                     f"status {status}: {out.strip()}")
        mark = serial_check(con, args, prompt, checks, "boot 2")
        if mark is None:
            return 1
        poweroff = "stewardctl poweroff" if args.flavour == "steward" else "systemctl poweroff"
        con.send(poweroff + "\n")
        status = con.wait_exit(args.timeout)
        checks.check(f"`{poweroff}` ends QEMU with status 0", status == 0, f"status {status}")
    finally:
        con.kill()
        with open(args.summary, "w") as f:
            json.dump(summary, f)
            f.write("\n")
    if con.proc.returncode == 0:
        fsck = subprocess.run(["e2fsck", "-n", "-f", args.image], capture_output=True, text=True)
        state = subprocess.run(["dumpe2fs", "-h", args.image], capture_output=True, text=True)
        clean = re.search(r"^Filesystem state:\s+clean$", state.stdout, re.M)
        recovery = re.search(r"^Filesystem features:.*needs_recovery", state.stdout, re.M)
        checks.check("the file system is clean after poweroff (e2fsck -n -f)",
                     fsck.returncode == 0 and clean and not recovery,
                     f"e2fsck status {fsck.returncode}: {fsck.stdout}{fsck.stderr}"
                     + ("" if clean else " state not clean") + (" needs recovery" if recovery else ""))
    return 1 if checks.failed else 0


def seconds(span):
    """systemd's time span (`1min 15.241s`, `842ms`) in seconds."""
    units = {"h": 3600, "min": 60, "s": 1, "ms": 0.001, "us": 0.000001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(h|min|ms|us|s)\b", span))


def measure(args):
    """One boot: the times and memory figures as one JSON line on stdout."""
    port = free_port()
    con = Console(qemu_argv(args, port), args.log)
    figures = {"flavour": args.flavour, "accel": args.accel, "memory_mib": args.memory,
               "host_load": os.getloadavg()[0]}
    try:
        banner = con.wait_for(KERNEL_BANNER, args.timeout)
        done = con.wait_for(r"vm-boot-done: all up", args.timeout, banner.end())
        figures.update(boot_times(con, args, banner.start(), done))
        prompt = con.wait_for(r"\blogin: ", args.timeout, banner.end())
        figures["login_prompt_s"] = con.guest_time(prompt.start(), banner.start())
        figures.update(measure_memory(args, port))
        if args.flavour == "systemd":
            _, out = ssh(args, port, "systemctl is-system-running --wait >/dev/null; "
                         "systemd-analyze; systemd-analyze time")
            found = re.search(r"Startup finished in (.*?) \(kernel\) \+ (.*?) \(userspace\)",
                              out or "")
            if found:
                figures["systemd_analyze_kernel_s"] = seconds(found.group(1))
                figures["systemd_analyze_userspace_s"] = seconds(found.group(2))
        off = "stewardctl poweroff" if args.flavour == "steward" else "systemctl poweroff"
        ssh(args, port, off, timeout=60)
        figures["exit_status"] = con.wait_exit(args.timeout)
    except Timeout as e:
        figures["error"] = str(e)
    finally:
        con.kill()
    print(json.dumps(figures), flush=True)
    return 0 if "error" not in figures and figures.get("exit_status") == 0 else 1


def table(args):
    """The markdown table of medians of the JSON lines in args.file."""
    runs = {}
    with open(args.file) as f:
        for line in f:
            if line.strip():
                run = json.loads(line)
                runs.setdefault(run["flavour"], []).append(run)
    flavours = [f for f in ("steward", "systemd") if f in runs]

    def median(flavour, key, scale=1.0, digits=2):
        values = [r[key] for r in runs[flavour] if r.get(key) is not None]
        if not values:
            return "–"
        return f"{statistics.median(values) * scale:.{digits}f}"

    def derived(run, key):
        if key == "pid1_to_up_s" and run.get("all_up_s") is not None and run.get("pid1_s") is not None:
            return run["all_up_s"] - run["pid1_s"]
        return run.get(key)

    for flavour in flavours:
        for run in runs[flavour]:
            run["pid1_to_up_s"] = derived(run, "pid1_to_up_s")
    rows = [
        ("kernel start → PID 1 start (s)", "pid1_s", 1.0, 2),
        ("PID 1 start → every daemon up (s)", "pid1_to_up_s", 1.0, 2),
        ("kernel start → every daemon up (s)", "all_up_s", 1.0, 2),
        ("kernel start → login prompt on ttyS0 (s)", "login_prompt_s", 1.0, 2),
        ("systemd-analyze: kernel / userspace (s)", None, 1.0, 2),
        ("PID 1 VmRSS (KiB)", "pid1_rss_kib", 1.0, 0),
        ("PID 1 Pss (KiB)", "pid1_pss_kib", 1.0, 0),
        ("memory in use, `free -k` used (KiB)", "used_kib", 1.0, 0),
    ]
    counts = ", ".join(f"{len(runs[f])} boots of {f}" for f in flavours)
    accel = sorted({r.get("accel", "?") for f in flavours for r in runs[f]})
    loads = [r["host_load"] for f in flavours for r in runs[f] if "host_load" in r]
    load = f", host load average {min(loads):.1f}–{max(loads):.1f} at boot" if loads else ""
    out = [f"Medians of {counts} (QEMU {'/'.join(accel)}, -smp 1, "
           f"{runs[flavours[0]][0].get('memory_mib', '?')} MiB{load}).", "",
           "| | " + " | ".join(flavours) + " |", "|---|" + "---:|" * len(flavours)]
    for label, key, scale, digits in rows:
        cells = []
        for f in flavours:
            if key is None:
                k, u = median(f, "systemd_analyze_kernel_s"), median(f, "systemd_analyze_userspace_s")
                cells.append("–" if f != "systemd" else f"{k} / {u}")
            else:
                cells.append(median(f, key, scale, digits))
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    failed = [r for f in flavours for r in runs[f] if r.get("error") or r.get("exit_status") != 0]
    if failed:
        out += ["", f"{len(failed)} boot(s) did not finish cleanly: "
                + "; ".join(r.get("error", f"exit status {r.get('exit_status')}") for r in failed)]
    print("\n".join(out))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["check", "measure", "table"])
    parser.add_argument("--flavour", choices=["steward", "systemd"])
    parser.add_argument("--image")
    parser.add_argument("--kernel")
    parser.add_argument("--initrd")
    parser.add_argument("--append")
    parser.add_argument("--key")
    parser.add_argument("--log")
    parser.add_argument("--summary")
    parser.add_argument("--file")
    parser.add_argument("--accel", default="tcg")
    parser.add_argument("--memory", type=int, default=1024)
    parser.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args()
    return {"check": check, "measure": measure, "table": table}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
