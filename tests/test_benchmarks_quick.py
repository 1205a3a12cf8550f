"""Every benchmark runs in its quick mode and prints its figures, so none rots unseen.

Each script under ``benchmarks/`` is picked up by its file name (a new one is tested
without touching this file) and run as ``python benchmarks/NAME.py --quick`` from the
checkout. The figures themselves are the benchmark's to judge, not this test's: it
asserts that the script accepted ``--quick``, exited 0 and printed figures. The few
that need root (namespaces, /dev/kmsg, BPF, loop devices) run as root, as CI does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, require

BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))
#: The benchmarks that need root; every other one runs as any user.
ROOT_ONLY = {
    "agent_latency",
    "bpf_queues",
    "disks_detect",
    "enforce_overhead",
    "probe_overhead",
    "watch_speed",
}
#: A hang guard, not a speed bound: a quick run takes well under a minute.
HANG_S = 600


def test_every_benchmark_is_found() -> None:
    assert len(BENCHMARKS) >= 18
    assert {p.stem for p in BENCHMARKS} >= ROOT_ONLY


@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("script", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_benchmark_quick_mode_prints_its_figures(script: Path, tmp_path: Path) -> None:
    if script.stem in ROOT_ONLY:
        require(os.geteuid() == 0, f"benchmarks/{script.name} needs root")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        # the LLM log, chat history and crash stores of a run go to a temporary directory
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
    }
    proc = subprocess.run(
        [sys.executable, str(script), "--quick"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )
    assert proc.returncode == 0, f"{script.name} --quick: {proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    figures = [line for line in proc.stdout.splitlines() if re.search(r"\d", line)]
    assert len(figures) >= 2, proc.stdout
