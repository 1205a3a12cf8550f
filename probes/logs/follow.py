"""Follow a log as it grows, the way ``tail -F`` does: files, FIFOs, devices and stdin.

Serial consoles are captured by conserver, ``ipmitool sol`` or ``script`` into a file
that grows for ever and is rotated now and then; a pipe (``... | kassist watch --source
file:-``) hands lines over as they come. :func:`follow_lines` yields each line as soon
as its newline arrives, whatever the input:

- a regular file is read from its start, then followed: appended lines as they come; a
  file that does not exist yet or is empty is waited for; *rotation* (the path names
  another file: ``logrotate``'s ``create``) reads the old file to its end, then the new
  one from its start; *truncation* (``copytruncate``: the file got shorter than what was
  read) reads it again from its start; a compressed file is read whole, not followed;
- standard input (``-``), a FIFO or a character device is read as bytes arrive, until
  it ends (a FIFO waits for its next writer when followed).

Reading never blocks for long: ``stop`` is asked every ``poll_interval`` seconds, and
``idle`` is called before each wait (a caller that batches lines hands them on then).
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
import sys
from collections.abc import Callable, Iterator

from probes.errors import ProbeError
from probes.logs.files import (
    CHUNK_BYTES,
    LineSplitter,
    ReadStats,
    compression_of,
    iter_log_lines,
)

#: Bytes looked at to tell a compressed file (which is read whole, not followed).
_MAGIC_BYTES = 8


def _never() -> bool:
    return False


def _nothing() -> None:
    return None


class _Follower:
    """The state of one followed path: the open descriptor and what was read of it."""

    def __init__(
        self,
        path: str,
        stats: ReadStats,
        stop: Callable[[], bool],
        idle: Callable[[], None],
        poll_interval: float,
    ) -> None:
        self.path = path
        self.stop = stop
        self.idle = idle
        self.poll_interval = poll_interval
        self.splitter = LineSplitter(stats)
        self.fd = -1
        self.identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self.regular = True
        self.offset = 0

    def wait(self, on_fd: bool = False) -> bool:
        """Hand the batch on and wait one poll interval (or until the descriptor has bytes,
        ``on_fd``); tell whether to go on."""
        self.idle()
        if self.stop():
            return False
        select.select([self.fd] if on_fd and self.fd >= 0 else [], [], [], self.poll_interval)
        return not self.stop()

    def open(self) -> bool:
        """Open the path if it exists; tell whether it is open."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ProbeError(f"{self.path}: {exc.strerror}", "check the path") from None
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            os.close(fd)
            raise ProbeError(f"{self.path}: is a directory", "follow a log file")
        self.fd, self.identity = fd, (st.st_dev, st.st_ino)
        self.regular, self.offset = stat.S_ISREG(st.st_mode), 0
        if self.regular:
            os.set_blocking(fd, True)
        return True

    def close(self) -> None:
        """Close the descriptor (the next :meth:`open` starts afresh)."""
        if self.fd >= 0 and self.fd != sys.stdin.fileno():
            os.close(self.fd)
        self.fd, self.identity = -1, None

    def read(self) -> bytes | None:
        """Read what is there: bytes, ``b""`` at the end, ``None`` when nothing came yet."""
        try:
            data = os.read(self.fd, CHUNK_BYTES)
        except BlockingIOError:
            return None
        self.offset += len(data)
        return data

    def replaced(self) -> str | None:
        """At the end of a regular file: ``"truncated"``, ``"rotated"`` or ``None``."""
        if os.fstat(self.fd).st_size < self.offset:
            return "truncated"
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None  # moved away, not replaced yet: keep the old one until it is
        return "rotated" if (st.st_dev, st.st_ino) != self.identity else None


def _compressed(path: str) -> bool:
    with contextlib.suppress(OSError), open(path, "rb") as fh:
        return compression_of(fh.read(_MAGIC_BYTES)) is not None
    return False


def _open_first(f: _Follower, follow: bool) -> bool:
    """Open the log, waiting for it to appear when following: ``False`` when stopped first.

    :raises ProbeError: the log is missing and not followed.
    """
    while not f.open():
        if not follow:
            raise ProbeError(f"{f.path}: no such file", "check the path")
        if not f.wait():
            return False
    return True


def _reopen(f: _Follower) -> bool:
    """Close a rotated log and open its successor once it exists: ``False`` when stopped."""
    f.close()
    while not f.open():
        if not f.wait():
            return False
    return True


def _rewind(f: _Follower) -> None:
    """Read a truncated log again from its start."""
    os.lseek(f.fd, 0, os.SEEK_SET)
    f.offset = 0
    f.splitter.reset()


def _follow_path(f: _Follower, follow: bool) -> Iterator[str]:
    if not _open_first(f, follow):
        return
    try:
        while True:
            data = f.read()
            if data:
                yield from f.splitter.feed(data)
                continue
            change = f.replaced() if data is not None and f.regular and follow else None
            if change == "truncated":
                _rewind(f)
                continue
            if change == "rotated":
                yield from f.splitter.end()
                if not _reopen(f):
                    return
                continue
            if data is not None and not follow:
                break  # the end of a file or a stream, and nothing to wait for
            if not f.wait(on_fd=data is None):
                break
        yield from f.splitter.end()
    finally:
        f.close()


def _follow_stdin(f: _Follower) -> Iterator[str]:
    fd = sys.stdin.fileno()
    f.fd, f.regular = fd, False
    while True:
        ready, _, _ = select.select([fd], [], [], 0)
        if not ready:
            if not f.wait(on_fd=True):
                return
            continue
        data = os.read(fd, CHUNK_BYTES)
        if not data:
            break
        yield from f.splitter.feed(data)
    yield from f.splitter.end()


def follow_lines(
    path: str,
    *,
    follow: bool = True,
    stop: Callable[[], bool] | None = None,
    idle: Callable[[], None] | None = None,
    poll_interval: float = 0.25,
    stats: ReadStats | None = None,
) -> Iterator[str]:
    """Yield a log's lines as they are written (see the module doc).

    :param path: a file, a FIFO, a character device, or ``-`` for standard input.
    :param follow: keep following at the end (``False``: read what is there and stop).
    :param stop: asked between waits; ``True`` ends the iteration.
    :param idle: called before each wait for more input.
    :param poll_interval: seconds between two looks at a file that did not grow.
    :param stats: filled in with what was read and repaired.
    :raises ProbeError: the path cannot be read (not followed: also when it is missing).
    """
    stats = stats if stats is not None else ReadStats()
    if path != "-" and _compressed(path):
        return iter_log_lines(path, stats)
    stats.files.append("<stdin>" if path == "-" else path)
    f = _Follower(path, stats, stop or _never, idle or _nothing, poll_interval)
    return _follow_stdin(f) if path == "-" else _follow_path(f, follow)
