"""Read structured records from /dev/kmsg: snapshot, follow, resume, and lost-record counting.

Each ``read(2)`` of /dev/kmsg returns one record (Documentation/ABI/testing/dev-kmsg)::

    <prefix>,<seq>,<ts_usec>,<flags>[,<more>...];<message>\\n
     SUBSYSTEM=pci\\n
     DEVICE=+pci:0000:00:1f.2\\n

When the ring buffer overwrote records the reader had not read yet, ``read(2)``
fails once with ``EPIPE`` and the next read returns the oldest record still
there: the gap in sequence numbers is what was lost, and it is counted, not hidden.
"""

from __future__ import annotations

import errno
import os
import select
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from probes.errors import ProbeError
from probes.logs.records import LogRecord

KMSG_PATH = "/dev/kmsg"
#: The (major, minor) of /dev/kmsg (drivers/char/mem.c: ``[11] = { "kmsg", ... }`` of mem).
KMSG_DEVICE = (1, 11)
#: One read must hold a whole record; the kernel's limit is 8 KiB (CONSOLE_EXT_LOG_MAX).
READ_BYTES = 64 * 1024
#: Most dictionary lines kept per record; the rest are dropped and counted.
MAX_DICT_ENTRIES = 32
#: Longest dictionary value kept (bytes); longer values are cut and counted.
MAX_DICT_VALUE = 1024


@dataclass
class KmsgStats:
    """What reading /dev/kmsg noticed without failing.

    :param records: records produced.
    :param lost: records overwritten in the ring buffer before they could be read.
    :param malformed: records whose header could not be parsed (skipped).
    :param invalid_utf8: records with bytes that are not UTF-8 (replaced with U+FFFD).
    :param dict_dropped: dictionary lines dropped or cut for being too many or too long.
    :param skipped_resume: records skipped because they were at or before the resume point.
    :param last_seq: sequence number of the last record produced, to resume from later.
    """

    records: int = 0
    lost: int = 0
    malformed: int = 0
    invalid_utf8: int = 0
    dict_dropped: int = 0
    skipped_resume: int = 0
    last_seq: int | None = None

    def warnings(self) -> list[str]:
        """Return one human line per kind of trouble seen, empty when all went well."""
        table = [
            (self.lost, "record(s) lost to ring-buffer overwrite before they were read"),
            (self.malformed, "malformed record(s) skipped"),
            (self.invalid_utf8, "record(s) had invalid UTF-8, shown as U+FFFD"),
            (self.dict_dropped, "dictionary line(s) dropped or cut (too many or too long)"),
        ]
        return [f"{n} {what}" for n, what in table if n]


def parse_kmsg_record(raw: bytes, stats: KmsgStats | None = None) -> LogRecord | None:
    """Parse one /dev/kmsg record.

    :param raw: the bytes of one ``read(2)``.
    :param stats: counters for damage repaired or records skipped.
    :return: the record, or ``None`` (counted as malformed) when its header is not valid.

    >>> r = parse_kmsg_record(b"11,42,1500000,-;hello\\n SUBSYSTEM=net\\n")
    >>> (r.level, r.facility, r.seq, r.ts_us, r.dictionary)
    (3, 1, 42, 1500000, {'SUBSYSTEM': 'net'})
    """
    stats = stats if stats is not None else KmsgStats()
    head, sep, body = raw.partition(b";")
    fields = head.split(b",")
    if not sep or len(fields) < 4:
        stats.malformed += 1
        return None
    try:
        prefix, seq, ts_us = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        stats.malformed += 1
        return None
    if prefix < 0 or seq < 0 or ts_us < 0:
        stats.malformed += 1
        return None
    lines = body.rstrip(b"\n").split(b"\n")
    text = _decode(lines[0], stats)
    dictionary: dict[str, str] = {}
    for extra in lines[1:]:
        if not extra.startswith(b" ") or b"=" not in extra:
            continue
        if len(dictionary) >= MAX_DICT_ENTRIES:
            stats.dict_dropped += 1
            continue
        key, _, value = extra[1:].partition(b"=")
        if len(value) > MAX_DICT_VALUE:
            stats.dict_dropped += 1
            value = value[:MAX_DICT_VALUE]
        dictionary[_decode(key, stats)] = _decode(value, stats)
    return LogRecord(
        text=text,
        source="kmsg",
        seq=seq,
        level=prefix & 7,
        facility=prefix >> 3,
        ts_us=ts_us,
        continuation=fields[3] in (b"c", b"+"),
        dictionary=dictionary,
    )


def _decode(data: bytes, stats: KmsgStats) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        stats.invalid_utf8 += 1
        return data.decode("utf-8", errors="replace")


