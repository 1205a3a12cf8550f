#!/usr/bin/env python3
"""Kernel agent latency and throughput through its Unix socket, in a private network namespace.

Prints submission-to-completion latency (p50, p99) for ``validate`` and for
``apply`` + verify of one key (``net.core.somaxconn``, alternating between two
values), and validation throughput with many submissions in flight on one
connection. Baselines measured in the same run: the same validation called
in-process (no socket, no audit), and a socket round trip of ``history`` with
``limit`` 1 (the protocol's floor). Targets: p99 <= 5 ms for apply + verify,
>= 5,000 validations/s.

Then a flood (issue 17): the agent runs with the default open-file limit (1024, as a
unit without ``LimitNOFILE`` would give it) and ``--flood`` idle connections are opened
(default 1,100, more than it has descriptors); the connection caps refuse what is
over them (``busy``), and apply + verify is timed again while the flood stays open:
its p99 against the one measured before, and the managed key must not be lost.

Run as root: ``.venv/bin/python benchmarks/agent_latency.py [--n 2000] [--quick]``. The
agent runs in a namespace created by ``unshare -n``, so the host's sysctls never move.
``--quick`` (CI) times fewer submissions (a p99 of 200 applies) and finishes in ~15 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POLICY = """
version = 1
max_changes_per_hour = 1000000
allow = ["net.core.somaxconn", "net.ipv4.tcp_fin_timeout"]
"""


def rec(value: int) -> dict[str, object]:
    return {
        "id": "bench",
        "kind": "sysctl",
        "target": "net.core.somaxconn",
        "value": value,
        "rationale": "benchmark: listen queue overflows",
        "evidence": ["nstat: ListenOverflows 1"],
        "risk": "low",
        "source": "rules",
    }


class Conn:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, entry: dict[str, object]) -> None:
        self.sock.sendall(json.dumps(entry).encode() + b"\n")

    def read(self) -> dict[str, object]:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("agent closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        doc: dict[str, object] = json.loads(line)
        return doc

    def call(self, entry: dict[str, object]) -> tuple[float, dict[str, object]]:
        t0 = time.perf_counter()
        self.send(entry)
        reply = self.read()
        return time.perf_counter() - t0, reply


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


def line(name: str, samples: list[float]) -> str:
    return (
        f"{name:<34} n={len(samples):<6} p50 {pct(samples, 50):7.3f} ms   "
        f"p99 {pct(samples, 99):7.3f} ms   mean {statistics.fmean(samples) * 1000:7.3f} ms"
    )


def idle_flood(sock: Path, conn: Conn, n: int, applies: int) -> tuple[list[float], int, int]:
    """Open ``n`` idle connections, time ``applies`` apply + verify on ``conn`` meanwhile.

    :return: the latencies (seconds), how many connections stayed open, how many were
        refused ``busy``.
    """
    flood: list[socket.socket] = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(1.0)
        try:
            s.connect(str(sock))
        except OSError:
            s.close()
            continue
        flood.append(s)
    time.sleep(1.0)
    busy = 0
    ready, _, _ = select.select(flood, [], [], 1.0)
    for s in ready:
        with contextlib.suppress(OSError):
            if b'"busy"' in s.recv(65536):
                busy += 1
    latencies = []
    try:
        for i in range(applies):
            t, reply = conn.call(
                {"op": "apply", "user_data": f"f{i}", "recommendations": rec((8192, 4096)[i % 2])}
            )
            assert reply["verdict"] == "verified", reply
            latencies.append(t)
    finally:
        for s in flood:
            s.close()
    return latencies, len(flood) - busy, busy


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="validate submissions timed one by one")
    ap.add_argument("--applies", type=int, default=300, help="apply + verify submissions")
    ap.add_argument("--burst", type=int, default=10000, help="validations in flight for throughput")
    ap.add_argument("--flood", type=int, default=1100, help="idle connections opened at once")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="CI mode: 300 validations, 200 applies, a burst of 2,000, a flood of 1,100",
    )
    args = ap.parse_args()
    if args.quick:
        args.n, args.applies, args.burst = 300, 200, 2000
    return args


def start_agent(tmp: Path, ns: str) -> subprocess.Popen[bytes]:
    """Start ``kassist-agent serve`` in the network namespace ``ns`` (a /proc/PID/ns/net
    path) with 1024 open files, its socket and state in ``tmp``."""
    return subprocess.Popen(
        [
            "nsenter",
            f"--net={ns}",
            "prlimit",
            "--nofile=1024:1024",
            sys.executable,
            "-m",
            "actions",
            "serve",
            "--socket",
            str(tmp / "agent.sock"),
            "--state-dir",
            str(tmp / "state"),
            "--policy",
            str(tmp / "policy.toml"),
            "--audit-log",
            str(tmp / "audit.jsonl"),
            "--sysctl-conf",
            str(tmp / "90-kassist.conf"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.DEVNULL,
    )


def wait_for_socket(sock: Path, agent: subprocess.Popen[bytes], ns: str) -> None:
    """Wait until the agent's socket exists (about 10 s at most), in the namespace ``ns``."""
    for _ in range(500):
        if sock.exists():
            break
        time.sleep(0.02)
    time.sleep(0.2)
    assert os.readlink(f"/proc/{agent.pid}/ns/net") == os.readlink(ns)


