"""Cost of in-kernel enforcement: sysctl writes and reads with the guard program vs without.

One worker process, in a private network namespace, alternates between three fresh
cgroups (``kassist-enforce-bench-*``): one plain, one with an empty cgroup-sysctl
program (``return 1``: the cost of the kernel's hook itself, which copies the current
value through the proc handler and the new one into a buffer before any program runs),
and one with the guard program attached (the default policy's rules). In each round
it times N ``pwrite(2)`` calls of an in-policy value to a managed key
(``net.core.somaxconn``), N to an unmanaged key (``net.ipv4.ip_forward``: one map
lookup, then pass) and N ``pread(2)`` calls, in each cgroup; the figures are medians
over rounds of the per-round ratios (the order alternates each round), so drifting
load hits both sides alike, of the worker thread's CPU time (user + system, where a
BPF program's cost lands), so that waiting on a loaded machine is not counted.
Programs attached to ancestor cgroups (others' on this machine) run on both sides.

Then the reload latency: building, filling and swapping in the whole rules map for
the default policy and for a 4000-rule policy (median of R reloads). Most of it is the
swap: since Linux 6.x the kernel waits for an RCU grace period after a map-in-map
update (``maybe_wait_bpf_programs``), so when ``reload()`` returns no program can still
be running with the old rules.

    PYTHONPATH=. .venv/bin/python benchmarks/enforce_overhead.py [--rounds 9] [--n 20000] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.enforce import Enforcer, problems
from actions.enforce.build import clang_command
from actions.enforce.capability import cgroup2_mount, ensure_bpffs
from actions.enforce.maps import compile_rules
from actions.policy import load_policy

WORKER = r"""
import json, os, sys, time
cgroups, rounds, n = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def join(cg):
    with open(os.path.join(cg, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
def per_op(fd, op, value):
    # CPU time of this thread (user + system): what the calls cost, not the waits of
    # a loaded machine; a BPF program runs in the writer's context, so it is counted
    t = time.thread_time_ns()
    for _ in range(n):
        op(fd, value, 0)
    return (time.thread_time_ns() - t) / n
managed = os.open("/proc/sys/net/core/somaxconn", os.O_RDWR)
unmanaged = os.open("/proc/sys/net/ipv4/ip_forward", os.O_RDWR)
out = []
for r in range(rounds):
    row = {}
    order = list(cgroups.items())
    for name, cg in order if r % 2 == 0 else order[::-1]:
        join(cg)
        row[name] = {
            "managed_write": per_op(managed, os.pwrite, b"4096"),
            "unmanaged_write": per_op(unmanaged, os.pwrite, b"0"),
            "read": per_op(managed, lambda fd, size, off: os.pread(fd, size, off), 64),
        }
    out.append(row)
print(json.dumps(out))
"""


EMPTY = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("cgroup/sysctl") int kassist_bench_pass(struct bpf_sysctl *ctx) { return 1; }
char LICENSE[] SEC("license") = "GPL";
"""


def _attach_empty(tmp: Path, cgroup: Path, pin: Path) -> None:
    # A bench-only program, loaded and attached with bpftool (detached in main's finally).
    src, obj = tmp / "pass.bpf.c", tmp / "pass.o"
    src.write_text(EMPTY)
    subprocess.run(clang_command(src, obj), check=True)
    subprocess.run(["bpftool", "prog", "load", str(obj), str(pin), "type", "cgroup/sysctl"],
                   check=True)  # fmt: skip
    subprocess.run(["bpftool", "cgroup", "attach", str(cgroup), "sysctl", "pinned", str(pin),
                    "multi"], check=True)  # fmt: skip


def _detach_empty(cgroup: Path, pin: Path) -> None:
    if pin.exists():
        subprocess.run(["bpftool", "cgroup", "detach", str(cgroup), "sysctl", "pinned", str(pin)],
                       check=False)  # fmt: skip
        pin.unlink()


def _cgroup(mount: Path, tag: str) -> Path:
    path = mount / f"kassist-enforce-bench-{tag}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def _median(rows: list[dict[str, Any]], side: str, op: str) -> float:
    return statistics.median(r[side][op] for r in rows)


def _ratio(rows: list[dict[str, Any]], side: str, op: str) -> float:
    return statistics.median(r[side][op] / r["plain"][op] for r in rows)


def _reload_ms(e: Enforcer, table: list[dict[str, Any]], repeat: int) -> tuple[float, float]:
    # (whole reload, of which compiling the table in Python), median ms
    total, compiling = [], []
    for _ in range(repeat):
        t = time.perf_counter()
        compile_rules(table)
        compiling.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        e.reload(table)
        total.append((time.perf_counter() - t) * 1000)
    return statistics.median(total), statistics.median(compiling)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--n", type=int, default=20000, help="calls per op per round")
    ap.add_argument("--reloads", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="CI: --rounds 3 --n 2000 --reloads 3")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.n, args.reloads = 3, 2000, 3
    return args


def _rmdir(cg: Path) -> None:
    # A cgroup's last task may take a moment to leave it.
    for _ in range(100):
        try:
            cg.rmdir()
            return
        except OSError:
            time.sleep(0.05)


@dataclass
class _Figures:
    rows: list[dict[str, Any]]  # per round: side -> op -> ns per call
    rules: int  # rules of the default policy
    small: tuple[float, float]  # reload of the default policy: (whole, compile) ms
    big: tuple[float, float]  # reload of 4000 rules: (whole, compile) ms


def _measure(mount: Path, args: argparse.Namespace) -> _Figures:
    plain, empty, guarded = (
        _cgroup(mount, "plain"),
        _cgroup(mount, "empty"),
        _cgroup(mount, "guard"),
    )
    empty_pin = Path(f"/sys/fs/bpf/kassist-enforce-bench-pass-{os.getpid()}")
    pin_root = Path(f"/sys/fs/bpf/kassist-enforce-bench-{os.getpid()}")
    table = load_policy().table()
    with tempfile.TemporaryDirectory(prefix="kassist-enforce-bench-") as tmp:
        cache = Path(tmp)
        os.chmod(cache, 0o700)
        e = Enforcer(pin_root, cache, state_file=None)
        try:
            compiled = e.start(table, guard=[guarded])
            _attach_empty(cache, empty, empty_pin)
            cgroups = {"plain": str(plain), "empty": str(empty), "guarded": str(guarded)}
            proc = subprocess.run(
                ["unshare", "-n", sys.executable, "-c", WORKER, json.dumps(cgroups),
                 str(args.rounds), str(args.n)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            small = _reload_ms(e, table, args.reloads)
            big_table = [{"pattern": f"net.kassist.bench{i}", "action": "allow", "type": "int",
                          "min": 0, "max": i} for i in range(4000)]  # fmt: skip
            big = _reload_ms(e, big_table, max(3, args.reloads // 4))
        finally:
            e.stop()
            _detach_empty(empty, empty_pin)
            for cg in (plain, empty, guarded):
                _rmdir(cg)
    return _Figures(json.loads(proc.stdout), len(compiled.rules), small, big)


def _report(args: argparse.Namespace, f: _Figures) -> None:
    rows = f.rows
    print(f"in-kernel enforcement overhead ({args.rounds} rounds x {args.n} calls, same run)")
    print(f"{'ns per call':<32} {'plain':>6} {'empty prog':>11} {'guard':>6} "
          f"{'empty/plain':>12} {'guard/plain':>12} {'guard/empty':>12}")  # fmt: skip
    for op, label in (
        ("managed_write", "write managed key (in policy)"),
        ("unmanaged_write", "write unmanaged key"),
        ("read", "read (program returns at once)"),
    ):
        p, m, g = (_median(rows, side, op) for side in ("plain", "empty", "guarded"))
        vs_empty = statistics.median(r["guarded"][op] / r["empty"][op] for r in rows)
        print(f"{label:<32} {p:>6.0f} {m:>11.0f} {g:>6.0f} {_ratio(rows, 'empty', op):>12.3f} "
              f"{_ratio(rows, 'guarded', op):>12.3f} {vs_empty:>12.3f}")  # fmt: skip
    noise = statistics.median(
        abs(a["plain"]["read"] - b["plain"]["read"]) / a["plain"]["read"]
        for a, b in itertools.pairwise(rows)
    )
    print(f"noise (plain read, round to round): {noise:.1%}")
    for label, (total, comp) in ((f"{f.rules} rules (default policy)", f.small),
                                 ("4000 rules", f.big)):  # fmt: skip
        kernel = total - comp
        print(f"reload, whole map, {label}: {total:.2f} ms "
              f"(compile {comp:.2f} ms; create + fill + swap {kernel:.2f} ms)")  # fmt: skip


def main() -> int:
    """Measure and print the figures."""
    # SIGTERM (a CI timeout) unwinds through the finally below: nothing stays attached
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(1))
    if os.geteuid() == 0:
        mounted = ensure_bpffs()  # as the agent does: mount bpffs where it is missing
        if mounted:
            print(f"kassist: {mounted}", file=sys.stderr)
    args = _args()
    missing = problems()
    mount = cgroup2_mount()
    if missing or mount is None:
        print(f"kassist: enforcement benchmark cannot run: {'; '.join(missing)}", file=sys.stderr)
        return 1
    _report(args, _measure(mount, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
