"""Read kernel logs from files, stdin and kdump directories, streamed in bounded memory.

Reading is kept apart from parsing: this module turns bytes into lines of text
and nothing more. Compressed files (gzip, xz, zstd) are recognised by their
magic numbers, not by their names. Inputs that never end are not waited on:
/dev/kmsg gives what the ring buffer holds now, a FIFO with no writer and any
other character device are refused in one line (``kassist watch`` follows them).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from probes.errors import ProbeError
from probes.logs.kdump import kdump_dmesg_files, vmcore_files
from probes.logs.kmsg import KMSG_DEVICE, KmsgStats, read_ring_buffer
from probes.logs.records import dmesg_lines

#: Bytes read per chunk when streaming a log.
CHUNK_BYTES = 1 << 20
#: Bytes read at a time by :func:`iter_log_blocks`.
BLOCK_BYTES = 4 << 20
#: Longest line kept whole; the rest of a longer line is dropped (and counted).
MAX_LINE_BYTES = 64 * 1024
#: Bytes sniffed at the start of an input to tell text from binary garbage.
SNIFF_BYTES = 64 * 1024

_MAGIC: list[tuple[bytes, str]] = [
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
]


@dataclass
class ReadStats:
    """What reading an input noticed without failing.

    :param bytes_read: decompressed bytes read.
    :param lines: lines produced.
    :param long_lines: lines longer than :data:`MAX_LINE_BYTES`, truncated.
    :param invalid_utf8_lines: lines with bytes that are not UTF-8 (replaced with U+FFFD).
    :param nul_bytes: NUL bytes dropped.
    :param files: the files read, in order.
    """

    bytes_read: int = 0
    lines: int = 0
    long_lines: int = 0
    invalid_utf8_lines: int = 0
    nul_bytes: int = 0
    files: list[str] = field(default_factory=list)
    #: /dev/kmsg records that user space wrote (a facility other than the kernel's), left out
    not_kernel: int = 0
    #: /dev/kmsg records the ring buffer overwrote before they were read
    kmsg_lost: int = 0

    def warnings(self) -> list[str]:
        """Return one human line per kind of damage seen, empty when the input was clean."""
        out = []
        if self.invalid_utf8_lines:
            out.append(f"{self.invalid_utf8_lines} line(s) had invalid UTF-8, shown as U+FFFD")
        if self.long_lines:
            out.append(f"{self.long_lines} line(s) longer than {MAX_LINE_BYTES} bytes truncated")
        if self.nul_bytes:
            out.append(f"{self.nul_bytes} NUL byte(s) dropped")
        if self.not_kernel:
            out.append(f"{self.not_kernel} record(s) written by user space left out")
        if self.kmsg_lost:
            out.append(f"{self.kmsg_lost} record(s) lost to ring-buffer overwrite")
        return out


def compression_of(head: bytes) -> str | None:
    """Return the compression format named by a file's first bytes, or ``None``."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def looks_binary(sample: bytes) -> bool:
    """Tell whether a sample of bytes is binary data rather than a text log.

    A console log may carry a few stray control bytes or invalid UTF-8 from a
    dying kernel; binary data is mostly made of them.

    >>> looks_binary(b"[    0.000000] Linux version 6.1.0\\n")
    False
    >>> looks_binary(bytes(range(256)) * 4)
    True
    """
    if not sample:
        return False
    text_bytes = sum(1 for b in sample if b in (9, 10, 13) or 32 <= b < 127)
    utf8_ok = 0
    try:
        decoded = sample.decode("utf-8")
        utf8_ok = sum(1 for ch in decoded if ch.isprintable() or ch in "\t\n\r")
        if utf8_ok >= 0.9 * len(decoded):
            return False
    except UnicodeDecodeError:
        pass
    return text_bytes < 0.7 * len(sample)


