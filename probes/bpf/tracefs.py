"""tracefs: where the tracepoints' event list lives, and mounting it where it is missing.

bpftrace resolves ``tracepoint:`` probes through tracefs. systemd mounts it on
most machines, but a fresh VM or container may not have it until someone runs
``mount -t tracefs tracefs /sys/kernel/tracing``; as root, :func:`ensure_tracefs`
does that and says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from probes.bpf.decode import TRACEFS_DIRS, tracefs_dir
from probes.errors import ProbeError, ProbeUnavailable

#: Where the kernel expects tracefs (since Linux 4.1; ``/sys/kernel/debug/tracing`` before).
MOUNTPOINT = TRACEFS_DIRS[0]


def say_on_stderr(message: str) -> None:
    """Tell the person running the program, in one line on stderr, what was done."""
    print(f"kassist: {message}", file=sys.stderr, flush=True)


def mount_tracefs(mountpoint: str = MOUNTPOINT) -> str:
    """Mount tracefs at ``mountpoint`` and return it.

    :param mountpoint: an existing, empty directory (sysfs provides ``/sys/kernel/tracing``).
    :raises ProbeUnavailable: not root, or this kernel has no tracefs to mount.
    :raises ProbeError: ``mount`` failed.
    """
    if os.geteuid() != 0:
        raise ProbeUnavailable(
            "tracefs is not mounted", f"as root: mount -t tracefs tracefs {mountpoint}"
        )
    if not os.path.isdir(mountpoint):
        raise ProbeUnavailable(f"no {mountpoint}", "a kernel with CONFIG_TRACING (tracefs)")
    try:
        proc = subprocess.run(
            ["mount", "-t", "tracefs", "tracefs", mountpoint],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeError(
            f"cannot mount tracefs at {mountpoint}: {exc}", "mount it by hand"
        ) from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["mount failed"])[-1]
        raise ProbeError(f"cannot mount tracefs at {mountpoint}: {why}", "mount it by hand")
    return mountpoint


def ensure_tracefs(
    say: Callable[[str], None] | None = say_on_stderr, mountpoint: str = MOUNTPOINT
) -> str | None:
    """Return where tracefs is mounted, mounting it first when it is missing and we are root.

    :param say: told, in one line, when tracefs was mounted (default: a line on stderr).
    :param mountpoint: where to mount it.
    :return: the tracefs directory, or ``None`` when it is missing and cannot be mounted
        (not root, no tracefs in this kernel, or ``mount`` failed).
    """
    found = tracefs_dir()
    if found is not None or os.geteuid() != 0:
        return found
    try:
        mount_tracefs(mountpoint)
    except ProbeError:
        return None
    if say is not None:
        say(f"tracefs was not mounted: mounted it at {mountpoint} (bpftrace's tracepoints need it)")
    return tracefs_dir()
