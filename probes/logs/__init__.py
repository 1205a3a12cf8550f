"""Kernel logs: files, stdin, kdump directories (and, later, /dev/kmsg, journald, pstore)."""

from probes.logs.files import ReadStats, iter_log_lines

__all__ = ["ReadStats", "iter_log_lines"]