def decompressing(raw: IO[bytes], kind: str | None) -> IO[bytes]:
    """Return a stream of ``raw`` decompressed as ``kind`` (see :func:`compression_of`).

    Every decompressor is wrapped in a BufferedReader so that callers can ``peek()``.
    """
    inner: Any
    if kind == "gzip":
        inner = gzip.GzipFile(fileobj=raw)
    elif kind == "xz":
        inner = lzma.LZMAFile(raw)  # noqa: SIM115 - closed with the stream
    elif kind == "bzip2":
        inner = bz2.BZ2File(raw)
    elif kind == "zstd":
        import zstandard

        inner = zstandard.ZstdDecompressor().stream_reader(raw)
    else:
        return raw
    return io.BufferedReader(inner, buffer_size=CHUNK_BYTES)


def _describe_os_error(path: str, exc: OSError) -> ProbeError:
    hints = {
        FileNotFoundError: ("no such file", "check the path"),
        PermissionError: ("permission denied", "run as a user who can read it, or use sudo"),
        IsADirectoryError: ("is a directory", "give a log file, or a kdump directory"),
    }
    for kind, (what, hint) in hints.items():
        if isinstance(exc, kind):
            return ProbeError(f"{path}: {what}", hint)
    return ProbeError(f"{path}: {exc.strerror or exc}", "check the file")


class LineSplitter:
    """Cut bytes into decoded lines as they arrive, in bounded memory.

    NUL bytes are dropped, a line longer than :data:`MAX_LINE_BYTES` keeps its head only,
    a trailing ``\\r`` goes, and invalid UTF-8 is replaced (each counted in ``stats``).
    """

    def __init__(self, stats: ReadStats) -> None:
        self.stats = stats
        self._pending = b""
        self._dropping = False  # inside the tail of an over-long line

    def feed(self, chunk: bytes) -> list[str]:
        """Take the next bytes; return the lines they complete."""
        stats = self.stats
        stats.bytes_read += len(chunk)
        if b"\x00" in chunk:
            stats.nul_bytes += chunk.count(b"\x00")
            chunk = chunk.replace(b"\x00", b"")
        out: list[str] = []
        start = 0
        while True:
            nl = chunk.find(b"\n", start)
            if nl < 0:
                if not self._dropping:
                    self._pending += chunk[start:]
                    if len(self._pending) > MAX_LINE_BYTES:
                        out.append(_decode(self._pending[:MAX_LINE_BYTES], stats))
                        stats.long_lines += 1
                        self._pending = b""
                        self._dropping = True
                return out
            piece = chunk[start:nl]
            start = nl + 1
            if self._dropping:
                self._dropping = False
                self._pending = b""
                continue
            line = self._pending + piece if self._pending else piece
            self._pending = b""
            if len(line) > MAX_LINE_BYTES:
                stats.long_lines += 1
                line = line[:MAX_LINE_BYTES]
            out.append(_decode(line, stats))

    def end(self) -> list[str]:
        """Return the last line when the input ended without a newline (and forget it)."""
        pending, dropping = self._pending, self._dropping
        self._pending, self._dropping = b"", False
        return [_decode(pending, self.stats)] if pending and not dropping else []

    def reset(self) -> None:
        """Forget a partial line (the file it came from was truncated)."""
        self._pending, self._dropping = b"", False


def _iter_stream_lines(stream: IO[bytes], stats: ReadStats) -> Iterator[str]:
    splitter = LineSplitter(stats)
    while True:
        chunk = stream.read(CHUNK_BYTES)
        if not chunk:
            break
        yield from splitter.feed(chunk)
    yield from splitter.end()


def _decode(line: bytes, stats: ReadStats) -> str:
    stats.lines += 1
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        stats.invalid_utf8_lines += 1
        return line.decode("utf-8", errors="replace")


