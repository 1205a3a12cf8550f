"""The kernel log buffer (printk ring buffer) of a vmcore, as records and as dmesg lines."""

from __future__ import annotations

from dataclasses import dataclass

import drgn
from drgn.helpers.linux.printk import PrintkRecord, get_printk_records


@dataclass
class LogRecord:
    """One printk record.

    :param seq: its sequence number.
    :param timestamp_ns: nanoseconds since boot (``local_clock()`` at printk time).
    :param level: the log level (0: emerg ... 7: debug).
    :param facility: the syslog facility (0: kernel).
    :param text: the message, without the trailing newline.
    :param caller_tid: the thread that logged it, if from task context.
    :param caller_cpu: the CPU that logged it, if not from task context.
    """

    seq: int
    timestamp_ns: int
    level: int
    facility: int
    text: str
    caller_tid: int | None = None
    caller_cpu: int | None = None


def _record(r: PrintkRecord) -> LogRecord:
    return LogRecord(
        seq=r.seq,
        timestamp_ns=r.timestamp,
        level=r.level,
        facility=r.facility,
        text=r.text.decode(errors="replace"),
        caller_tid=r.caller_tid,
        caller_cpu=r.caller_cpu,
    )


def log_records(prog: drgn.Program) -> list[LogRecord]:
    """Return the records still in the kernel's printk buffer, oldest first."""
    return [_record(r) for r in get_printk_records(prog)]


def dmesg_lines(records: list[LogRecord]) -> list[str]:
    """Format records as ``dmesg`` / the serial console does: ``[    4.531454] text``.

    A record with several lines gives one output line per text line, each
    with the record's timestamp, as the console prints them.
    """
    out: list[str] = []
    for r in records:
        sec, ns = divmod(r.timestamp_ns, 1_000_000_000)
        prefix = f"[{sec:5d}.{ns // 1000:06d}] "
        out.extend(prefix + part for part in r.text.split("\n"))
    return out
