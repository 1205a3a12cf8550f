"""The kernel's ring buffer, triaged now: what "any crashes?" answers when the store cannot.

The crash store holds what ``kassist watch`` (or ``triage --store``) recorded; on a fresh
install, or when watch does not run, it knows nothing of this boot. The chat then reads
/dev/kmsg as it is (:func:`probes.logs.kmsg.read_ring_buffer`: the records still in the
buffer, without waiting) and triages the kernel's own records, rendered by the triage
feature's renderer. Records that user space wrote to /dev/kmsg (another syslog facility:
the kernel gives them LOG_USER) are counted, never taken for kernel crashes.
"""

from __future__ import annotations

from dataclasses import dataclass

from assistant.triage import TriageResult, triage_lines
from assistant.triage.render import triage_text
from probes.logs import KmsgStats
from probes.logs.kmsg import read_ring_buffer
from probes.logs.records import dmesg_lines

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


def read_kernel_log() -> KernelLog:
    """Read and triage the ring buffer now (never waits for new records).

    :raises probes.errors.ProbeError: /dev/kmsg cannot be read (not root, dmesg_restrict).
    """
    stats = KmsgStats()
    records = read_ring_buffer(stats)
    kernel = [r for r in records if r.from_kernel]
    user = [r for r in records if not r.from_kernel]
    result = triage_lines(dmesg_lines(kernel), "kmsg")
    forged = triage_lines(dmesg_lines(user), "kmsg (user space)") if user else None
    return KernelLog(
        result, len(records), len(user), len(forged.crashes) if forged else 0, stats.lost
    )


def headline(log: KernelLog) -> str:
    """Return one line: crashes and events in the kernel log since boot, and where from."""
    n = len(log.result.crashes)
    return (
        f"kernel log {n} crash{'es' if n != 1 else ''}, {len(log.result.events)} event(s)"
        f" since boot (read now from {SOURCE}: {log.records} records)"
    )


def detail_lines(log: KernelLog, most: int | None = None) -> list[str]:
    """Return the triage renderer's lines for the crashes and events (repeats grouped),
    then what was left out.

    :param most: show at most this many lines of the renderer's (the rest is counted).
    """
    rows = triage_text(log.result).splitlines()[1:]  # its first line: the headline's counts
    lines = rows if most is None or len(rows) <= most else [
        *rows[:most], f"  ... and {len(rows) - most} more lines (`/triage` shows them all)"
    ]  # fmt: skip
    if log.user_reports:
        lines.append(
            f"  {log.user_reports} crash-like report(s) written to /dev/kmsg by user space "
            "(not the kernel's: not counted)"
        )
    if log.lost:
        lines.append(f"  {log.lost} record(s) were overwritten while reading")
    return lines
