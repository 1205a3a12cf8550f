"""inotify instances and watches per user, counted over every process's open files.

The kernel's limits (``fs.inotify.max_user_watches``, ``max_user_instances``) are
per user; what a user holds is found by walking ``/proc/<pid>/fd`` for
``anon_inode:inotify`` links and counting the ``inotify wd:`` lines of their fdinfo.
"""

from __future__ import annotations

import os
from pathlib import Path

from probes.stats.read import read_text

#: What readlink(2) of an inotify instance's descriptor shows (fs/notify/inotify).
INOTIFY_LINK = "anon_inode:inotify"


def parse_fdinfo_watches(text: str) -> int:
    """Count the watches of one inotify file descriptor (``inotify wd:`` lines of its fdinfo).

    >>> parse_fdinfo_watches("pos:\\t0\\ninotify wd:1 ino:2 sdev:3 mask:4\\n")
    1
    """
    return sum(1 for line in text.splitlines() if line.startswith("inotify wd:"))


def read_inotify_usage(proc: Path = Path("/proc")) -> dict[int, tuple[int, int]]:
    """Count inotify instances and watches per user, over every process's open files.

    :param proc: the procfs mount.
    :return: uid → (instances, watches). Processes that vanish or hide are skipped.
    """
    usage: dict[int, list[int]] = {}
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            uid = pid_dir.stat().st_uid
            fds = os.listdir(pid_dir / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(pid_dir / "fd" / fd) != INOTIFY_LINK:
                    continue
            except OSError:
                continue
            text = read_text(str(pid_dir / "fdinfo" / fd)) or ""
            counts = usage.setdefault(uid, [0, 0])
            counts[0] += 1
            counts[1] += parse_fdinfo_watches(text)
    return {uid: (c[0], c[1]) for uid, c in usage.items()}
