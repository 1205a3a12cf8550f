"""The crash store's contract: what a store holds and offers, whatever its backend.

Both backends, SQLite (:mod:`assistant.triage.store`) and PostgreSQL
(:mod:`assistant.triage.store_pg`), keep one row per signature and one per sighting
(*hit*) with the same columns, and answer with these types;
:func:`assistant.triage.stores.open_store` picks one by its target.

Two times are kept per hit and never confused: ``seen``, when kassist stored it, and
``crashed_at``/``uptime``, when the kernel crashed (a wall clock where the source has
one: the journal, a network receiver, the live ring buffer's boot time; the printk
stamp always, when the log has one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from assistant.triage.model import Crash

#: Most bytes of one raw report kept in the store.
MAX_REPORT_BYTES = 256 * 1024


@dataclass
class StoredCrash:
    """One signature's summary row, with the hosts and releases of its hits.

    :param first_seen: when kassist first stored it (Unix seconds).
    :param last_seen: when kassist last stored it.
    :param first_crashed: when the kernel first crashed with it, where a hit knows (Unix
        seconds), else ``None``.
    :param last_crashed: when the kernel last crashed with it, where a hit knows.
    """

    signature: str
    title: str
    type: str
    frame: str | None
    guilty_file: str | None
    first_seen: float
    last_seen: float
    count: int
    hosts: list[str]
    releases: list[str]
    first_crashed: float | None = None
    last_crashed: float | None = None


@dataclass
class Hit:
    """One sighting of a crash.

    :param seen: when kassist stored it (Unix seconds).
    :param crashed_at: when the kernel crashed (Unix seconds), where the source told.
    :param uptime: the report's printk stamp: seconds since that boot, where the log had it.
    """

    seen: float
    host: str
    release: str | None
    source: str
    corrupted: bool
    report: str
    crashed_at: float | None = None
    uptime: float | None = None


def stored_report(crash: Crash) -> str:
    """Return a crash's report as stored: at most :data:`MAX_REPORT_BYTES` of UTF-8, no NUL
    (PostgreSQL's text refuses it), cut at a character boundary."""
    data = crash.report.encode("utf-8", "replace")[:MAX_REPORT_BYTES]
    return data.decode("utf-8", "ignore").replace("\x00", "\ufffd")


class Store(Protocol):
    """What every crash store backend offers (SQLite and PostgreSQL)."""

    @property
    def path(self) -> Path | str:
        """Where the store is: a file or a URL."""
        ...

    def record(
        self, crashes: list[Crash], source: str, host: str | None = None, now: float | None = None
    ) -> int:
        """Record crashes; return how many hits were new (a report stored before for the
        same host and source is not counted again)."""
        ...

    def signatures(self) -> list[StoredCrash]:
        """Return every signature, most recently seen first."""
        ...

    def get(self, prefix: str) -> tuple[StoredCrash, list[Hit]]:
        """Return one signature (a unique prefix is enough) and its hits, newest first."""
        ...

    def prune(self, before: float) -> int:
        """Drop the hits stored before ``before`` (Unix seconds); return how many went."""
        ...

    def close(self) -> None:
        """Close the store."""
        ...
