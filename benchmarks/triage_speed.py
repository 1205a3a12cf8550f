#!/usr/bin/env python3
"""Throughput and memory of ``kassist triage`` on a large log, against grep, plus hostile inputs.

Builds a log of ``--size`` bytes from a real clean boot log (``tests/data/clean-boot.log``)
repeated, with real crash reports (``tests/data/*.log`` and the syzkaller samples)
sprinkled in at one per ``--crash-every`` MiB; then times, in the same run:

- ``grep -c -F -f HEADERS LOG`` over the oops header strings (a lower bound on any scan),
- ``kassist triage --format json LOG`` (the real CLI, in a subprocess): MB/s, peak RSS,
  and how many of the sprinkled crashes it found,
- hostile inputs of ``--hostile-size`` bytes: 1 MiB lines, lines made only of
  pre-filter anchors, millions of near-header
  lines, and a log that is all crash headers: time per MB against the clean log's.

    PYTHONPATH=. .venv/bin/python benchmarks/triage_speed.py [--size 256M|1G] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
MIB = 1 << 20


def parse_size(text: str) -> int:
    """Parse ``256M``, ``1G``, ``4096`` into bytes."""
    units = {"K": 1 << 10, "M": MIB, "G": 1 << 30}
    text = text.strip().upper().rstrip("B").rstrip("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def crash_reports() -> list[str]:
    """Real crash reports: the test logs and the syzkaller samples."""
    reports = [p.read_text() for p in sorted(DATA.glob("*.log")) if p.name != "clean-boot.log"]
    reports = [r for r in reports if "BUG" in r or "WARNING" in r or "INFO:" in r or "fault" in r]
    sample = DATA / "syzkaller-sample.jsonl"
    reports += [json.loads(line)["log"] for line in sample.read_text().splitlines()]
    return [r if r.endswith("\n") else r + "\n" for r in reports]


def build_log(path: Path, size: int, crash_every: int, seed: int = 1) -> int:
    """Write the clean-boot-plus-crashes log; return how many crashes were put in."""
    clean = (DATA / "clean-boot.log").read_text()
    clean = clean if clean.endswith("\n") else clean + "\n"
    reports = crash_reports()
    rng = random.Random(seed)
    written = crashes = 0
    next_crash = crash_every
    with path.open("w") as f:
        while written < size:
            f.write(clean)
            written += len(clean)
            if written >= next_crash:
                report = rng.choice(reports)
                f.write(report)
                written += len(report)
                crashes += 1
                next_crash += crash_every
    return crashes


def build_hostile(path: Path, kind: str, size: int) -> None:
    """Write one hostile input of about ``size`` bytes."""
    rng = random.Random(2)
    with path.open("w") as f:
        written = 0
        if kind == "long-lines":
            line = "[   12.345678] " + "x" * MIB + "\n"
            while written < size:
                f.write(line)
                written += len(line)
        elif kind == "near-headers":
            near = [
                "[   12.345678] BUGS: none found in self-test\n",
                "[   12.345679] WARNING - almost a header\n",
                "[   12.345680] INFO - lockdep is turned off soon\n",
                "[   12.345681] kernel panicking is not happening: ok\n",
                "[   12.345682] usb 1-1: device descriptor read/64, error -71 (fault)\n",
                "[   12.345683] ACPI Error: AE_NOT_FOUND, While resolving a named reference\n",
                "[   12.345684] DEBUG: BUG: just a debug line\n",
                "[   12.345685] INFO: lockdep is turned off.\n",
            ]
            while written < size:
                line = rng.choice(near)
                f.write(line)
                written += len(line)
        elif kind == "anchor-storm":
            # Long lines made of nothing but pre-filter anchors: every few bytes a match.
            line = "[   12.345678] " + "BUG" * 20000 + "\n"
            while written < size:
                f.write(line)
                written += len(line)
        elif kind == "all-headers":
            i = 0
            while written < size:
                stamp = f"[{i // 1000:6d}.{i % 1000:06d}]"
                line = f"{stamp} BUG: KASAN: use-after-free in foo{i % 97}+0x1/0x2\n"
                f.write(line)
                written += len(line)
                i += 1


def run(cmd: list[str], out: Path | None = None) -> tuple[float, str]:
    """Run a command; return its wall time and stdout (or write stdout to ``out``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    if out is None:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        stdout = proc.stdout
    else:
        with out.open("w") as f:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, env=env, check=False)
        stdout = ""
    elapsed = time.monotonic() - t0
    if proc.returncode not in (0, 1):
        sys.exit(f"triage_speed: {cmd[:4]} failed ({proc.returncode}): {proc.stderr!s:.300}")
    return elapsed, stdout


