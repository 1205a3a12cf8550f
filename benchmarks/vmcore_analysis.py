"""Benchmark: kassist's full vmcore analysis against drgn's own CLI, in one run.

    PYTHONPATH=. .venv/bin/python benchmarks/vmcore_analysis.py [--runs N]

On the cached vmcore fixture (tests/fixtures/vmcore/build.sh), each run starts
a fresh process and measures wall time and peak RSS (ru_maxrss from wait4):

- kassist: open the vmcore, load debug info from the fixture's debug dir, and run
  every analysis (crash, stack with locals, printk, D-state tasks with stacks,
  run queues, memory and slab caches, modules, sysctls), then JSON-encode it;
- drgn CLI: ``drgn -c VMCORE --debug-directory DIR -e SCRIPT`` where the script
  prints the crashed stack with locals and the dmesg: the baseline.

Target: kassist's median time <= 2x drgn's. Prints the figures and the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.vmcore_fixture import find_or_build  # noqa: E402

KASSIST = """
import json, sys
from probes.drgn import DebugSources, analyse, open_vmcore
target = open_vmcore(sys.argv[1], DebugSources(debug_dir=sys.argv[2]))
analysis = analyse(target)
json.dumps(analysis.to_dict())
print(len(analysis.stack.frames), len(analysis.dmesg), file=sys.stderr)
"""

DRGN_SCRIPT = """
from drgn.helpers.linux.printk import print_dmesg
trace = prog.crashed_thread().stack_trace()
for frame in trace:
    print(frame)
    for name in frame.locals():
        print("   ", name, "=", frame[name].format_(dereference=False))
print_dmesg(prog)
"""


def _run(argv: list[str]) -> tuple[float, int]:
    # Wall seconds and peak RSS in KiB of one child process.
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed:\n{stderr[-2000:]}")
    return elapsed, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each (median reported)")
    parser.add_argument("--quick", action="store_true", help="CI: one run of each, no warm-up")
    args = parser.parse_args()
    if args.quick:
        args.runs = 1
    fx = find_or_build()
    python = sys.executable
    drgn = str(Path(python).with_name("drgn"))
    commands = {
        "kassist (all analyses)": [python, "-c", KASSIST, str(fx.vmcore), str(fx.debug_dir)],
        "drgn CLI (stack+dmesg)": [
            drgn,
            "-q",
            "--architecture",
            "x86_64",
            "-c",
            str(fx.vmcore),
            "--debug-directory",
            str(fx.debug_dir),
            "--log-level",
            "error",
            "-e",
            DRGN_SCRIPT,
        ],
    }
    print(f"vmcore {fx.vmcore} ({fx.vmcore.stat().st_size >> 20} MiB), kernel {fx.abi}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    results: dict[str, tuple[float, int]] = {}
    for name, argv in commands.items():
        if not args.quick:
            _run(argv)  # warm the page cache
        runs = [_run(argv) for _ in range(args.runs)]
        t = statistics.median(r[0] for r in runs)
        rss = max(r[1] for r in runs)
        results[name] = (t, rss)
        spread = ", ".join(f"{r[0]:.2f}" for r in runs)
        print(f"{name:<24} median {t:6.2f} s  (runs: {spread})  peak RSS {rss / 1024:7.1f} MiB")
    (kt, krss), (dt, drss) = results.values()
    print(f"ratio kassist/drgn: time {kt / dt:.2f}x (target <= 2x), peak RSS {krss / drss:.2f}x")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
