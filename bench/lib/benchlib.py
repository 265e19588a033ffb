"""Shared helpers for the peer benchmarks under bench/ (bench/l7/run, bench/l4/run).

What every bench needs, following docs/BENCHMARKS.md: install missing tools, build Fulcrum in release,
start processes and stop them by PID on any exit, wait for ports with a deadline, run systems
interleaved (A B C A B C ...), and print median/min/max tables in markdown with the machine and the
peers' versions. Standard library only.
"""

from __future__ import annotations

import atexit
import datetime
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[2]
FULCRUM_SCRATCH = REPO / ".build-bench"
FULCRUM_BIN = FULCRUM_SCRATCH / "release" / "fulcrum"


def log(msg: str) -> None:
    """Progress goes to stderr so stdout carries only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- setup

_apt_updated = False


def ensure_tools(tools: dict[str, str]) -> None:
    """tools: command name -> Debian package. Installs the packages of missing commands
    (`apt-get update` once, then `apt-get install -y ...`)."""
    global _apt_updated
    missing = sorted({pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"missing {', '.join(missing)} and not root: install them (apt-get install -y {' '.join(missing)})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        log("apt-get update")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        _apt_updated = True
    log(f"apt-get install -y {' '.join(missing)}")
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env, timeout=1200)
    still = [cmd for cmd in tools if shutil.which(cmd) is None]
    if still:
        sys.exit(f"still missing after install: {', '.join(still)}")


def raise_nofile(want: int = 20000) -> int:
    """Raise the soft fd limit towards `want` (bounded by the hard limit); children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def build_fulcrum(log_path: Path, timeout: float = 1800) -> tuple[bool, str]:
    """`swift build -c release --product fulcrum --scratch-path .build-bench`. Returns (ok, log tail)."""
    cmd = ["swift", "build", "-c", "release", "--product", "fulcrum", "--scratch-path", str(FULCRUM_SCRATCH)]
    log(f"building Fulcrum: {' '.join(cmd)} (log: {log_path})")
    with open(log_path, "w") as out:
        try:
            rc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = -1
    tail = "\n".join(Path(log_path).read_text(errors="replace").splitlines()[-30:])
    return rc == 0 and FULCRUM_BIN.exists(), tail


def make_workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


# ------------------------------------------------------------------------------------------ processes

class Proc:
    def __init__(self, name: str, popen: subprocess.Popen, out_path: Path):
        self.name, self.popen, self.out_path = name, popen, out_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.out_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class Processes:
    """Starts processes (each in its own session) and stops exactly those, by PID, on exit:
    normal return, exception, SIGINT/SIGTERM/SIGHUP (turned into SystemExit), or atexit."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.procs: list[Proc] = []
        atexit.register(self.stop_all)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame):
        log(f"signal {signum}: stopping what this script started")
        self.stop_all()
        sys.exit(128 + signum)

    def start(self, name: str, argv: Sequence[str], cwd: Path | None = None) -> Proc:
        out_path = self.workdir / f"{name}.log"
        out = open(out_path, "ab")
        popen = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 cwd=cwd or self.workdir, start_new_session=True)
        out.close()
        proc = Proc(name, popen, out_path)
        self.procs.append(proc)
        log(f"started {name} pid {popen.pid}: {shlex.join(argv)}")
        return proc

    def stop(self, proc: Proc, grace: float = 5.0) -> None:
        if proc.alive():
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"{proc.name} pid {proc.pid} ignored SIGTERM for {grace}s: SIGKILL")
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    proc.popen.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    pass
        # Leftover children of that process (e.g. nginx workers of a killed master) are in the session
        # we created for it, whose group id is its PID.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port_open(host: str, port: int, deadline_s: float = 15.0, proc: Proc | None = None) -> None:
    """Wait until host:port accepts connections; fail early if `proc` exits."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} before listening on "
                               f"{host}:{port}; its output:\n{proc.output_tail()}")
        if port_open(host, port, 0.3):
            return
        time.sleep(0.1)
    tail = f"; its output:\n{proc.output_tail()}" if proc else ""
    raise RuntimeError(f"{host}:{port} not listening after {deadline_s}s{tail}")


