"""How long a full statistics snapshot takes, against naive baselines measured in the same run.

Prints the median and best of N snapshots (``take_snapshot()`` with /proc/sys and the
kernel config), each section alone, and two baselines doing less work: ``sysctl -a``
(procps, /proc/sys only, printed to /dev/null) and a plain Python walk reading every
/proc/sys file with ``open().read()``. Target: a full snapshot in <= 100 ms.

    PYTHONPATH=. .venv/bin/python benchmarks/stats_snapshot.py [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable

from probes.stats import read_sysctls, take_snapshot
from probes.stats.parse import parse_kconfig
from probes.stats.read import read_block_queues, read_kconfig_text


def _timed(fn: Callable[[], object], runs: int) -> list[float]:
    fn()  # warm the page cache and Python's imports
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _python_walk() -> None:
    for root, _dirs, files in os.walk("/proc/sys"):
        for name in files:
            try:
                with open(os.path.join(root, name)) as fh:
                    fh.read()
            except OSError:
                pass


def _kconfig() -> None:
    found = read_kconfig_text()
    if found is not None:
        parse_kconfig(found[0])


def _sysctl_a() -> None:
    subprocess.run(
        ["sysctl", "-a"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="CI: --runs 3")
    args = parser.parse_args()
    if args.quick:
        args.runs = 3
    cases: list[tuple[str, Callable[[], object]]] = [
        ("full snapshot (take_snapshot)", take_snapshot),
        ("  without /proc/sys, kconfig", lambda: take_snapshot(sysctls=False, kconfig=False)),
        ("  /proc/sys alone (read_sysctls)", read_sysctls),
        ("  kernel config alone (read + parse)", _kconfig),
        ("  /sys/block/*/queue alone", read_block_queues),
        ("baseline: python os.walk of /proc/sys", _python_walk),
    ]
    if shutil.which("sysctl"):
        cases.append(("baseline: sysctl -a > /dev/null", _sysctl_a))
    load = os.getloadavg()
    print(
        f"{args.runs} runs each; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"{os.cpu_count()} CPUs"
    )
    results = {}
    for name, fn in cases:
        times = _timed(fn, args.runs)
        results[name] = statistics.median(times)
        print(f"{name:<40} median {results[name]:7.1f} ms   best {min(times):7.1f} ms")
    full = results["full snapshot (take_snapshot)"]
    walk = results["baseline: python os.walk of /proc/sys"]
    print(f"full snapshot / python walk of /proc/sys: {full / walk:.2f}x")
    if "baseline: sysctl -a > /dev/null" in results:
        print(
            f"full snapshot / sysctl -a: {full / results['baseline: sysctl -a > /dev/null']:.2f}x"
        )
    verdict = "meets" if full <= 100 else "MISSES"
    print(f"target <= 100 ms for a full snapshot: {verdict} ({full:.1f} ms median)")


if __name__ == "__main__":
    main()
