"""The kernel log buffer (printk ring buffer) of a vmcore, as :class:`LogRecord` objects.

The records are the same type every other log source gives (``probes.logs``),
with ``source="vmcore"``; :func:`dmesg_lines` formats them as the console did.
"""

from __future__ import annotations

import drgn
from drgn.helpers.linux.printk import PrintkRecord, get_printk_records

from probes.logs.records import LogRecord, dmesg_lines

#: :attr:`LogRecord.source` of a record read from a dump's printk buffer.
SOURCE = "vmcore"


def _record(r: PrintkRecord) -> LogRecord:
    # PrintkRecord.timestamp is local_clock() in ns; LogRecord keeps µs, as /dev/kmsg does.
    return LogRecord(
        text=r.text.decode(errors="replace"),
        source=SOURCE,
        seq=r.seq,
        level=r.level,
        facility=r.facility,
        ts_us=r.timestamp // 1000,
        continuation=r.continuation,
        dictionary={
            k.decode(errors="replace"): v.decode(errors="replace") for k, v in r.context.items()
        },
        caller_tid=r.caller_tid,
        caller_cpu=r.caller_cpu,
    )


def log_records(prog: drgn.Program) -> list[LogRecord]:
    """Return the records still in the kernel's printk buffer, oldest first."""
    return [_record(r) for r in get_printk_records(prog)]


__all__ = ["SOURCE", "LogRecord", "dmesg_lines", "log_records"]
