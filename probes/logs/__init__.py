"""Kernel logs: /dev/kmsg, the journal, pstore, kdump directories, files and stdin.

:func:`iter_records` reads any of them as :class:`LogRecord` objects;
:func:`iter_log_lines` reads files, stdin and kdump directories as plain lines, and
:func:`iter_log_blocks` reads them as blocks of whole lines (triage's fast path).
"""

from probes.logs.files import ReadStats, iter_log_blocks, iter_log_lines
from probes.logs.kmsg import KmsgStats, iter_kmsg, parse_kmsg_record
from probes.logs.pstore import PstoreStats, iter_pstore, pstore_files
from probes.logs.records import LogRecord
from probes.logs.sources import SourceStats, iter_records

__all__ = [
    "KmsgStats",
    "LogRecord",
    "PstoreStats",
    "ReadStats",
    "SourceStats",
    "iter_kmsg",
    "iter_log_blocks",
    "iter_log_lines",
    "iter_pstore",
    "iter_records",
    "parse_kmsg_record",
    "pstore_files",
]
