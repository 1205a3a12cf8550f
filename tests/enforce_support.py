"""Helpers for the in-kernel enforcement tests: test cgroups, writers inside them, bpftool.

Everything created is named ``kassist-enforce-*``: child cgroups of the cgroup2 mount and
the bpffs pin root ``/sys/fs/bpf/kassist-enforce-test-<pid>``. Writers run in a private
network namespace (``unshare -n``, or ``nsenter`` into a :class:`tests.agent_support.NetNS`)
so their ``net.*`` writes touch nothing of the host; they write with one ``write(2)`` per
value (Python's buffered file writes retry at close, which the kernel would see twice).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.conftest import ROOT, require

#: A writer: join the cgroup argv[1], then run the ops in argv[2] (JSON) and print results.
WRITER = r"""
import json, os, sys
open(os.path.join(sys.argv[1], "cgroup.procs"), "w").write(str(os.getpid()))
out = {"pid": os.getpid(), "results": []}
for op, key, value in json.loads(sys.argv[2]):
    path = "/proc/sys/" + key.replace(".", "/")
    res = {"op": op, "key": key, "value": value}
    try:
        if op == "write":
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        res["read"] = " ".join(open(path).read().split())
        res["errno"] = 0
    except OSError as exc:
        res["errno"] = exc.errno
    out["results"].append(res)
print(json.dumps(out))
"""


def require_enforcement() -> None:
    """Require root, unshare, bpftool, and everything the enforcer itself needs."""
    require(os.geteuid() == 0, "needs root to load BPF programs")
    require(shutil.which("unshare") is not None, "needs unshare (util-linux)")
    require(shutil.which("bpftool") is not None, "needs bpftool (Debian: bpftool)")
    from actions.enforce import problems

    missing = problems()
    require(not missing, "; ".join(missing))


def cgroup2_mount() -> Path:
    """The cgroup v2 mount (asserted by :func:`require_enforcement`)."""
    from actions.enforce.capability import cgroup2_mount as mount

    found = mount()
    assert found is not None
    return found


def make_cgroup(tag: str) -> Path:
    """Create a child cgroup named ``kassist-enforce-<tag>-<random>``."""
    path = cgroup2_mount() / f"kassist-enforce-{tag}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def remove_cgroup(path: Path) -> None:
    """Remove a test cgroup once its (exited) writers are gone."""
    deadline = time.monotonic() + 5
    while path.exists():
        try:
            path.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_writer(
    cgroup: Path, ops: Sequence[tuple[str, str, str]], netns: str | None = None
) -> dict[str, Any]:
    """Run a writer in ``cgroup`` and a private network namespace; return its results.

    :param netns: a namespace path to enter (``/proc/PID/ns/net``); default a fresh one.
    """
    prefix = ["nsenter", f"--net={netns}"] if netns else ["unshare", "-n"]
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", WRITER, str(cgroup), json.dumps(list(ops))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def by_key_value(doc: dict[str, Any]) -> dict[tuple[str, str], int]:
    """Map each write of a writer's results to its errno (0: it applied)."""
    return {(r["key"], r["value"]): r["errno"] for r in doc["results"] if r["op"] == "write"}


def bpftool_exists(kind: str, obj_id: int) -> bool:
    """Tell whether the kernel still has a program, map or link with this id."""
    proc = subprocess.run(
        ["bpftool", kind, "show", "id", str(obj_id)], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0


def cgroup_programs(cgroup: Path) -> list[dict[str, Any]]:
    """Return ``bpftool cgroup show`` for one cgroup (programs attached to it)."""
    proc = subprocess.run(
        ["bpftool", "-j", "cgroup", "show", str(cgroup)], capture_output=True, text=True, check=True
    )
    doc: list[dict[str, Any]] = json.loads(proc.stdout.strip() or "[]")
    return doc


def all_gone(kind: str, ids: Sequence[int], timeout: float = 10.0) -> bool:
    """Wait until the kernel has freed every object of ``kind`` in ``ids``.

    The kernel frees maps and programs from deferred work after the last reference
    goes (an RCU grace period later), so a check right after close may still see them.
    """
    deadline = time.monotonic() + timeout
    while any(bpftool_exists(kind, i) for i in ids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def remove_pins(pin_root: Path) -> None:
    """Detach and unpin whatever a failed test left under its own pin root (ours only)."""
    if not pin_root.exists():
        return
    from actions.enforce.enforcer import detach_run

    for run in pin_root.iterdir():
        detach_run(run)
    pin_root.rmdir()
