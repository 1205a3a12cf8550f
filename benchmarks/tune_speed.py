"""How fast ``kassist tune`` turns a snapshot into recommendations, and what watching costs.

1. Snapshot to recommendations, without the model: ``observe()`` (a full snapshot with
   /proc/sys, softnet_stat, neighbour tables, every process's inotify descriptors and the
   kernel log) then ``analyse()`` over the 15 scenarios; median and best of N runs, next
   to the baseline measured in the same run: ``take_snapshot()`` alone (probes' snapshot,
   which tune needs anyway). Also the analysis alone, on a window where scenarios fire.
   Target: <= 200 ms.
2. The CPU cost of ``kassist tune --interval 10`` watching for a minute (``--count 6``):
   the child's user+system CPU time over its wall time, as a share of one core, next to
   the same run's Python start-up (``python -c 'import assistant.cli.tune'``).
   Target: <= 1 % of one core.

    nice -n 10 .venv/bin/python benchmarks/tune_speed.py [--runs N] [--interval S --count N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistant.tuning.engine import analyse  # noqa: E402
from assistant.tuning.evidence import observe  # noqa: E402
from assistant.tuning.scenarios import READ_KEYS  # noqa: E402
from probes.stats import take_snapshot  # noqa: E402


def _timed(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm imports and the page cache
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _row(name: str, ms: list[float], base: float | None = None) -> str:
    med = statistics.median(ms)
    ratio = f"  x{med / base:.2f} of the snapshot" if base else ""
    return f"  {name:<44} median {med:7.1f} ms   best {min(ms):7.1f} ms{ratio}"


def _firing_window() -> object:
    obs = observe(None, sysctls=READ_KEYS, read_log=False)
    obs.counters.update({"netstat.TcpExt.ListenOverflows": 5000.0, "snmp.Udp.RcvbufErrors": 900.0,
                         "netstat.TcpExt.TCPTimeWaitOverflow": 40.0})  # fmt: skip
    obs.softnet = [(100000, 300, 2000)] * (os.cpu_count() or 1)
    return obs


def _child_cpu(argv: list[str]) -> tuple[float, float]:
    # (cpu seconds of the child and its children, wall seconds)
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, _, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime, time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="CI: --runs 3 --interval 2 --count 2")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.interval, args.count = 3, 2.0, 2

    print("snapshot to recommendations (no model):")
    base = _timed(lambda: take_snapshot(kconfig=False), args.runs)
    full = _timed(lambda: analyse(observe(None, sysctls=READ_KEYS)), args.runs)
    obs = _firing_window()
    alone = _timed(lambda: analyse(obs), args.runs)  # type: ignore[arg-type]
    print(_row("baseline: take_snapshot() alone", base))
    print(_row("observe() + analyse(): snapshot to recs", full, statistics.median(base)))
    print(_row("analyse() alone, 3 scenarios firing", alone))
    verdict = "meets" if statistics.median(full) <= 200 else "MISSES"
    print(f"  target <= 200 ms: {verdict}")

    py = [sys.executable, "-m", "assistant", "tune"]
    cpu0, _ = _child_cpu([sys.executable, "-c", "import assistant.cli.tune"])
    cmd = [*py, "--interval", str(args.interval), "--count", str(args.count), "--format", "json"]
    print(f"\nwatching: {' '.join(cmd[2:])} ({args.interval * args.count:g} s)")
    cpu, wall = _child_cpu(cmd)
    print(f"  baseline: python start-up and imports       {cpu0 * 1000:7.0f} ms CPU")
    print(
        f"  tune watching                               {cpu * 1000:7.0f} ms CPU over {wall:.1f} s"
    )
    share = cpu / wall * 100
    print(f"  = {share:.2f} % of one core, x{cpu / max(cpu0, 1e-9):.2f} of the start-up alone; "
          f"target <= 1 %: {'meets' if share <= 1 else 'MISSES'}")  # fmt: skip


if __name__ == "__main__":
    main()
