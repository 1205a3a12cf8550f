"""Read the kernel log of an earlier crash that pstore kept (``/sys/fs/pstore/dmesg-*``).

pstore backends (ramoops, efi-pstore, erst) save the tail of the kernel log when
the kernel panics or oopses, in parts of a few KiB; after the next boot they show
up as ``dmesg-<backend>-<id>`` files, each starting with a header such as
``Panic#1 Part1``. Part1 is the newest chunk, so parts are read from the highest
number down. A part the kernel could not decompress is shown with a ``.enc.z``
suffix and holds raw deflate data (fs/pstore/platform.c), which is inflated here.
"""

from __future__ import annotations

import io
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from probes.errors import ProbeError, ProbeUnavailable
from probes.logs.files import compression_of, decompressing, looks_binary
from probes.logs.records import LogRecord, parse_console_line

PSTORE_DIR = "/sys/fs/pstore"
#: Largest pstore part read (bytes); real parts are a few KiB, a bigger file is not one.
MAX_PART_BYTES = 16 * 1024 * 1024
_HEADER = re.compile(r"^(?P<reason>[A-Za-z]+)#(?P<count>\d+) Part(?P<part>\d+)$")


@dataclass
class PstoreStats:
    """What reading pstore noticed without failing.

    :param files: dmesg files read, in the order their lines were produced.
    :param truncated: files whose compressed data ended early (what could be read is kept).
    :param skipped: files skipped as unreadable, binary or too large, with the reason.
    :param invalid_utf8_lines: lines with bytes that are not UTF-8 (replaced with U+FFFD).
    """

    files: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    invalid_utf8_lines: int = 0

    def warnings(self) -> list[str]:
        """Return one human line per file that was damaged or skipped."""
        out = [
            f"{name}: compressed data ends early, kept what could be read"
            for name in self.truncated
        ]
        out += [f"{name}: skipped: {why}" for name, why in self.skipped]
        if self.invalid_utf8_lines:
            out.append(f"{self.invalid_utf8_lines} line(s) had invalid UTF-8, shown as U+FFFD")
        return out


def inflate_part(data: bytes) -> tuple[bytes, bool]:
    """Decompress a pstore part if it is compressed.

    :param data: the file's bytes.
    :return: the text bytes, and whether the compressed stream was complete.
    :raises ValueError: the data is compressed in a way that cannot be decoded at all.
    """
    kind = compression_of(data[:8])
    if kind is not None:
        stream = decompressing(io.BytesIO(data), kind)
        chunks: list[bytes] = []
        try:
            while chunk := stream.read(1 << 16):
                chunks.append(chunk)
        except (EOFError, OSError, ValueError):
            return b"".join(chunks), False
        return b"".join(chunks), True
    for wbits in (-zlib.MAX_WBITS, zlib.MAX_WBITS):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data)
        except zlib.error:
            continue
        if out or inflater.eof:
            return out + inflater.flush(), inflater.eof
    raise ValueError("not deflate, zlib, gzip, xz, bzip2 or zstd data")


def _part_key(path: Path, first_line: str) -> tuple[int, int, str]:
    m = _HEADER.match(first_line.strip())
    if m is None:
        return (0, 0, path.name)
    return (int(m.group("count")), -int(m.group("part")), path.name)


def _read_part(path: Path, stats: PstoreStats) -> str | None:
    try:
        size = path.stat().st_size
        if size > MAX_PART_BYTES:
            stats.skipped.append((str(path), f"{size} bytes is too large for a pstore part"))
            return None
        data = path.read_bytes()
    except OSError as exc:
        stats.skipped.append((str(path), exc.strerror or str(exc)))
        return None
    compressed = path.name.endswith((".enc.z", ".z")) or compression_of(data[:8]) is not None
    if compressed:
        try:
            data, complete = inflate_part(data)
        except ValueError as exc:
            stats.skipped.append((str(path), str(exc)))
            return None
        if not complete:
            stats.truncated.append(str(path))
    data = data.replace(b"\x00", b"")
    if looks_binary(data[:65536]):
        stats.skipped.append((str(path), "binary data, not a kernel log"))
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        stats.invalid_utf8_lines += sum(1 for line in text.splitlines() if "\ufffd" in line)
        return text


def pstore_files(directory: str = PSTORE_DIR) -> list[str]:
    """Return the names of the kernel log parts pstore holds (``dmesg-*``), sorted.

    :return: empty when the directory cannot be read (not mounted, not root).
    """
    try:
        return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith("dmesg"))
    except OSError:
        return []


def iter_pstore(
    directory: str = PSTORE_DIR, stats: PstoreStats | None = None
) -> Iterator[LogRecord]:
    """Yield the kernel log lines pstore kept from earlier crashes, oldest part first.

    Header lines (``Panic#1 Part1``) are yielded too, with no level, so a reader sees
    where each saved chunk starts.

    :param directory: the pstore mount point, or a copy of its files.
    :param stats: filled in with files read, truncated and skipped.
    :raises ProbeError: the directory does not exist or holds no dmesg files.
    """
    stats = stats if stats is not None else PstoreStats()
    root = Path(directory)
    if not root.is_dir():
        raise ProbeError(
            f"pstore: {directory} is not a directory",
            "mount it with `mount -t pstore pstore /sys/fs/pstore` (as root)",
        )
    paths = sorted(p for p in root.glob("dmesg-*") if p.is_file())
    if not paths:
        raise ProbeUnavailable(
            f"pstore: not available: no dmesg-* files in {directory}",
            "the previous boot left no crash record (or no pstore backend is configured)",
        )
    parts = [(p, text) for p in paths if (text := _read_part(p, stats)) is not None]
    parts.sort(key=lambda pt: _part_key(pt[0], pt[1].split("\n", 1)[0]))
    for path, text in parts:
        stats.files.append(str(path))
        for line in text.splitlines():
            yield parse_console_line(line, f"pstore:{path.name}")
