"""Read a log as blocks of whole lines, for the engine's fast path.

:func:`probes.logs.iter_log_lines` yields one line at a time; on a log of a
gigabyte that costs more than triage itself. This reader opens inputs the same
way (files, ``-``, compressed files, kdump directories, with the same checks and
errors, via :mod:`probes.logs.files`) but hands the engine blocks of about
:data:`BLOCK_BYTES`, cut at line ends, decoded once.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from probes.errors import ProbeError
from probes.logs import ReadStats
from probes.logs import files as logfiles

#: Bytes read at a time.
BLOCK_BYTES = 4 << 20
#: Longest line kept whole; the rest of a longer line is dropped (and counted).
MAX_LINE_BYTES = logfiles.MAX_LINE_BYTES


def _blocks(stream: IO[bytes], stats: ReadStats) -> Iterator[str]:
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
        yield _decode(data[:cut], stats)
    if pending:
        yield _decode(pending, stats)


def _decode(data: bytes, stats: ReadStats) -> str:
    stats.lines += data.count(b"\n") + 1
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        stats.invalid_utf8_lines += sum(1 for line in text.split("\n") if "\ufffd" in line)
        return text


def iter_log_blocks(path: str, stats: ReadStats | None = None) -> Iterator[str]:
    """Yield a log's text in blocks of whole lines (joined by ``\\n``, none trailing).

    :param path: a file, ``-`` for standard input, or a kdump directory.
    :param stats: filled in with what was read and repaired.
    :raises ProbeError: the input is missing, unreadable, empty, binary or damaged.
    """
    stats = stats if stats is not None else ReadStats()
    if path == "-":
        stats.files.append("<stdin>")
        yield from _guarded(logfiles._sniffed(sys.stdin.buffer, "<stdin>"), "<stdin>", stats)
        return
    p = Path(path)
    targets = [str(f) for f in logfiles.kdump_dmesg_files(p)] if p.is_dir() else [path]
    if not targets:
        raise ProbeError(
            f"{path}: is a directory with no kdump dmesg files",
            "give a log file, or a /var/crash/<stamp>/ directory holding dmesg.*",
        )
    for name in targets:
        stats.files.append(name)
        with logfiles._open_checked(name) as raw:
            yield from _guarded(logfiles._sniffed(raw, name), name, stats)


def _guarded(stream: IO[bytes], name: str, stats: ReadStats) -> Iterator[str]:
    try:
        yield from _blocks(stream, stats)
    except (EOFError, OSError, ValueError) as exc:
        raise ProbeError(f"{name}: truncated or damaged data ({exc})", "check the file") from None
