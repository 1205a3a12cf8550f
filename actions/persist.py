"""Persistence on request: ``/etc/sysctl.d/90-kassist.conf``, rewritten whole each time.

Only sysctl changes persist (sysfs has no standard boot-time file); the header
names the changesets the file holds. When nothing is left to persist the file
is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from actions.model import Change

SYSCTL_CONF = Path("/etc/sysctl.d/90-kassist.conf")


def render_sysctl_conf(changes: Sequence[tuple[int, Change]], now: float | None = None) -> str:
    """Return the file's text for the given ``(changeset id, change)`` pairs.

    A later changeset's value for a key wins.
    """
    latest: dict[str, tuple[int, str]] = {}
    for cs_id, c in changes:
        latest[c.target] = (cs_id, c.new)
    ids = sorted({cs_id for cs_id, _ in latest.values()})
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
    lines = [
        f"{HEADER}; do not edit: roll back with `kassist agent rollback`.",
        f"# Changesets: {', '.join(str(i) for i in ids)}",
        f"# Updated: {stamp}",
    ]
    lines += [f"{key} = {value}" for key, (_, value) in sorted(latest.items())]
    return "\n".join(lines) + "\n"


HEADER = "# Written by the kassist agent"


def _ours(path: Path) -> bool:
    # Absent, or a regular file that starts with the agent's header (never a symlink).
    try:
        if path.is_symlink() or not path.is_file():
            return not path.exists() and not path.is_symlink()
        with path.open("rb") as fh:
            return fh.read(len(HEADER)).decode("ascii", "replace") == HEADER
    except OSError:
        return False


def persisted_keys(path: Path) -> dict[str, str]:
    """Return the ``key = value`` lines of the file (empty when it is absent or unreadable)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key.strip()] = value.strip()
    return out


def write_sysctl_conf(path: Path, changes: Sequence[tuple[int, Change]]) -> bool:
    """Rewrite ``path`` atomically, or remove it when there is nothing to persist.

    A file there that the agent did not write (no header: an operator's own) is never
    replaced nor removed.

    :return: whether the file now exists.
    :raises OSError: the directory is not writable, or the file is not the agent's
        (``EEXIST``).
    """
    if not _ours(path):
        raise FileExistsError(
            errno.EEXIST, "not written by kassist (no header); refusing to replace it", str(path)
        )
    if not changes:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp: O_EXCL and a fresh name, so a planted symlink is never written through.
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o644)  # sysctl.d files are world-readable, as systemd-sysctl expects
        with os.fdopen(fd, "w") as fh:
            fh.write(render_sysctl_conf(changes))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise
    return True
