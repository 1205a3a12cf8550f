"""Validation through the BPF queues against the socket path, in the same run.

Three ways a recommendation is validated, measured side by side (as root, in a private
network namespace, on this run's load):

- **kernel**: the BPF queues alone, in this process: an entry into the submission queue
  (BPF_MAP_TYPE_USER_RINGBUF), ``kassist_validate`` run with BPF_PROG_RUN, the verdict
  read from the completion queue (BPF_MAP_TYPE_RINGBUF). One entry per call, and in
  batches of 64. CPU: this thread's (the program runs in it).
- **in-process**: ``Agent.validate`` called in this process, without and with the
  kernel's check (:class:`KernelCheck`): what the queues add, with no socket and no
  second process to schedule. CPU: this thread's.
- **socket**: the agent's ``validate`` op over its Unix socket, Python validator only
  (the path as it is without ``--bpf-queues``).
- **socket+queues**: the same op on an agent started with ``--bpf-queues``: the Python
  validator and the kernel's. CPU: the agent process's (user + system).

The two agents take turns round by round, so that drifting load hits both alike.
Figures: validations per second, p50 and p99 latency per call, CPU per validation.

    PYTHONPATH=. .venv/bin/python benchmarks/bpf_queues.py [--n 2000] [--rounds 5] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from actions.agent import Agent, Paths
from actions.client import AgentClient
from actions.enforce.capability import ensure_bpffs
from actions.enforce.queues import KernelCheck, Queues, Submission, problems
from actions.enforce.service import compile_policy
from actions.policy import load_policy

REC = {
    "id": "b1", "kind": "sysctl", "target": "net.core.somaxconn", "value": 2048,
    "rationale": "listen queue overflows under load", "evidence": ["ListenOverflows 12"],
    "source": "rules",
}  # fmt: skip


def _ticks(pid: int) -> int:
    # utime + stime of a process, in clock ticks (/proc/<pid>/stat fields 14 and 15)
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _figures(lat: list[float], seconds: float, cpu_s: float, n: int) -> dict[str, float]:
    return {
        "per_s": n / seconds,
        "p50_us": _pct(lat, 0.5) * 1e6 / (n / len(lat)),
        "p99_us": _pct(lat, 0.99) * 1e6 / (n / len(lat)),
        "cpu_us": cpu_s * 1e6 / n,
    }


def kernel_only(pin_root: Path, cache: Path, n: int, batch: int) -> dict[str, float]:
    """Time the queues alone: ``n`` entries, ``batch`` per call."""
    q = Queues(pin_root, cache, per_second=0)
    q.start(compile_policy(load_policy()))
    try:
        subs = [Submission(i, "net/core/somaxconn", "2048", "4096") for i in range(batch)]
        q.validate(subs)  # warm up
        lat = []
        cpu0, t0 = time.thread_time(), time.perf_counter()
        for _ in range(n // batch):
            t = time.perf_counter()
            verdicts = q.validate(subs)
            lat.append(time.perf_counter() - t)
            assert all(v.accepted for v in verdicts)
        seconds, cpu = time.perf_counter() - t0, time.thread_time() - cpu0
    finally:
        q.stop()
    return _figures(lat, seconds, cpu, len(lat) * batch)


@contextlib.contextmanager
def agent(tmp: Path, netns_pid: int, *args: str) -> Iterator[tuple[Path, int]]:
    """Run an agent in the namespace; yield its socket and pid."""
    sock = tmp / "agent.sock"
    cmd = [
        "nsenter", f"--net=/proc/{netns_pid}/ns/net", sys.executable, "-m", "actions", "serve",
        "--socket", str(sock), "--state-dir", str(tmp / "state"), "--audit-log",
        str(tmp / "audit.jsonl"), "--sysctl-conf", str(tmp / "c.conf"), "--group", "", *args,
    ]  # fmt: skip
    log = (tmp / "agent.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "PYTHONPATH": "."})
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "agent.log").read_text())
            time.sleep(0.05)
        yield sock, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()


def in_process(agent: Agent, n: int) -> tuple[list[float], float, float]:
    """Call ``Agent.validate`` ``n`` times in this thread; return latencies, seconds, CPU s."""
    who = {"uid": 0, "gid": 0, "pid": os.getpid(), "user": "root"}
    lat = []
    cpu0, t0 = time.thread_time(), time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        done = agent.validate([REC], who)
        lat.append(time.perf_counter() - t)
        assert done.ok, done
    return lat, time.perf_counter() - t0, time.thread_time() - cpu0


def in_process_sides(tmp: Path, pins: str, cache: Path, n: int, rounds: int) -> dict[str, Any]:
    """The agent's validate in this process, without and with the kernel's check."""
    plain = Agent(load_policy(), Paths(tmp / "p.db", tmp / "p.jsonl", tmp / "p.conf"))
    checked = Agent(load_policy(), Paths(tmp / "q.db", tmp / "q.jsonl", tmp / "q.conf"))
    q = Queues(Path(f"{pins}-i"), cache, per_second=0)
    q.start(compile_policy(checked.policy))
    checked.kernel = KernelCheck(q, checked.roots)
    try:
        return _rounds(n, rounds, {
            "in-process": lambda k: in_process(plain, k),
            "in-process+queues": lambda k: in_process(checked, k),
        })  # fmt: skip
    finally:
        q.stop()
        plain.close()
        checked.close()


def through_socket(sock: Path, pid: int, n: int) -> tuple[list[float], float, float]:
    """Validate one recommendation ``n`` times; return latencies, seconds, agent CPU s."""
    lat = []
    with AgentClient(sock, timeout=30) as client:
        assert client.validate([REC]).ok  # warm up
        cpu0, t0 = _ticks(pid), time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            done = client.validate([REC])
            lat.append(time.perf_counter() - t)
            assert done.ok, done
        seconds = time.perf_counter() - t0
        cpu = (_ticks(pid) - cpu0) / os.sysconf("SC_CLK_TCK")
    return lat, seconds, cpu


def _rounds(
    n: int, rounds: int, sides: dict[str, Callable[[int], tuple[list[float], float, float]]]
) -> dict[str, dict[str, float]]:
    got: dict[str, list[Any]] = {name: [[], 0.0, 0.0] for name in sides}
    for r in range(rounds):
        order = list(sides.items())
        for name, run in order if r % 2 == 0 else order[::-1]:
            lat, seconds, cpu = run(n)
            got[name][0] += lat
            got[name][1] += seconds
            got[name][2] += cpu
    return {
        name: _figures(lat, seconds, cpu, len(lat)) for name, (lat, seconds, cpu) in got.items()
    }


def main() -> int:
    """Measure and print the figures."""
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(1))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="validations per side per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="CI: --n 200 --rounds 2")
    args = ap.parse_args()
    if args.quick:
        args.n, args.rounds = 200, 2
    if os.geteuid() != 0:
        print("kassist: the BPF queues benchmark needs root", file=sys.stderr)
        return 1
    ensure_bpffs()
    missing = problems()
    if missing:
        print(f"kassist: BPF queues cannot run here: {'; '.join(missing)}", file=sys.stderr)
        return 1
    holder = subprocess.Popen(["unshare", "-n", "sleep", "3600"])
    time.sleep(0.2)
    pins = f"/sys/fs/bpf/kassist-bench-queues-{os.getpid()}"
    try:
        with tempfile.TemporaryDirectory(prefix="kassist-bench-q-") as tmp:
            cache = Path(tmp) / "cache"
            cache.mkdir(mode=0o700)
            one = kernel_only(Path(f"{pins}-k"), cache, args.n * args.rounds, 1)
            many = kernel_only(Path(f"{pins}-k"), cache, args.n * args.rounds, 64)
            inside = in_process_sides(Path(tmp), pins, cache, args.n, args.rounds)
            plain, queued = Path(tmp) / "plain", Path(tmp) / "queued"
            plain.mkdir()
            queued.mkdir()
            with (
                agent(plain, holder.pid) as (sock_a, pid_a),
                agent(queued, holder.pid, "--bpf-queues", "--bpf-queue-rate", "0",
                      "--enforce-pin-root", f"{pins}-a", "--enforce-state",
                      str(queued / "e.json")) as (sock_b, pid_b),
            ):  # fmt: skip
                log = (queued / "agent.log").read_text()
                assert "validating in the kernel through BPF queues" in log, log
                sides = _rounds(args.n, args.rounds, {
                    "socket": lambda n: through_socket(sock_a, pid_a, n),
                    "socket+queues": lambda n: through_socket(sock_b, pid_b, n),
                })  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    load = os.getloadavg()[0]
    where = f"{args.rounds} rounds x {args.n}, load {load:.1f} on {os.cpu_count()} CPUs"
    print(f"validation through the BPF queues vs the socket path ({where})")
    print(f"{'path':<34} {'per s':>9} {'p50 us':>8} {'p99 us':>8} {'CPU us':>8}")
    rows = [
        ("kernel: queues alone, 1 per call", one),
        ("kernel: queues alone, 64 per call", many),
        ("in-process: Python validator", inside["in-process"]),
        ("in-process: Python + kernel", inside["in-process+queues"]),
        ("socket: Python validator", sides["socket"]),
        ("socket+queues: Python + kernel", sides["socket+queues"]),
    ]
    for label, f in rows:
        print(f"{label:<34} {f['per_s']:>9.0f} {f['p50_us']:>8.1f} {f['p99_us']:>8.1f} "
              f"{f['cpu_us']:>8.1f}")  # fmt: skip
    for label, a, b in (("in-process", inside["in-process+queues"], inside["in-process"]),
                        ("socket", sides["socket+queues"], sides["socket"])):  # fmt: skip
        latency, cpu = a["p50_us"] / b["p50_us"], a["cpu_us"] / b["cpu_us"]
        print(f"with the kernel's check / without, {label}: p50 {latency:.2f}x, CPU {cpu:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
