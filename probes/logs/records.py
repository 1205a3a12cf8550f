"""One record type for every kernel log source, and the parsing shared by several of them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from probes.printk_time import STAMP, format_stamp

#: syslog level names, indexed by the level of ``<N>`` prefixes (include/linux/kern_levels.h).
LEVEL_NAMES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


@dataclass
class LogRecord:
    """One kernel log message, whatever source it came from.

    Sources fill in what they know: a plain file knows only ``text``; /dev/kmsg knows
    everything. ``text`` never carries the ``<N>`` prefix nor a trailing newline.

    :param text: the message (or the whole line for a plain file).
    :param source: where it came from: ``kmsg``, ``journal``, ``pstore:<file>``, ``file:<path>``,
        ``kdump:<file>``, ``stdin``, ``vmcore`` (a dump's printk buffer, read with drgn).
    :param seq: the printk sequence number (``u64``), when the source has one.
    :param level: the syslog level 0 (emerg) .. 7 (debug).
    :param facility: the syslog facility (0 kernel, 1 user, ...).
    :param ts_us: monotonic time since boot in microseconds (printk's ``ts_nsec / 1000``).
    :param continuation: the record continues the previous one (``c``/``+`` flag).
    :param dictionary: ``SUBSYSTEM=``, ``DEVICE=`` and other key/value lines of the record.
    :param caller_tid: the thread that logged it, when from task context and the source
        knows (``CONFIG_PRINTK_CALLER``; drgn reads it from a vmcore).
    :param caller_cpu: the CPU that logged it, when not from task context.
    :param realtime_us: when the source stamped it, in microseconds since the Unix epoch
        (the journal's ``__REALTIME_TIMESTAMP``, a network receiver's arrival time), when
        it has a clock of its own.
    :param cursor: the source's token to resume *after* this record (the journal's
        ``__CURSOR``), when it has one.
    :param host: the host that sent it, for a network source (its name where the wire
        says it, else its address); ``None`` for this host's own logs.
    :param sender: the network address it was received from (a network source's).
    :param spool: a network receiver's spool position of the message it came from
        (:mod:`assistant.watch.spool`), read again after a restart from there.
    """

    text: str
    source: str
    seq: int | None = None
    level: int | None = None
    facility: int | None = None
    ts_us: int | None = None
    continuation: bool = False
    dictionary: dict[str, str] = field(default_factory=dict)
    caller_tid: int | None = None
    caller_cpu: int | None = None
    realtime_us: int | None = None
    cursor: str | None = None
    host: str | None = None
    sender: str | None = None
    spool: int | None = None

    @property
    def from_kernel(self) -> bool:
        """Tell whether the kernel logged it (facility 0, or a source that does not say):
        a record user space wrote to /dev/kmsg has ``LOG_USER`` (1) or its own facility.

        >>> LogRecord("x", "kmsg", facility=1).from_kernel
        False
        """
        return self.facility in (0, None)

    @property
    def level_name(self) -> str | None:
        """Return the level as a word (``err``, ``warning``...), or ``None`` if unknown."""
        return LEVEL_NAMES[self.level] if self.level is not None and 0 <= self.level < 8 else None

    def to_dict(self) -> dict[str, Any]:
        """Return the record as JSON-ready data."""
        return asdict(self)

    def as_dmesg_line(self) -> str:
        """Return the record as ``dmesg`` prints it: ``[ seconds.micros] text``."""
        return _stamp(self.ts_us) + self.text

    def as_dmesg_lines(self) -> list[str]:
        """Return the record as the console prints it: one line per text line, each stamped.

        >>> LogRecord("a\\nb", "vmcore", ts_us=4_531_454).as_dmesg_lines()
        ['[    4.531454] a', '[    4.531454] b']
        """
        stamp = _stamp(self.ts_us)
        return [stamp + part for part in self.text.split("\n")]


def utf8(raw: bytes) -> tuple[str, bool]:
    """Decode bytes from the network or a file as UTF-8; return the text (invalid bytes
    replaced with U+FFFD) and whether it was valid."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), False


def _stamp(ts_us: int | None) -> str:
    return "" if ts_us is None else format_stamp(ts_us) + " "


def dmesg_lines(records: Iterable[LogRecord]) -> list[str]:
    """Format records as ``dmesg`` and the serial console do: ``[    4.531454] text``.

    A record with several lines gives one output line per text line, each
    with the record's timestamp, as the console prints them.
    """
    return [line for r in records for line in r.as_dmesg_lines()]


_PREFIX = re.compile(r"^<(\d{1,3})>")


def parse_console_line(line: str, source: str) -> LogRecord:
    """Turn one console-format line (``<4>[  12.345678] text``) into a record.

    Either part of the prefix may be missing; what is there is decoded.

    >>> r = parse_console_line("<3>[   12.500000] oops", "pstore:x")
    >>> (r.level, r.facility, r.ts_us, r.text)
    (3, 0, 12500000, 'oops')
    """
    level = facility = ts_us = None
    rest = line
    m = _PREFIX.match(rest)
    if m:
        value = int(m.group(1))
        level, facility = value & 7, value >> 3
        rest = rest[m.end() :]
    t = STAMP.match(rest)
    if t:
        frac = t.group(2).ljust(6, "0")[:6]
        ts_us = int(t.group(1)) * 1_000_000 + int(frac)
        rest = rest[t.end() :]
        rest = rest[1:] if rest.startswith(" ") else rest
    return LogRecord(text=rest, source=source, level=level, facility=facility, ts_us=ts_us)
