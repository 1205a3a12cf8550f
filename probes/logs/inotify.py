"""Wait for files to appear under a directory: inotify(7) through libc, polling without it.

:class:`DirectoryWatch` watches a directory and each directory directly in it (a kdump
directory and its crash directories). A directory that does not exist yet is waited
for: its nearest existing parent is watched until it appears (``/var/crash`` created by
the first dump after the daemon started).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import select
import time
from pathlib import Path

#: IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE (include/uapi/linux/inotify.h): a file written
#: whole or moved in, a directory made; not IN_MODIFY (a dump being written is no news).
_MASK = 0x00000008 | 0x00000080 | 0x00000100
#: Bytes read from the inotify descriptor at once (events are only counted, not parsed).
_READ_BYTES = 65536
#: Looks at the tree at most until no new directory appeared since the last one.
_SETTLE_ROUNDS = 8


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


class DirectoryWatch:
    """Changes under a directory and its subdirectories, one level deep.

    :param top: the directory (it may not exist yet).
    :param poll_interval: seconds :meth:`wait` sleeps when inotify is not available.
    """

    def __init__(self, top: Path, poll_interval: float = 1.0) -> None:
        self.top = top
        self.poll_interval = poll_interval
        self._libc = _libc()
        self.fd = -1
        if self._libc is not None:
            self.fd = int(self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        self._watched: set[str] = set()
        self.rewatch()

    @property
    def uses_inotify(self) -> bool:
        """Tell whether changes come from inotify (else :meth:`wait` polls)."""
        return self.fd >= 0

    def _targets(self) -> list[Path]:
        if not self.top.is_dir():
            # Wait for it to appear: watch the nearest parent that exists.
            parent = self.top.parent
            while not parent.is_dir() and parent != parent.parent:
                parent = parent.parent
            return [parent]
        dirs = [self.top]
        with contextlib.suppress(OSError):
            dirs += [Path(e.path) for e in os.scandir(self.top) if e.is_dir(follow_symlinks=False)]
        return dirs

    def rewatch(self) -> None:
        """Watch the directory and each directory in it (or the parent it will appear in),
        again until nothing new appeared meanwhile (a directory made between two looks would
        send its events to no watch)."""
        if self.fd < 0 or self._libc is None:
            return
        for _ in range(_SETTLE_ROUNDS):
            added = False
            for d in self._targets():
                if str(d) in self._watched:
                    continue
                wd = self._libc.inotify_add_watch(self.fd, os.fsencode(str(d)), _MASK)
                if wd >= 0:
                    self._watched.add(str(d))
                    added = True
            if not added:
                return

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a change; tell whether one came (always
        ``True`` after a poll interval without inotify)."""
        if self.fd < 0:
            time.sleep(min(timeout, self.poll_interval))
            return True
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, _READ_BYTES):
                pass
        self.rewatch()
        return True

    def close(self) -> None:
        """Close the inotify descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> DirectoryWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
