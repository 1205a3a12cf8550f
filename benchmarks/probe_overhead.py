"""Slowdown of a fixed syscall- and I/O-heavy workload with each eBPF probe attached.

The workload (a child process) makes ~1.6M read/write syscalls through dd, 60k
failing openat calls, 60k stat calls, writes and fsyncs a file with O_DIRECT
block I/O, sends UDP datagrams to a closed loopback port, forks and execs, and
touches 32 MiB of fresh memory. It is timed without probes and with each probe
attached, alternating (baseline, probe, baseline, probe, ...) in one run, so
drifting machine load hits both sides alike. The slowdown of a probe is the median,
over rounds, of (time with the probe / mean of the baselines just before and
after it). CPU time (user + system of the workload, from wait4) is the figure
judged against the 5 % target: a BPF program runs in the context of the task that
hits the tracepoint, so its cost lands in that task's CPU time, while wall time
also moves with whatever else the machine is doing.

    PYTHONPATH=. .venv/bin/python benchmarks/probe_overhead.py [--rounds N] [--probe NAME ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from probes.bpf import list_probes, run_probe, unavailable_reason

TARGET = 1.05

WORKLOAD = r"""
import mmap, os, socket, subprocess, sys
scratch = sys.argv[1]
subprocess.run(["dd", "if=/dev/zero", "of=/dev/null", "bs=512", "count=800000"],
               check=True, stderr=subprocess.DEVNULL)
for i in range(60000):
    try:
        os.open("/nonexistent/kassist-overhead", os.O_RDONLY)
    except FileNotFoundError:
        pass
    os.stat("/proc/self")
fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
block = mmap.mmap(-1, 65536)
for i in range(128):
    os.write(fd, block)
    if i % 16 == 0:
        os.fsync(fd)
os.close(fd)
os.unlink(scratch)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(2000):
    s.sendto(b"x", ("127.0.0.1", 9))
for _ in range(20):
    subprocess.run(["true"], check=True)
m = mmap.mmap(-1, 32 << 20)
for off in range(0, len(m), 4096):
    m[off] = 1
"""


def run_workload() -> tuple[float, float]:
    """Run the workload once; return (wall seconds, CPU seconds of it and its children)."""
    scratch = f"/var/tmp/kassist-overhead-{os.getpid()}"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", WORKLOAD, scratch])
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"workload failed with status {status}")
    # wait4's rusage covers the child and the children it waited for (dd, true).
    return wall, usage.ru_utime + usage.ru_stime


def with_probe(name: str) -> Callable[[], tuple[float, float]]:
    def measure() -> tuple[float, float]:
        box: list[tuple[float, float]] = []
        run_probe(name, 0.0, on_attach=lambda: box.append(run_workload()))
        return box[0]

    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--probe", action="append", help="only these probes (repeatable)")
    args = parser.parse_args()
    specs = [s for s in list_probes() if not args.probe or s.name in args.probe]
    runnable = []
    for spec in specs:
        why = unavailable_reason(spec)
        if why is None:
            runnable.append(spec.name)
        else:
            print(f"{spec.name}: not available: {why}")
    if not runnable:
        raise SystemExit("no probe can run here")
    load = os.getloadavg()
    print(
        f"{args.rounds} rounds; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"{os.cpu_count()} CPUs"
    )
    run_workload()  # warm caches
    wall: dict[str, list[float]] = {n: [] for n in runnable}
    cpu: dict[str, list[float]] = {n: [] for n in runnable}
    base_wall: list[float] = []
    base_cpu: list[float] = []
    for _ in range(args.rounds):
        before = run_workload()
        for name in runnable:
            probed = with_probe(name)()
            after = run_workload()
            wall[name].append(probed[0] / ((before[0] + after[0]) / 2))
            cpu[name].append(probed[1] / ((before[1] + after[1]) / 2))
            base_wall.append(after[0])
            base_cpu.append(after[1])
            before = after
    print(
        f"baseline workload: wall {statistics.median(base_wall):.2f} s, "
        f"CPU {statistics.median(base_cpu):.2f} s (medians)"
    )
    spread = (max(base_cpu) / min(base_cpu) - 1) * 100
    print(f"noise floor: baseline CPU time varied by {spread:.1f} % between its runs")
    print(f"{'probe':<12} {'CPU slowdown':>13} {'wall slowdown':>14}  verdict (target <= 5 % CPU)")
    over = []
    for name in runnable:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        verdict = "ok" if c <= TARGET else "EXCEEDS"
        if c > TARGET:
            over.append(name)
        print(f"{name:<12} {(c - 1) * 100:>+12.1f}% {(w - 1) * 100:>+13.1f}%  {verdict}")
    print("over the 5 % target: " + (", ".join(over) if over else "none"))


if __name__ == "__main__":
    main()