def timed_calls(
    conn: Conn,
    pid: int,
    entries: list[dict[str, object]],
    good: Callable[[dict[str, object]], bool],
) -> tuple[list[float], float]:
    """Send ``entries`` one at a time; return their latencies (seconds) and the agent's CPU
    seconds per call. Each reply must be ``good``."""
    cpu0 = cpu_seconds(pid)
    latencies = []
    for entry in entries:
        t, reply = conn.call(entry)
        assert good(reply), reply
        latencies.append(t)
    return latencies, (cpu_seconds(pid) - cpu0) / len(entries)


def validate_in_process(policy_path: Path, n: int) -> list[float]:
    """Time ``n`` validations called in-process, in this (host) namespace: reads only."""
    from actions.knobs import Roots
    from actions.model import parse_recommendations
    from actions.policy import load_policy
    from actions.validate import validate

    policy = load_policy(policy_path)
    inproc = []
    for _ in range(n):
        t0 = time.perf_counter()
        recs, _ = parse_recommendations(rec(8192))
        validate(recs, policy, Roots())
        inproc.append(time.perf_counter() - t0)
    return inproc


def pipelined(conn: Conn, pid: int, burst: int, window: int) -> tuple[float, float]:
    """Send ``burst`` validations with ``window`` in flight; return validations per second
    and the agent's CPU seconds for them all."""
    # The client stays out of the way: submissions are pre-encoded and sent a window
    # at a time; completions are checked on the wire (the agent's compact JSON).
    body = json.dumps(rec(8192), separators=(",", ":"))
    template = '{"op":"validate","user_data":%d,"recommendations":' + body + "}\n"
    t0 = time.perf_counter()
    cpu0 = cpu_seconds(pid)
    sent = done = 0
    pending = b""
    while done < burst:
        batch = min(burst - sent, window - (sent - done))
        if batch > 0:
            conn.sock.sendall("".join(template % (sent + i) for i in range(batch)).encode())
            sent += batch
        pending += conn.sock.recv(1 << 20)
        *lines, pending = pending.split(b"\n")
        for reply in lines:
            assert b'"ok":true' in reply, reply[:200]
        done += len(lines)
    return burst / (time.perf_counter() - t0), cpu_seconds(pid) - cpu0


