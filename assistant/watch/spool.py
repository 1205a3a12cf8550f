"""A network receiver's spool: every message it received, on disk before it is triaged.

A receiver killed mid-report (``SIGKILL``, the OOM killer) loses what it held in memory:
the first half of a host's report whose second half comes after the restart. So each
message is appended to the spool (written to the kernel, whose page cache outlives the
process, before its records are handed on), and the daemon saves a *position* in it: the
first message an open report still needs (:meth:`assistant.watch.daemon._Stream.resume`).
A restarted receiver reads the spool on from there before it listens: the open reports
come out whole, and those already stored are stored once (a report is named by host, boot
and printk stamp).

A position is one integer: the file's generation times :data:`GENERATION` plus the byte
offset in it. The spool is a directory of files ``NAME.GENERATION``, a new one past
:data:`FILE_BYTES`; files before the saved position's generation are deleted, and at most
:data:`MAX_FILES` are kept (past it the oldest goes, counted as ``spool_dropped``).
Power loss is not covered (no fsync per message).
"""

from __future__ import annotations

import contextlib
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from probes.logs.netrecv import Message

#: Positions per generation (a file is never this large).
GENERATION = 1 << 40
#: Bytes of one spool file before the next one starts.
FILE_BYTES = 16 << 20
#: Spool files kept at most (with :data:`FILE_BYTES`, 512 MiB).
MAX_FILES = 32
#: A message's frame: payload length (``u32``), sender port (``u16``), arrival in
#: microseconds since the epoch (``u64``), address length (``u16``), kind (``u8``: 0 UDP,
#: 1 TCP); the address and the payload follow.
_FRAME = struct.Struct(">IHQHB")
_KINDS = ("udp", "tcp")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def encode(msg: Message) -> bytes:
    """Return a message's frame in the spool."""
    peer = msg.peer.encode()
    kind = _KINDS.index(msg.kind) if msg.kind in _KINDS else 0
    head = _FRAME.pack(len(msg.payload), msg.port, msg.arrival_us, len(peer), kind)
    return head + peer + msg.payload


def decode(data: bytes) -> Iterator[tuple[int, Message]]:
    """Yield ``(offset, message)`` of each whole frame of a spool file's bytes (a frame
    cut short by a kill ends it)."""
    offset = 0
    while offset + _FRAME.size <= len(data):
        size, port, arrival, peer_len, kind = _FRAME.unpack_from(data, offset)
        start = offset + _FRAME.size
        end = start + peer_len + size
        if end > len(data):
            return
        peer = data[start : start + peer_len].decode(errors="replace")
        kind_name = _KINDS[kind] if kind < len(_KINDS) else "udp"
        yield offset, Message(peer, data[start + peer_len : end], arrival, kind_name, port)
        offset = end


class Spool:
    """The spool of one network source (see the module doc).

    :param directory: where its files live (made if missing).
    :param name: the source's name (``--source`` as given), made safe for a file name.
    """

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.prefix = _UNSAFE.sub("_", name)
        directory.mkdir(parents=True, exist_ok=True)
        gens = self.generations()
        self.generation = gens[-1] + 1 if gens else 0
        self.offset = 0
        self.dropped = 0
        self._file: BinaryIO | None = None

    def path(self, generation: int) -> Path:
        """Return the file of a generation."""
        return self.directory / f"{self.prefix}.{generation:08d}"

    def generations(self) -> list[int]:
        """Return the generations on disk, oldest first."""
        out = []
        for p in self.directory.glob(f"{self.prefix}.*"):
            suffix = p.name[len(self.prefix) + 1 :]
            if suffix.isdigit():
                out.append(int(suffix))
        return sorted(out)

    def replay(self, since: int) -> Iterator[tuple[int, Message]]:
        """Yield ``(position, message)`` of the messages spooled at or after ``since``."""
        for gen in self.generations():
            if gen < since // GENERATION or gen >= self.generation:
                continue
            try:
                data = self.path(gen).read_bytes()
            except OSError:
                continue
            skip = since % GENERATION if gen == since // GENERATION else 0
            for offset, msg in decode(data):
                if offset >= skip:
                    yield gen * GENERATION + offset, msg

    def append(self, msg: Message) -> int:
        """Spool a message (buffered until :meth:`flush`); return its position."""
        if self._file is None or self.offset >= FILE_BYTES:
            self._next_file()
        assert self._file is not None
        at = self.generation * GENERATION + self.offset
        frame = encode(msg)
        self._file.write(frame)
        self.offset += len(frame)
        return at

    def flush(self) -> None:
        """Hand what was appended to the kernel (it outlives this process)."""
        if self._file is not None:
            self._file.flush()

    def release(self, position: int) -> None:
        """Delete the files wholly before ``position`` (no open report needs them)."""
        for gen in self.generations():
            if gen < position // GENERATION and gen < self.generation:
                with contextlib.suppress(OSError):
                    self.path(gen).unlink()

    def close(self) -> None:
        """Flush and close the current file."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _next_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self.generation += 1
        self._file = self.path(self.generation).open("ab")
        self.offset = 0
        old = self.generations()
        while len(old) > MAX_FILES:
            with contextlib.suppress(OSError):
                self.path(old.pop(0)).unlink()
            self.dropped += 1
