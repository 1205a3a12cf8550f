"""tracefs and bpffs mounted where missing: by the probe runner, `kassist doctor --fix`, setup.sh.

Each test runs in a private mount namespace (``unshare --mount``) whose copies of
tracefs and bpffs are unmounted first, so the machine's own, which other tests and
people use at the same time, are never touched.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT, require

NOBODY = (
    "env HOME=/nonexistent XDG_CONFIG_HOME=/nonexistent XDG_STATE_HOME=/nonexistent"
    " setpriv --reuid=65534 --regid=65534 --clear-groups"
)
KASSIST = f"{shlex.quote(sys.executable)} -m assistant"
# Unmount every tracefs and bpffs in the namespace (they may be stacked), then prove it.
UNMOUNT = (
    "while umount /sys/kernel/tracing 2>/dev/null; do :; done; "
    "umount /sys/kernel/debug 2>/dev/null; "
    "while umount /sys/fs/bpf 2>/dev/null; do :; done; "
    "if grep -q ' tracefs ' /proc/self/mounts; then echo 'tracefs still mounted' >&2; exit 99; fi; "
    "if grep -q ' bpf ' /proc/self/mounts; then echo 'bpffs still mounted' >&2; exit 99; fi; "
)
# Where each file system is mounted afterwards: the last two lines of stdout, in this order.
AFTER = (
    "; rc=$?; grep -c ' /sys/kernel/tracing tracefs ' /proc/self/mounts;"
    " grep -c ' /sys/fs/bpf bpf ' /proc/self/mounts; exit $rc"
)
FILE_SYSTEMS = ("tracefs", "bpffs")
#: What `doctor --fix` says it did for bpffs (the agent's own helper's words).
BPFFS_MOUNTED = (
    "mounted the BPF file system at /sys/fs/bpf (it was missing; as systemd does at boot)"
)


def _in_namespace(script: str) -> subprocess.CompletedProcess[str]:
    require(os.geteuid() == 0, "needs root (a private mount namespace, mounting tracefs)")
    require(shutil.which("unshare") is not None, "needs unshare (util-linux)")
    require(os.path.isdir("/sys/kernel/tracing"), "this kernel has no tracefs")
    require(os.path.isdir("/sys/fs/bpf"), "this kernel has no bpffs")
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", UNMOUNT + script + AFTER],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 99, proc.stderr
    return proc


def _mounted_after(proc: subprocess.CompletedProcess[str], fs: str = "tracefs") -> bool:
    counts = proc.stdout.strip().splitlines()[-2:]
    return counts[FILE_SYSTEMS.index(fs)] != "0"


def _json_before_counts(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    before: dict[str, Any] = json.loads("\n".join(proc.stdout.strip().splitlines()[:-2]))
    return before


def test_doctor_fix_mounts_tracefs_and_bpffs_and_says_so_in_one_line_each() -> None:
    proc = _in_namespace(f"{KASSIST} doctor --fix --backend none --format json")
    assert proc.returncode == 0, proc.stderr
    fixed = {"tracefs": "mounted tracefs at /sys/kernel/tracing", "bpffs": BPFFS_MOUNTED}
    for fs, detail in fixed.items():
        (line,) = [ln for ln in proc.stderr.splitlines() if f"fixed {fs}" in ln]
        assert line == f"kassist: fixed {fs}: {detail}"
        assert _mounted_after(proc, fs)
    data = _json_before_counts(proc)
    checks = {c["name"]: c for c in data["checks"]}
    assert checks["tracefs"]["status"] == "ok"  # checked again after the fix
    assert checks["bpffs"]["status"] == "ok"
    assert checks["bpffs"]["detail"] == "mounted at /sys/fs/bpf"
    assert data["fixes"] == [
        {"name": "tracefs", "done": True, "detail": "mounted tracefs at /sys/kernel/tracing"},
        {"name": "bpffs", "done": True, "detail": BPFFS_MOUNTED},
    ]


def test_doctor_without_fix_reports_bpffs_missing_with_the_command() -> None:
    proc = _in_namespace(f"{KASSIST} doctor --backend none --format json")
    assert proc.returncode == 0, proc.stderr
    bpffs = next(c for c in _json_before_counts(proc)["checks"] if c["name"] == "bpffs")
    assert bpffs["status"] == "missing"
    assert "kassist doctor --fix" in bpffs["hint"]
    assert "mount -t bpf bpf /sys/fs/bpf" in bpffs["hint"]
    assert not _mounted_after(proc, "bpffs")


def test_doctor_fix_as_a_user_says_what_to_do() -> None:
    require(shutil.which("setpriv") is not None, "needs setpriv")
    proc = _in_namespace(f"{NOBODY} {KASSIST} doctor --fix --backend none")
    assert proc.returncode == 1
    (line,) = [ln for ln in proc.stderr.splitlines() if "tracefs" in ln]
    assert line.startswith("kassist: cannot fix tracefs: tracefs is not mounted: as root:")
    (line,) = [ln for ln in proc.stderr.splitlines() if "fix bpffs" in ln]
    assert line == (
        "kassist: cannot fix bpffs: no BPF file system to pin to at /sys/fs/bpf"
        " (mount -t bpf bpf /sys/fs/bpf): run as root, or mount it first"
    )
    assert "Traceback" not in proc.stderr
    assert not _mounted_after(proc, "tracefs")
    assert not _mounted_after(proc, "bpffs")


def test_probe_run_mounts_tracefs_first() -> None:
    require(shutil.which("bpftrace") is not None, "needs bpftrace")
    proc = _in_namespace(f"{KASSIST} probe run oomkill --duration 1 --format json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("tracefs") == 1
    assert (
        "kassist: tracefs was not mounted: mounted it at /sys/kernel/tracing"
        " (bpftrace's tracepoints need it)"
    ) in proc.stderr
    assert _mounted_after(proc)


@pytest.mark.parametrize(
    ("fs", "line"),
    [
        ("tracefs", "setup: tracefs was not mounted: mounted it at /sys/kernel/tracing"),
        ("bpffs", "setup: bpffs was not mounted: mounted it at /sys/fs/bpf"),
    ],
)
def test_setup_sh_mounts_it(fs: str, line: str) -> None:
    text = (ROOT / "setup.sh").read_text()
    function = text[text.index(f"mount_{fs}() {{") :]
    function = function[: function.index("\n}\n") + 3]
    script = f"say() {{ printf 'setup: %s\\n' \"$*\" >&2; }}\n{function}\nmount_{fs}"
    proc = _in_namespace(f"bash -c {shlex.quote(script)}")
    assert proc.returncode == 0, proc.stderr
    (said,) = proc.stderr.splitlines()
    assert said.startswith(line)
    assert _mounted_after(proc, fs)
    assert not _mounted_after(proc, next(other for other in FILE_SYSTEMS if other != fs))