def measure(args: argparse.Namespace, tmp: Path, agent: subprocess.Popen[bytes]) -> None:
    """Time the agent's socket against its baselines and print the figures."""
    conn = Conn(tmp / "agent.sock")
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")

    floor = [conn.call({"op": "history", "user_data": i, "limit": 1})[0] for i in range(args.n)]
    print(line("baseline: history round trip", floor))
    validate_lat, validate_cpu = timed_calls(
        conn,
        agent.pid,
        [{"op": "validate", "user_data": i, "recommendations": rec(8192)} for i in range(args.n)],
        lambda reply: bool(reply["ok"]),
    )
    print(line("validate (socket)", validate_lat) + f"   agent CPU {validate_cpu * 1000:.3f} ms")
    inproc = validate_in_process(tmp / "policy.toml", args.n)
    print(line("baseline: validate in-process", inproc))
    applies, apply_cpu = timed_calls(
        conn,
        agent.pid,
        [
            {"op": "apply", "user_data": i, "recommendations": rec((8192, 4096)[i % 2])}
            for i in range(args.applies)
        ],
        lambda reply: reply["verdict"] == "verified",
    )
    print(
        line("apply + verify, one key (socket)", applies)
        + f"   agent CPU {apply_cpu * 1000:.3f} ms"
    )
    window = 256
    rate, burst_cpu = pipelined(conn, agent.pid, args.burst, window)
    print(
        f"{'validation throughput (pipelined)':<34} n={args.burst:<6} {rate:9.0f} /s   "
        f"({window} in flight; in-process baseline {1 / statistics.fmean(inproc):9.0f} /s)"
    )

    p99_apply = pct(applies, 99)
    print()
    inproc_ms = statistics.fmean(inproc) * 1000
    print(
        f"validate p50 / in-process mean: x{pct(validate_lat, 50) / inproc_ms:.1f}; "
        f"validate p50 / history p50: x{pct(validate_lat, 50) / pct(floor, 50):.2f}"
    )
    print(
        f"target apply+verify p99 <= 5 ms: {p99_apply:.3f} ms "
        f"({'met' if p99_apply <= 5 else 'NOT met'})"
    )
    print(f"target >= 5,000 validations/s: {rate:.0f}/s ({'met' if rate >= 5000 else 'NOT met'})")
    print(
        f"agent CPU per validation in the burst: {burst_cpu / args.burst * 1000:.3f} ms, i.e. "
        f"{args.burst / burst_cpu:.0f} validations per agent CPU-second"
    )
    measure_flood(args, tmp / "agent.sock", conn, p99_apply)


def measure_flood(args: argparse.Namespace, sock: Path, conn: Conn, p99_apply: float) -> None:
    """Time apply + verify during a flood of idle connections and print it."""
    flood_apply, accepted, busy = idle_flood(sock, conn, args.flood, args.applies)
    status = conn.call({"op": "status", "user_data": "after-flood"})[1]["status"]
    assert isinstance(status, dict) and status["overridden"] == [], status
    p99_flood = pct(flood_apply, 99)
    print()
    print(
        f"flood of {args.flood} idle connections (agent RLIMIT_NOFILE 1024): {accepted} "
        f"held open, {busy} refused 'busy' by the caps, {args.flood - accepted - busy} "
        "not accepted within 1 s (listen backlog full)"
    )
    print(line("apply + verify during the flood", flood_apply))
    print(
        f"apply+verify p99 during the flood / before: x{p99_flood / p99_apply:.2f}; "
        f"managed keys lost: {0 if status['managed'] else 1}"
    )
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def main() -> int:
    args = _args()
    if os.geteuid() != 0:
        print("agent_latency: needs root (to create a network namespace)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="kassist-bench-"))
    (tmp / "policy.toml").write_text(POLICY)
    holder = subprocess.Popen(["unshare", "-n", "sleep", "3600"])
    time.sleep(0.1)
    ns = f"/proc/{holder.pid}/ns/net"
    assert os.readlink(ns) != os.readlink("/proc/self/ns/net")
    agent = start_agent(tmp, ns)
    try:
        wait_for_socket(tmp / "agent.sock", agent, ns)
        measure(args, tmp, agent)
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(10)
        holder.kill()
        holder.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
