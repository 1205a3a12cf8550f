"""The kernel's ring buffer, triaged now: what "any crashes?" answers when the store cannot.

The crash store holds what ``kassist watch`` (or ``triage --store``) recorded; on a fresh
install, or when watch does not run, it knows nothing of this boot. The chat then reads
/dev/kmsg as it is (non-blocking: the records since boot still in the buffer) and triages
the kernel's own records. Records that user space wrote to /dev/kmsg carry another syslog
facility (the kernel gives them LOG_USER): they are counted, never taken for kernel crashes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from assistant.triage import TriageResult, triage_lines
from probes.logs import KmsgStats, iter_kmsg
from probes.logs.records import LogRecord, dmesg_lines

#: The syslog facility of the kernel's own records (``LOG_KERN``).
KERNEL_FACILITY = 0
#: What the source of such a reading is called.
SOURCE = "/dev/kmsg"


@dataclass
class KernelLog:
    """The ring buffer's records since boot, triaged.

    :param result: the triage of the kernel's own records (facility ``LOG_KERN``).
    :param records: records read; ``user_records``: of them written by user space.
    :param user_reports: crash-like reports among the user-space records (not crashes).
    :param lost: records overwritten while reading (the buffer wrapped).
    """

    result: TriageResult
    records: int
    user_records: int = 0
    user_reports: int = 0
    lost: int = 0
    notes: list[str] = field(default_factory=list)


def _kernel_own(record: LogRecord) -> bool:
    return record.facility in (None, KERNEL_FACILITY)


def read_kernel_log() -> KernelLog:
    """Read and triage the ring buffer now (never waits for new records).

    :raises probes.errors.ProbeError: /dev/kmsg cannot be read (not root, dmesg_restrict).
    """
    stats = KmsgStats()
    kernel: list[LogRecord] = []
    user: list[LogRecord] = []
    for record in iter_kmsg(stats=stats):
        (kernel if _kernel_own(record) else user).append(record)
    result = triage_lines(dmesg_lines(kernel), "kmsg")
    forged = triage_lines(dmesg_lines(user), "kmsg (user space)") if user else None
    return KernelLog(
        result,
        len(kernel) + len(user),
        len(user),
        len(forged.crashes) if forged else 0,
        stats.lost,
    )


def headline(log: KernelLog) -> str:
    """Return one line: crashes and events in the kernel log since boot, and where from."""
    n = len(log.result.crashes)
    events = len(log.result.events)
    line = (
        f"kernel log {n} crash{'es' if n != 1 else ''}, {events} event(s) since boot "
        f"(read now from {SOURCE}: {log.records} records)"
    )
    return line


def detail_lines(log: KernelLog, most: int | None = None) -> list[str]:
    """Return the crashes (one line per signature, with how often) and the events (one line
    per kind and title), then what was left out.

    :param most: show at most this many crash and event lines (the rest is counted).
    """
    crashes = Counter((c.signature, c.title, c.type) for c in log.result.crashes)
    events = Counter((e.type, e.title) for e in log.result.events)
    rows = [
        f"  {n}x {title}  [{kind}]  sig {sig[:12]}" for (sig, title, kind), n in crashes.items()
    ]
    rows += [f"  {n}x event: {title}  [{kind}]" for (kind, title), n in events.items()]
    lines = (
        rows
        if most is None or len(rows) <= most
        else [*rows[:most], f"  ... and {len(rows) - most} more (`/triage` shows them all)"]
    )
    if log.user_reports:
        lines.append(
            f"  {log.user_reports} crash-like report(s) written to /dev/kmsg by user space "
            "(not the kernel's: not counted)"
        )
    if log.lost:
        lines.append(f"  {log.lost} record(s) were overwritten while reading")
    return lines
