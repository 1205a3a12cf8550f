"""tracefs mounted where it is missing: by the probe runner, `kassist doctor --fix` and setup.sh.

Each test runs in a private mount namespace (``unshare --mount``) whose copy of
tracefs is unmounted first, so the machine's own tracefs, which other tests and
people use at the same time, is never touched.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

from tests.conftest import ROOT, require

NOBODY = (
    "env HOME=/nonexistent XDG_CONFIG_HOME=/nonexistent XDG_STATE_HOME=/nonexistent"
    " setpriv --reuid=65534 --regid=65534 --clear-groups"
)
KASSIST = f"{shlex.quote(sys.executable)} -m assistant"
# Unmount every tracefs in the namespace (it may be stacked), then prove it is gone.
UNMOUNT = (
    "while umount /sys/kernel/tracing 2>/dev/null; do :; done; "
    "umount /sys/kernel/debug 2>/dev/null; "
    "if grep -q ' tracefs ' /proc/self/mounts; then echo 'tracefs still mounted' >&2; exit 99; fi; "
)
AFTER = "; rc=$?; grep -c ' /sys/kernel/tracing tracefs ' /proc/self/mounts; exit $rc"


def _in_namespace(script: str) -> subprocess.CompletedProcess[str]:
    require(os.geteuid() == 0, "needs root (a private mount namespace, mounting tracefs)")
    require(shutil.which("unshare") is not None, "needs unshare (util-linux)")
    require(os.path.isdir("/sys/kernel/tracing"), "this kernel has no tracefs")
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


def _mounted_after(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.stdout.strip().splitlines()[-1] != "0"


def test_doctor_fix_mounts_tracefs_and_says_so_in_one_line() -> None:
    proc = _in_namespace(f"{KASSIST} doctor --fix --backend none --format json")
    assert proc.returncode == 0, proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if "tracefs" in ln]
    assert line == "kassist: fixed tracefs: mounted tracefs at /sys/kernel/tracing"
    data = json.loads("\n".join(proc.stdout.strip().splitlines()[:-1]))
    tracefs = next(c for c in data["checks"] if c["name"] == "tracefs")
    assert tracefs["status"] == "ok"  # checked again after the fix
    assert data["fixes"] == [
        {"name": "tracefs", "done": True, "detail": "mounted tracefs at /sys/kernel/tracing"}
    ]
    assert _mounted_after(proc)


def test_doctor_fix_as_a_user_says_what_to_do() -> None:
    require(shutil.which("setpriv") is not None, "needs setpriv")
    proc = _in_namespace(f"{NOBODY} {KASSIST} doctor --fix --backend none")
    assert proc.returncode == 1
    (line,) = [ln for ln in proc.stderr.splitlines() if "tracefs" in ln]
    assert line.startswith("kassist: cannot fix tracefs: tracefs is not mounted: as root:")
    assert "Traceback" not in proc.stderr
    assert not _mounted_after(proc)


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


def test_setup_sh_mounts_tracefs() -> None:
    text = (ROOT / "setup.sh").read_text()
    function = text[text.index("mount_tracefs() {") :]
    function = function[: function.index("\n}\n") + 3]
    script = f"say() {{ printf 'setup: %s\\n' \"$*\" >&2; }}\n{function}\nmount_tracefs"
    proc = _in_namespace(f"bash -c {shlex.quote(script)}")
    assert proc.returncode == 0, proc.stderr
    assert "setup: tracefs was not mounted: mounted it at /sys/kernel/tracing" in proc.stderr
    assert _mounted_after(proc)