class _Prefixed(io.RawIOBase):
    # A pipe's descriptor with the bytes already read from it put back in front.
    def __init__(self, head: bytes, fd: int) -> None:
        super().__init__()
        self._head = head
        self._fd = fd

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = os.read(self._fd, len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def _open_fifo(path: str) -> BinaryIO:
    # A FIFO is read to its end when a writer holds it open; one with no writer would
    # block until one comes, so it is refused (watch follows FIFOs).
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        head = os.read(fd, SNIFF_BYTES)
    except BlockingIOError:
        head = None  # a writer, with nothing written yet
    except OSError:
        os.close(fd)
        raise
    if head == b"":
        os.close(fd)
        raise ProbeError(
            f"{path}: a FIFO with no writer",
            f"triage reads a log to its end; to follow it run `kassist watch --source file:{path}`",
        )
    os.set_blocking(fd, True)
    return _Prefixed(head or b"", fd)  # type: ignore[return-value]


def _ring_buffer_stream(path: str, stats: ReadStats) -> BinaryIO:
    # /dev/kmsg never ends: read what the ring buffer holds now, as dmesg prints it.
    kstats = KmsgStats()
    records = read_ring_buffer(kstats, path=path)
    kernel = [r for r in records if r.from_kernel]
    stats.not_kernel += len(records) - len(kernel)
    stats.kmsg_lost += kstats.lost
    text = "\n".join(dmesg_lines(kernel))
    return io.BytesIO(text.encode("utf-8", "replace") + (b"\n" if text else b""))


def _is_kmsg(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == KMSG_DEVICE


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        raise _describe_os_error(path, exc) from None


def _open_checked(path: str, st: os.stat_result) -> BinaryIO:
    if stat.S_ISDIR(st.st_mode):
        raise ProbeError(f"{path}: is a directory", "give a log file, or a kdump directory")
    try:
        if stat.S_ISCHR(st.st_mode):
            raise ProbeError(
                f"{path}: a character device, not a log",
                f"triage reads log files and /dev/kmsg; follow a console with"
                f" `kassist watch --source file:{path}`",
            )
        if stat.S_ISFIFO(st.st_mode):
            return _open_fifo(path)
        return open(path, "rb")
    except OSError as exc:
        raise _describe_os_error(path, exc) from None


def _sniffed(raw: BinaryIO, name: str) -> IO[bytes]:
    buffered = io.BufferedReader(raw, buffer_size=CHUNK_BYTES)  # type: ignore[type-var]
    head = buffered.peek(SNIFF_BYTES)[:SNIFF_BYTES]
    kind = compression_of(head)
    stream = decompressing(buffered, kind)
    if kind is not None:
        try:
            head = stream.peek(SNIFF_BYTES)[:SNIFF_BYTES]  # type: ignore[attr-defined]
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise ProbeError(
                f"{name}: truncated or damaged {kind} data ({exc})", "check the file"
            ) from None
    if not head and kind is None:
        raise ProbeError(f"{name}: is empty", "give a log that has some kernel messages")
    if looks_binary(head):
        raise ProbeError(
            f"{name}: binary data, not a text log",
            "give a console log, dmesg output or journal export (for a vmcore use --vmcore)",
        )
    return stream


#: What a damaged or truncated archive raises while it is read.
_DAMAGED = (EOFError, OSError, ValueError, lzma.LZMAError)


def _log_streams(path: str, stats: ReadStats) -> Iterator[tuple[str, IO[bytes]]]:
    # Each input behind a path (stdin, one file, or a kdump directory's dmesg files),
    # opened, checked and decompressed; a stream is valid until the next one is asked for.
    if path == "-":
        stats.files.append("<stdin>")
        yield "<stdin>", _sniffed(sys.stdin.buffer, "<stdin>")
        return
    p = Path(path)
    names = _kdump_inputs(p) if p.is_dir() else [path]
    for name in names:
        stats.files.append(name)
        st = _stat(name)
        if _is_kmsg(st):
            # Our own text, never compressed; a ring buffer that holds only records user
            # space wrote is no crash, not an empty input (the warning counts them).
            try:
                stream = _ring_buffer_stream(name, stats)
            except OSError as exc:
                raise _describe_os_error(name, exc) from None
            yield name, stream
            continue
        with _open_checked(name, st) as raw:
            yield name, _sniffed(raw, name)


def _kdump_inputs(directory: Path) -> list[str]:
    # The dmesg files of a kdump directory; any other directory is refused in one line.
    files = kdump_dmesg_files(directory)
    if files:
        return [str(f) for f in files]
    if vmcore_files(directory):
        raise ProbeError(
            f"{directory}: a kdump directory with a dump but no dmesg file",
            f"triage the dump with `kassist triage --vmcore {vmcore_files(directory)[0]}`",
        )
    raise ProbeError(
        f"{directory}: is a directory, not a kdump one (no dmesg.<stamp>, vmcore-dmesg.txt"
        " or dump in it)",
        "give a log file, or a /var/crash/<stamp>/ directory that kdump wrote",
    )


def _read(
    path: str, stats: ReadStats, pieces: Callable[[IO[bytes], ReadStats], Iterator[str]]
) -> Iterator[str]:
    for name, stream in _log_streams(path, stats):
        try:
            yield from pieces(stream, stats)
        except _DAMAGED as exc:
            what = f"{name}: truncated or damaged data ({exc})"
            raise ProbeError(what, "check the file") from None


def iter_log_lines(path: str, stats: ReadStats | None = None) -> Iterator[str]:
    """Yield the lines of a log file, ``-`` (stdin), a compressed file or a kdump directory.

    Lines come without their ``\\n`` (and without a trailing ``\\r``), decoded as
    UTF-8 with invalid bytes replaced. Memory stays bounded whatever the size of
    the input: at most :data:`CHUNK_BYTES` plus :data:`MAX_LINE_BYTES` are held.

    :param path: a file path, ``-`` for standard input, or a directory of kdump dmesg files.
    :param stats: filled in with what was read and what was repaired.
    :raises ProbeError: the input is missing, unreadable, empty, binary or a damaged archive.
    """
    return _read(path, stats if stats is not None else ReadStats(), _iter_stream_lines)


def iter_log_blocks(path: str, stats: ReadStats | None = None) -> Iterator[str]:
    """Yield a log's text in blocks of whole lines (joined by ``\\n``, none trailing).

    The same inputs, checks and errors as :func:`iter_log_lines`, but handed over in
    blocks of about :data:`BLOCK_BYTES`, cut at line ends and decoded once: on a log
    of a gigabyte, one Python string per line costs more than triage itself.

    :param path: a file, ``-`` for standard input, or a kdump directory.
    :param stats: filled in with what was read and repaired.
    :raises ProbeError: the input is missing, unreadable, empty, binary or damaged.
    """
    return _read(path, stats if stats is not None else ReadStats(), _iter_stream_blocks)


def _iter_stream_blocks(stream: IO[bytes], stats: ReadStats) -> Iterator[str]:
    pending = b""
    while True:
        chunk = stream.read(BLOCK_BYTES)
        if not chunk:
            break
        stats.bytes_read += len(chunk)
        if b"\x00" in chunk:
            stats.nul_bytes += chunk.count(b"\x00")
            chunk = chunk.replace(b"\x00", b"")
        data = pending + chunk if pending else chunk
        cut = data.rfind(b"\n")
        if cut == -1:
            # One line longer than a block: keep its head only.
            if len(data) > MAX_LINE_BYTES:
                stats.long_lines += 1
                data = data[:MAX_LINE_BYTES]
            pending = data
            continue
        pending = data[cut + 1 :]
        if len(pending) > MAX_LINE_BYTES:
            stats.long_lines += 1
            pending = pending[:MAX_LINE_BYTES]
        yield _decode_block(data[:cut], stats)
    if pending:
        yield _decode_block(pending, stats)


def _decode_block(data: bytes, stats: ReadStats) -> str:
    stats.lines += data.count(b"\n") + 1
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        stats.invalid_utf8_lines += sum(1 for line in text.split("\n") if "\ufffd" in line)
        return text
