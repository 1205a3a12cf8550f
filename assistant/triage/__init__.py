"""Crash triage: find kernel crash reports in logs and describe them deterministically."""

from __future__ import annotations

from typing import Any

from assistant.errors import InputError
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


def _rootcause(crash: Crash, context: Any) -> dict[str, Any]:
    # The faulting instruction and the assessment. Imported when first used: rootcause
    # imports triage's modules, so importing it here would make `import
    # assistant.rootcause.x` (which loads this package first) find rootcause half-loaded.
    from assistant.rootcause.report import rootcause_dict

    return rootcause_dict(crash, context)


CRASH_SECTIONS.append(_rootcause)


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
