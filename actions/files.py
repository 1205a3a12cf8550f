"""The agent's own files, opened safely: mode 0600, never through a symlink, ours only.

The agent runs as root and writes where an operator points it (``--state-dir``,
``--audit-log``): a symlink planted there, or a file someone else owns, must not
turn its writes into someone else's.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from actions.errors import ActionError


def _owner_ok(uid: int) -> bool:
    return uid in (0, os.geteuid())


def private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) if missing; refuse a symlink or a directory not ours.

    :raises ActionError: the directory is a symlink, not a directory, or owned by another user.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise ActionError(
            f"{path} is a symlink: refusing to follow it", "point at a real directory"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise ActionError(f"{path} is not a directory", "point at a directory")
    if not _owner_ok(st.st_uid):
        raise ActionError(f"{path} belongs to uid {st.st_uid}", "use a directory root owns")


def open_private(path: Path, flags: int) -> int:
    """Open (creating, mode 0600) one of the agent's files without following a symlink.

    An existing file must be a regular file owned by root or the agent's user; one with
    a wider mode is narrowed to 0600.

    :param flags: ``os.O_*`` access flags (``O_CREAT``, ``O_NOFOLLOW`` and ``O_CLOEXEC``
        are added).
    :return: the file descriptor.
    :raises ActionError: a symlink, not a regular file, or someone else's file.
    """
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ActionError(
                f"{path} is a symlink: refusing to follow it",
                "remove it; the agent creates its own",
            ) from None
        raise
    st = os.fstat(fd)
    why = ""
    if not stat.S_ISREG(st.st_mode):
        why = "is not a regular file"
    elif not _owner_ok(st.st_uid):
        why = f"belongs to uid {st.st_uid}"
    if why:
        os.close(fd)
        raise ActionError(
            f"{path} {why}: refusing to use it", "remove it; the agent creates its own"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.fchmod(fd, 0o600)
    return fd


def no_symlink(path: Path) -> None:
    """Refuse ``path`` when it is a symlink (files a library creates beside ours: ``-wal``).

    :raises ActionError: it is a symlink.
    """
    if path.is_symlink():
        raise ActionError(f"{path} is a symlink: refusing to follow it", "remove it")


#: Bytes held back beside the journal and beside the audit log: the records of one
#: operation (an apply of a few keys adds ~60 KiB of WAL frames and ~2 KiB of audit lines).
RESERVE = 256 << 10


#: What posix_fallocate(3) says where it cannot allocate at all (not a full disk).
_NO_FALLOCATE = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM, errno.EINVAL})


def is_full(exc: OSError) -> bool:
    """Tell whether an error says the file system is full (``ENOSPC``, or ``EDQUOT``)."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Reserve:
    """Space held back on a file system, so that an operation under way can finish its records.

    A preallocated file beside the journal or the audit log (the "ballast" of database
    servers). Before the agent writes the kernel it makes sure the reserve is whole
    (:meth:`ensure`); when a record then meets a full file system, the reserve is given
    up (:meth:`release`) and the record written in the space it held, so the operation
    ends with every record, and the next one is refused until the space is back.

    :param path: the reserve file (mode 0600, never through a symlink).
    :param size: bytes held back (0: no reserve).
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        self._fd: int | None = None
        self.held = 0  # bytes known to be allocated now

    def ensure(self) -> bool:
        """Allocate the reserve whole if it is not; return whether it is.

        :raises OSError: an error other than a full file system.
        """
        if self.size <= 0 or self.held >= self.size:
            return True
        try:
            if self._fd is None:
                self._fd = open_private(self.path, os.O_RDWR)
            os.posix_fallocate(self._fd, 0, self.size)
        except OSError as exc:
            if exc.errno in _NO_FALLOCATE:
                # A file system or a sandbox without fallocate: no reserve, and an
                # operation that meets a full disk is undone instead (see actions.agent).
                self.size = 0
                return True
            if not is_full(exc):
                raise
            return False
        self.held = self.size
        return True

    def release(self) -> bool:
        """Give the reserve's space back to the file system; return whether it held any."""
        if self._fd is None or (self.held <= 0 and os.fstat(self._fd).st_size == 0):
            return False
        os.ftruncate(self._fd, 0)
        self.held = 0
        return True

    def close(self) -> None:
        """Close the reserve file (it stays on disk, still held)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
