"""Open the crash store a target names: a PostgreSQL URL (the fleet's) or a SQLite file.

This is the one place that knows both backends (:mod:`assistant.triage.store` and
:mod:`assistant.triage.store_pg`); each of them knows only the contract they share
(:mod:`assistant.triage.store_model`).
"""

from __future__ import annotations

from pathlib import Path

from assistant.triage.engine import triage_lines
from assistant.triage.model import Crash, CrashTime
from assistant.triage.store import CrashStore
from assistant.triage.store_model import Store
from assistant.triage.store_pg import PgCrashStore, is_url


def open_store(target: str | Path | None = None) -> Store:
    """Open the crash store named by ``target``: a PostgreSQL URL, a SQLite file, or the
    default file (:func:`assistant.triage.store.default_path`).

    :raises KassistError: it cannot be opened.
    """
    if target is not None and is_url(str(target)):
        return PgCrashStore(str(target))
    return CrashStore(Path(target) if target is not None else None)


def stored_crash(store: Store, prefix: str) -> Crash:
    """Return a stored signature as a crash: its newest report triaged again (for a bug
    report), or, for an event (an OOM kill...) that no report names, what the store says.

    :param prefix: the signature, or a unique prefix of it.
    :raises KassistError: no signature, or several, start with ``prefix``.
    """
    summary, hits = store.get(prefix)
    for hit in hits:
        found = triage_lines(hit.report.split("\n"), f"store:{summary.signature}").crashes
        if found:
            crash = found[0]
            crash.kernel.release = crash.kernel.release or hit.release
            crash.time = CrashTime(uptime=hit.uptime, wall=hit.crashed_at)
            return crash
    newest = hits[0] if hits else None
    return Crash(
        title=summary.title,
        type=summary.type,
        report=newest.report if newest else summary.title,
        start_line=1,
        end_line=1,
        frame=summary.frame,
        guilty_file=summary.guilty_file,
        signature=summary.signature,
        time=CrashTime(wall=newest.crashed_at, uptime=newest.uptime) if newest else CrashTime(),
    )