def _open_kmsg(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except PermissionError:
        raise ProbeError(
            f"{path}: permission denied",
            "run as root, or set kernel.dmesg_restrict=0 to let users read the kernel log",
        ) from None
    except FileNotFoundError:
        raise ProbeError(
            f"{path}: no such device", "this kernel or container has no /dev/kmsg"
        ) from None
    except OSError as exc:
        raise ProbeError(f"{path}: {exc.strerror}", "check that /dev/kmsg is readable") from None


def iter_kmsg(
    *,
    follow: bool = False,
    after_seq: int | None = None,
    stats: KmsgStats | None = None,
    stop: Callable[[], bool] | None = None,
    poll_interval: float = 0.25,
    path: str = KMSG_PATH,
    idle: Callable[[], None] | None = None,
) -> Iterator[LogRecord]:
    """Yield the records of the kernel ring buffer, oldest first.

    :param follow: keep waiting for new records instead of stopping at the end of the buffer.
    :param after_seq: resume point: skip records with a sequence number at or below it
        (a saved :attr:`KmsgStats.last_seq`); records between it and the oldest one still
        in the buffer are counted as lost.
    :param stats: filled in with counts of lost, malformed and repaired records.
    :param stop: called between waits in follow mode; returning ``True`` ends the iteration.
    :param poll_interval: seconds between checks of ``stop`` while waiting.
    :param path: the device to read (a test may point at another character device).
    :param idle: in follow mode, called before each wait for new records (a caller that
        batches records hands its batch on then).
    :raises ProbeError: /dev/kmsg cannot be opened or read.
    """
    stats = stats if stats is not None else KmsgStats()
    fd = _open_kmsg(path)
    expected = None if after_seq is None else after_seq + 1
    try:
        while True:
            raw = _read_record(fd, path)
            if raw is None:
                if follow and _wait(fd, stop, idle, poll_interval):
                    continue
                return
            if not raw:
                return
            record = parse_kmsg_record(raw, stats)
            if record is None or record.seq is None:
                continue
            if after_seq is not None and record.seq <= after_seq:
                stats.skipped_resume += 1
                continue
            expected = _counted(record.seq, expected, stats)
            yield record
    finally:
        os.close(fd)


def _read_record(fd: int, path: str) -> bytes | None:
    """Read one record's bytes: ``b""`` at the end, ``None`` when none is there yet.

    A record overwritten while we read (``EPIPE``) is skipped: the gap in the sequence
    numbers says how many were lost.
    """
    while True:
        try:
            return os.read(fd, READ_BYTES)
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise ProbeError(f"{path}: read failed: {exc.strerror}", "try again") from None


def _wait(
    fd: int,
    stop: Callable[[], bool] | None,
    idle: Callable[[], None] | None,
    poll_interval: float,
) -> bool:
    """Wait until *fd* has a record (``True``) or ``stop()`` says to end (``False``).

    :param poll_interval: seconds between two calls of ``stop``.
    """
    if idle is not None:
        idle()
    while not (stop is not None and stop()):
        ready, _, _ = select.select([fd], [], [], poll_interval)
        if ready:
            return True
    return False


def _counted(seq: int, expected: int | None, stats: KmsgStats) -> int:
    """Count record *seq* (and the records lost before it) in *stats*; return the next
    sequence number expected."""
    if expected is not None and seq > expected:
        stats.lost += seq - expected
    stats.records += 1
    stats.last_seq = seq
    return seq + 1


def read_ring_buffer(stats: KmsgStats | None = None, *, path: str = KMSG_PATH) -> list[LogRecord]:
    """Return what the kernel ring buffer holds now, oldest first, without waiting.

    The snapshot ``dmesg`` prints, as records: a reader that asks "any crashes recently?"
    (``kassist triage /dev/kmsg``, the chat) gets them at once, bounded by the buffer's
    size (``CONFIG_LOG_BUF_SHIFT``). Records that user space wrote are included: keep
    :attr:`LogRecord.from_kernel` ones to leave them out.

    :param stats: filled in with lost, malformed and repaired records.
    :param path: the device (a test may point at another).
    :raises ProbeError: /dev/kmsg cannot be opened or read (not root under dmesg_restrict).
    """
    return list(iter_kmsg(follow=False, stats=stats, path=path))


def boot_realtime_us() -> int:
    """Return the wall-clock time of this boot's start, in microseconds since the epoch:
    what turns a printk stamp (``ts_us``) of this boot into a wall time.

    printk stamps with ``local_clock()``, which on x86 and arm64 stays within
    milliseconds of ``CLOCK_MONOTONIC`` (both stop during suspend); a wall clock set
    since boot moves the answer with it.
    """
    return int((time.time() - time.monotonic()) * 1_000_000)