def port_free(host: str, port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_ports_free(host: str, ports: Iterable[int], deadline_s: float = 10.0) -> None:
    ports = list(ports)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        busy = [p for p in ports if not port_free(host, p)]
        if not busy:
            return
        time.sleep(0.2)
    raise RuntimeError(f"ports still in use on {host} after {deadline_s}s: {busy} (use --base-port)")


def run_bounded(argv: Sequence[str], timeout: float) -> tuple[int, str]:
    """Run a client to completion with a hard timeout; returns (exit code, stdout+stderr)."""
    try:
        r = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        return -9, out + f"\n[timed out after {timeout}s]"


# ------------------------------------------------------------------------------------- interleaving

def interleaved(rounds: int, scenarios: Sequence[str], systems: Sequence[str]):
    """Yields (round, scenario, system): round 1 runs A B C for each scenario, then round 2, ...
    so slow drift of a shared machine hits every system alike."""
    for r in range(1, rounds + 1):
        for sc in scenarios:
            for sy in systems:
                yield r, sc, sy


# ----------------------------------------------------------------------------------------- numbers

def med(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def mmm(xs: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None, None
    return statistics.median(xs), min(xs), max(xs)


def fmt_num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def fmt_ratio(a: float | None, b: float | None) -> str:
    if a is None or not b:
        return "—"
    return f"{a / b:.2f}"


def fmt_ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.2f} ms" if x >= 1 else f"{x * 1000:.0f} µs"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str | None = None) -> str:
    """align: one char per column, 'l' or 'r' (default: first left, the rest right)."""
    headers = list(headers)
    align = align or ("l" + "r" * (len(headers) - 1))
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------- reporting

def version_of(argv: Sequence[str], pick: Callable[[str], str] | None = None) -> str:
    try:
        r = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        text = r.stdout.decode(errors="replace").strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    if pick:
        return pick(text)
    return text.splitlines()[0] if text else "unknown"


def machine_line() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "cpu model")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f", {kb / 1048576:.1f} GiB RAM"
    except (OSError, IndexError, ValueError):
        pass
    return (f"nproc {os.cpu_count()}, kernel {platform.release()} ({platform.machine()})"
            + (f", {cpu}" if cpu else "") + mem)


def git_describe() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=10).stdout.decode().strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "Sources", "Package.swift"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10).stdout.strip()
        return rev + (" + uncommitted changes in Sources/" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def command_line() -> str:
    try:
        script = os.path.relpath(sys.argv[0], REPO)
    except ValueError:
        script = sys.argv[0]
    return shlex.join([script, *sys.argv[1:]])


def write_record(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    log(f"recorded {os.path.relpath(path, REPO)}")


# -------------------------------------------------------------------------------------------- wrk

_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _wrk_ms(text: str) -> float | None:
    import re
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    return float(m.group(1)) * _WRK_UNITS[m.group(2)] if m else None


def parse_wrk(out: str) -> dict:
    """Reads wrk's report: req/s, requests, p50/p99 (ms, from --latency), socket errors, non-2xx/3xx."""
    import re
    res: dict = {"rps": None, "requests": None, "p50_ms": None, "p99_ms": None,
                 "sock_errors": {"connect": 0, "read": 0, "write": 0, "timeout": 0}, "non2xx": 0}
    if m := re.search(r"Requests/sec:\s+([0-9.]+)", out):
        res["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        res["requests"] = int(m.group(1))
    if m := re.search(r"^\s+50%\s+(\S+)", out, re.M):
        res["p50_ms"] = _wrk_ms(m.group(1))
    if m := re.search(r"^\s+99%\s+(\S+)", out, re.M):
        res["p99_ms"] = _wrk_ms(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        res["sock_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        res["non2xx"] = int(m.group(1))
    return res


# ---------------------------------------------------------------------------------- machine noise

def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
    total = sum(f[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - idle, total


def cpu_busy(interval: float = 1.0) -> float:
    """Fraction (0..1) of all CPUs busy during `interval` seconds."""
    b0, t0 = _cpu_times()
    time.sleep(interval)
    b1, t1 = _cpu_times()
    return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def wait_quiet(max_wait: float, threshold: float = 0.25) -> float:
    """The machine is shared: before a measured run, wait (at most `max_wait` seconds) until other
    work keeps less than `threshold` of the CPUs busy. Returns the last busy fraction seen."""
    end = time.monotonic() + max_wait
    busy = cpu_busy(1.0)
    while busy >= threshold and time.monotonic() < end:
        busy = cpu_busy(1.0)
    return busy


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def noise_line(runs: Iterable[dict], waited: float, load_start: str) -> str:
    """One report line on how busy the shared machine was before the measured runs."""
    busy = [r["busy_before"] for r in runs if r.get("busy_before") is not None]
    if not busy:
        return f"- Shared machine: load average {load_start} at start, {loadavg()} at end."
    over = sum(1 for b in busy if b >= 0.25)
    wait = f" after waiting up to {waited:.0f}s for it to drop" if waited else ""
    return (f"- Shared machine: other work kept the CPUs busy {statistics.median(busy):.0%} (median; max "
            f"{max(busy):.0%}) in the second before each run{wait}; {over} of {len(busy)} runs started above 25 %. "
            f"Load average {load_start} at start, {loadavg()} at end.")


def paired_ratio(num: Sequence[dict], den: Sequence[dict], key: str) -> str:
    """Median (min–max) of per-round ratios num[i][key] / den[i][key]: both ran in the same round."""
    rs = [n[key] / d[key] for n, d in zip(num, den)
          if n.get(key) is not None and d.get(key) and "error" not in n and "error" not in d]
    if not rs:
        return "—"
    return f"{statistics.median(rs):.2f} ({min(rs):.2f}–{max(rs):.2f})"


def process_notes(running: dict, problem_systems: set[str], first_outputs: dict[str, str]) -> list[str]:
    """Report lines: the exit status and last output of each started process that exited or whose system
    had problems, the client output of the first failing run of each such system, and any output Fulcrum
    printed (it should print nothing but its start-up lines under load)."""
    lines: list[str] = []
    for name, p in running.items():
        tail = p.output_tail(40).strip()
        if not p.alive():
            lines += [f"{name} (pid {p.pid}) exited with {p.popen.returncode}; its last output:", "```", tail, "```", ""]
        elif name in problem_systems or (name == "fulcrum" and tail):
            lines += [f"{name} (pid {p.pid}) still running; its last output (stdout+stderr):", "```",
                      tail or "(nothing)", "```", ""]
    for system, out in first_outputs.items():
        lines += [f"Client output of the first failing {system} run:", "```", out.strip()[-3000:], "```", ""]
    return lines
