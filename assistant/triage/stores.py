"""Open the crash store a target names: a PostgreSQL URL (the fleet's) or a SQLite file.

This is the one place that knows both backends (:mod:`assistant.triage.store` and
:mod:`assistant.triage.store_pg`); each of them knows only the contract they share
(:mod:`assistant.triage.store_model`).
"""

from __future__ import annotations

from pathlib import Path

from assistant.errors import KassistError
from assistant.triage.engine import triage_lines
from assistant.triage.model import Crash, CrashTime, SameAs
from assistant.triage.similar import Evidence, clusters, link
from assistant.triage.store import CrashStore
from assistant.triage.store_model import Store, StoredCrash
from assistant.triage.store_pg import PgCrashStore, is_url


def open_store(target: str | Path | None = None) -> Store:
    """Open the crash store named by ``target``: a PostgreSQL URL, a SQLite file, or the
    default file (:func:`assistant.triage.store.default_path`).

    :raises KassistError: it cannot be opened.
    """
    if target is not None and is_url(str(target)):
        return PgCrashStore(str(target))
    return CrashStore(Path(target) if target is not None else None)


def same_as_of(store: Store, summary: StoredCrash) -> SameAs | None:
    """Return the stored signature ``summary`` is probably the same bug as, if any."""
    if not summary.same_as:
        return None
    try:
        other, _ = store.get(summary.same_as)
    except KassistError:  # pruned since
        return None
    return SameAs(other.signature, other.title, summary.same_as_why or "")


def similar(store: Store, prefix: str) -> tuple[StoredCrash, list[tuple[StoredCrash, Evidence]]]:
    """Return a stored signature and those probably the same bug (its cluster by average
    linkage, :mod:`assistant.triage.similar`), each with the evidence against it, the
    nearest first.

    :raises KassistError: no signature, or several, start with ``prefix``.
    """
    summary, _ = store.get(prefix)
    rows = {r.signature: r for r in store.signatures()}
    feats = store.features()
    order = [sig for sig in rows if sig in feats]
    if summary.signature not in order:
        return summary, []
    labels = clusters([feats[sig] for sig in order])
    mine = labels[order.index(summary.signature)]
    out = [
        (rows[sig], link(feats[summary.signature], feats[sig]))
        for sig, label in zip(order, labels, strict=True)
        if label == mine and sig != summary.signature
    ]
    out.sort(key=lambda x: x[1].distance if x[1].distance is not None else 1.0)
    return summary, out


def stored_crash(store: Store, prefix: str) -> Crash:
    """Return a stored signature as a crash: its newest report triaged again (for a bug
    report), or, for an event (an OOM kill...) that no report names, what the store says.

    :param prefix: the signature, or a unique prefix of it.
    :raises KassistError: no signature, or several, start with ``prefix``.
    """
    summary, hits = store.get(prefix)
    same_as = same_as_of(store, summary)
    for hit in hits:
        found = triage_lines(hit.report.split("\n"), f"store:{summary.signature}").crashes
        if found:
            crash = found[0]
            crash.kernel.release = crash.kernel.release or hit.release
            crash.time = CrashTime(uptime=hit.uptime, wall=hit.crashed_at)
            crash.same_as = same_as
            return crash
    newest = hits[0] if hits else None
    return Crash(
        same_as=same_as,
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
