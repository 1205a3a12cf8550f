"""bpffs for ``kassist doctor``: where it is mounted, and mounting it where it is missing.

One way to mount it: :func:`actions.enforce.capability.ensure_bpffs` (the agent's own,
as systemd does at boot, under a lock so that two starters never stack two); this
module is the doctor's face of it.
"""

from __future__ import annotations

from pathlib import Path

from actions.enforce.capability import BPFFS, ensure_bpffs, parse_mounts, read_mountinfo


def bpffs_mounts(mountinfo: str | None = None) -> list[Path]:
    """Return where a BPF file system is mounted (empty: nowhere).

    :param mountinfo: ``/proc/self/mountinfo`` text (default: read it).
    """
    return parse_mounts(read_mountinfo() if mountinfo is None else mountinfo, "bpf")


def mount_bpffs(mountpoint: Path = BPFFS) -> Path:
    """Mount a BPF file system at ``/sys/fs/bpf`` when it is missing, and return it.

    :raises ActionError: not root, or the mount failed (one line, with what to do).
    """
    ensure_bpffs(mountpoint)
    return mountpoint