def kassist_triage(log: Path, out: Path) -> tuple[float, float, dict[str, object]]:
    """Triage ``log`` with the real CLI; return wall seconds, peak RSS in MB, and the result."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    elapsed, _ = run(
        [sys.executable, "-m", "assistant", "triage", "--format", "json", str(log)], out
    )
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    rss = max(peak_kb, before) / 1024.0
    return elapsed, rss, json.loads(out.read_text())


def main() -> None:
    """Build the logs, time grep and kassist, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=parse_size("256M"), help="e.g. 256M, 1G")
    ap.add_argument("--crash-every", type=parse_size, default=parse_size("8M"))
    ap.add_argument("--hostile-size", type=parse_size, default=parse_size("32M"))
    ap.add_argument("--keep", type=Path, help="keep the generated logs in this directory")
    ap.add_argument(
        "--quick", action="store_true", help="CI: --size 16M --crash-every 2M --hostile-size 2M"
    )
    args = ap.parse_args()
    if args.quick:
        args.size, args.crash_every, args.hostile_size = (
            parse_size("16M"), parse_size("2M"), parse_size("2M")
        )  # fmt: skip
    sys.path.insert(0, str(ROOT))
    from assistant.triage.rules import OOPSES

    with tempfile.TemporaryDirectory(prefix="kassist-speed-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        headers = work / "headers.txt"
        headers.write_text("".join(sorted({o.header + "\n" for o in OOPSES})))
        log = work / "big.log"
        crashes = build_log(log, args.size, args.crash_every)
        mb = log.stat().st_size / 1e6
        print(f"log: {mb:.0f} MB of clean boots with {crashes} real crash reports; {os.cpu_count()}"
              f" CPUs, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
        grep_s, grep_out = run(["grep", "-c", "-F", "-f", str(headers), str(log)])
        k_s, rss, doc = kassist_triage(log, work / "big.json")
        found = len(doc["crashes"]) if isinstance(doc["crashes"], list) else 0
        grep_rate, k_rate = mb / grep_s, mb / k_s
        print(f"grep -c -F -f headers   {grep_s:7.2f} s  {grep_rate:8.1f} MB/s  "
              f"({grep_out.strip()} header lines)")  # fmt: skip
        print(f"kassist triage          {k_s:7.2f} s  {k_rate:8.1f} MB/s  peak RSS {rss:.0f} MB  "
              f"({found} crashes found, {crashes} put in)")  # fmt: skip
        print(f"throughput ratio        {k_rate / grep_rate:.2f} x grep   (target >= 0.25)")
        print(f"peak RSS                {rss:.0f} MB   (target <= 200)")
        clean_per_mb = k_s / mb
        for kind in ("long-lines", "near-headers", "anchor-storm", "all-headers"):
            path = work / f"{kind}.log"
            build_hostile(path, kind, args.hostile_size)
            hmb = path.stat().st_size / 1e6
            h_s, h_rss, hdoc = kassist_triage(path, work / f"{kind}.json")
            rss = max(rss, h_rss)
            n = len(hdoc["crashes"]) if isinstance(hdoc["crashes"], list) else 0
            ratio = (h_s / hmb) / clean_per_mb
            print(f"hostile {kind:13s}  {hmb:5.0f} MB {h_s:7.2f} s  {hmb / h_s:7.1f} MB/s  "
                  f"time/MB {ratio:5.1f} x clean (target <= 10)  {n} crashes")  # fmt: skip
        print(f"peak RSS, all runs      {rss:.0f} MB   (target <= 200)")


if __name__ == "__main__":
    main()
