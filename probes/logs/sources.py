"""One iterator over every kernel log source, so callers do not care where a line came from.

A source is named by a string, as a user types it:

============================  ==============================================
``kmsg``                      the live ring buffer (/dev/kmsg), a snapshot
``journal`` / ``journal:-1``  the journal's kernel messages, this / previous boot
``pstore`` / ``pstore:DIR``   crash logs kept by pstore (/sys/fs/pstore)
``-``                         standard input
a directory                   a kdump directory (/var/crash or /var/crash/<stamp>)
any other path                a log file, compressed or not
============================  ==============================================
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from probes.errors import ProbeError
from probes.logs.files import ReadStats, iter_log_lines
from probes.logs.journal import iter_journal
from probes.logs.kdump import kdump_dmesg_files
from probes.logs.kmsg import KmsgStats, iter_kmsg
from probes.logs.pstore import PSTORE_DIR, PstoreStats, iter_pstore
from probes.logs.records import LogRecord


@dataclass
class SourceStats:
    """What reading one source noticed, whatever the source.

    :param files: files (or devices) read.
    :param kmsg: counters of a /dev/kmsg read.
    :param pstore: counters of a pstore read.
    :param files_read: counters of a file, stdin or kdump read.
    """

    files: list[str] = field(default_factory=list)
    kmsg: KmsgStats = field(default_factory=KmsgStats)
    pstore: PstoreStats = field(default_factory=PstoreStats)
    files_read: ReadStats = field(default_factory=ReadStats)

    def warnings(self) -> list[str]:
        """Return one human line per kind of damage or loss seen in any source."""
        return self.kmsg.warnings() + self.pstore.warnings() + self.files_read.warnings()


def _file_records(path: str, stats: SourceStats) -> Iterator[LogRecord]:
    if path == "-":
        origin = "stdin"
    elif Path(path).is_dir() and kdump_dmesg_files(Path(path)):
        origin = "kdump"
    else:
        origin = "file"
    for line in iter_log_lines(path, stats.files_read):
        current = stats.files_read.files[-1] if stats.files_read.files else path
        yield LogRecord(text=line, source="stdin" if origin == "stdin" else f"{origin}:{current}")


def iter_records(
    source: str, stats: SourceStats | None = None, *, follow: bool = False
) -> Iterator[LogRecord]:
    """Yield the records of one kernel log source named as in this module's table.

    :param source: ``kmsg``, ``journal[:BOOT]``, ``pstore[:DIR]``, ``-``, a kdump directory
        or a file.
    :param stats: filled in with what was read, lost, repaired or skipped.
    :param follow: for ``kmsg``, keep waiting for new records.
    :raises ProbeError: the source is missing, unreadable or not available on this machine.
    """
    stats = stats if stats is not None else SourceStats()
    if source == "kmsg":
        stats.files.append("/dev/kmsg")
        yield from iter_kmsg(follow=follow, stats=stats.kmsg)
    elif source == "journal" or source.startswith("journal:"):
        boot_text = source.partition(":")[2] or "0"
        if not boot_text.lstrip("-").isdigit():
            raise ProbeError(
                f"{source}: not a boot number", "use journal (this boot) or journal:-1 (previous)"
            )
        boot = int(boot_text)
        stats.files.append(f"journal (boot {boot})")
        yield from iter_journal(boot)
    elif source == "pstore" or source.startswith("pstore:"):
        directory = source.partition(":")[2] or PSTORE_DIR
        yield from iter_pstore(directory, stats.pstore)
        stats.files.extend(stats.pstore.files)
    else:
        yield from _file_records(source, stats)
        stats.files.extend(stats.files_read.files)
