"""Crash triage: find kernel crash reports in logs and describe them deterministically."""

from __future__ import annotations

from assistant.errors import InputError
from assistant.rootcause.report import rootcause_dict
from assistant.triage.engine import triage_blocks, triage_lines
from assistant.triage.model import (
    CRASH_SECTIONS,
    TRIAGE_SCHEMA,
    Crash,
    Event,
    Frame,
    TriageResult,
)
from probes.errors import ProbeError
from probes.logs import ReadStats, iter_log_blocks

CRASH_SECTIONS.append(rootcause_dict)  # the faulting instruction and the assessment


def triage_path(path: str) -> TriageResult:
    """Triage one input: a log file, ``-`` for stdin, a compressed log or a kdump directory.

    :raises InputError: the input cannot be read as a text log.
    """
    stats = ReadStats()
    try:
        result = triage_blocks(iter_log_blocks(path, stats), source=path)
    except ProbeError as exc:
        raise InputError(exc.message, exc.hint) from None
    result.warnings.extend(stats.warnings())
    return result


__all__ = [
    "TRIAGE_SCHEMA",
    "Crash",
    "Event",
    "Frame",
    "TriageResult",
    "triage_lines",
    "triage_path",
]
