"""Resident memory of the chat with each model loaded, against no model, in one run.

Each row runs the chat's session (``kassist ask``, the chat without its UI: the same
ChatSession, backend and knowledge base) in a fresh process on one conceptual question,
and reads that process's peak resident set size from the kernel (``wait4``'s
``ru_maxrss``). The baseline is the same question with ``--backend none``; the model's
cost is the difference. The TUI adds textual on top (``benchmarks/chat_latency.py``
starts the real ``kassist chat``).

    nice .venv/bin/python benchmarks/model_memory.py          # every installed model
    .venv/bin/python benchmarks/model_memory.py --quick       # the default model only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.llm.models import CATALOGUE, DEFAULT_MODEL, cached_path

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "what does vm.swappiness control?"


def peak_rss(args: list[str]) -> tuple[int, float, int]:
    """Run ``kassist ARGS``; return its peak RSS in KiB, its wall time in s, its status."""
    env = {**os.environ, "XDG_STATE_HOME": tempfile.mkdtemp(prefix="kassist-bench-")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss, time.perf_counter() - t0, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the default model only (CI)")
    args = ap.parse_args()
    names = [DEFAULT_MODEL] if args.quick else list(CATALOGUE)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    base, took, code = peak_rss(["ask", "--no-history", "--backend", "none", QUESTION])
    label = "no model (--backend none)"
    print(f"{label:<28} {base / 1024:7.1f} MiB peak RSS  ({took:.1f} s, exit {code})")
    for name in names:
        path = cached_path(CATALOGUE[name])
        if path is None:
            print(f"{name:<28} not installed")
            continue
        rss, took, code = peak_rss(["ask", "--no-history", "--model", name, QUESTION])
        size = path.stat().st_size / 2**20
        print(
            f"{name:<28} {rss / 1024:7.1f} MiB peak RSS, +{(rss - base) / 1024:.1f} MiB over no "
            f"model (GGUF {size:.0f} MiB; {took:.1f} s, exit {code})"
        )


if __name__ == "__main__":
    main()
