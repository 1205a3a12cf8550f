"""bpffs: the file system the agent pins its BPF links and maps to, mounted where it is missing.

systemd mounts the BPF file system at ``/sys/fs/bpf`` on most machines, but a
fresh VM or container may not have it until someone runs ``mount -t bpf bpf
/sys/fs/bpf``. As root, :func:`mount_bpffs` does that; its callers (``setup.sh``
has its own line, ``kassist doctor --fix``, the agent when enforcement is asked
for) say so in one line.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from actions.enforce.capability import BPFFS, parse_mounts
from actions.errors import ActionError


def bpffs_mounts(mountinfo: str | None = None) -> list[Path]:
    """Return where a BPF file system is mounted (empty: nowhere).

    :param mountinfo: ``/proc/self/mountinfo`` text (default: read it).
    """
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            mountinfo = ""
    return parse_mounts(mountinfo, "bpf")


def mount_bpffs(mountpoint: Path = BPFFS) -> Path:
    """Mount a BPF file system at ``mountpoint`` and return it.

    :param mountpoint: an existing directory (sysfs provides ``/sys/fs/bpf``).
    :raises ActionError: not root, no such directory, or ``mount`` failed.
    """
    command = f"mount -t bpf bpf {mountpoint}"
    if os.geteuid() != 0:
        raise ActionError("bpffs is not mounted", f"as root: {command}")
    if not mountpoint.is_dir():
        raise ActionError(f"no {mountpoint}", "a kernel with CONFIG_BPF_SYSCALL (bpffs)")
    try:
        proc = subprocess.run(
            ["mount", "-t", "bpf", "bpf", str(mountpoint)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ActionError(f"cannot mount bpffs at {mountpoint}: {exc}", command) from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["mount failed"])[-1]
        raise ActionError(f"cannot mount bpffs at {mountpoint}: {why}", command)
    return mountpoint
