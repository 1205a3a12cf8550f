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

import json
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

from assistant.errors import KassistError
from assistant.triage.model import Crash
from assistant.triage.similar import Evidence, Features, link

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
    #: probably the same bug as this signature (a non-binding link), and why
    same_as: str | None = None
    same_as_why: str | None = None


@dataclass
class Hit:
    """One sighting of a crash.

    :param seen: when kassist stored it (Unix seconds).
    :param crashed_at: when the kernel crashed (Unix seconds), where the source told.
    :param uptime: the report's printk stamp: seconds since that boot, where the log had it.
    :param sender: the network address it was received from (a receiver's host: the
        netconsole sender, the syslog forwarder or relay, the OTLP client), else ``None``.
    """

    seen: float
    host: str
    release: str | None
    source: str
    corrupted: bool
    report: str
    crashed_at: float | None = None
    uptime: float | None = None
    sender: str | None = None


def stored_report(crash: Crash) -> str:
    """Return a crash's report as stored: at most :data:`MAX_REPORT_BYTES` of UTF-8, no NUL
    (PostgreSQL's text refuses it), cut at a character boundary."""
    data = crash.report.encode("utf-8", "replace")[:MAX_REPORT_BYTES]
    return data.decode("utf-8", "ignore").replace("\x00", "\ufffd")


#: Seconds a receiver holds the lease on drafting a new signature (then another may).
DRAFT_LEASE_SECONDS = 600.0


def features_json(crash: Crash) -> str:
    """Return what :mod:`assistant.triage.similar` compares a crash by, as stored."""
    from assistant.triage.similar import features

    return json.dumps(features(crash).to_dict(), separators=(",", ":"))


def read_features(text: str | None) -> Features:
    """Read stored features back (nothing, for a row stored before they were)."""
    try:
        return Features.from_dict(json.loads(text or "null"))
    except ValueError:
        return Features()


def best_link(
    mine: Features, others: Iterable[tuple[str, str | None]]
) -> tuple[str, Evidence] | None:
    """Return the stored signature a new one is most probably the same bug as, and why.

    :param others: ``(signature, stored features)`` of the signatures already stored.
    """
    best: tuple[float, str, Evidence] | None = None
    for signature, text in others:
        ev = link(mine, read_features(text))
        if not ev.linked:
            continue
        rank = 0.0 if ev.same_alloc_free or ev.same_file else (ev.distance or 0.0)
        if best is None or rank < best[0]:
            best = (rank, signature, ev)
    return None if best is None else (best[1], best[2])


class Store(ABC):
    """What every crash store backend offers (SQLite and PostgreSQL); both derive from it.

    Use as a context manager, or call :meth:`close`.
    """

    #: Where the store is: a file or a URL.
    path: Path | str
    #: Its connection's parameter mark (``?`` for sqlite3, ``%s`` for psycopg).
    _MARK: ClassVar[str]

    @property
    @abstractmethod
    def _db(self) -> Any:
        # The open connection (sqlite3 or psycopg).
        ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def record(
        self,
        crashes: list[Crash],
        source: str,
        host: str | None = None,
        now: float | None = None,
        sender: str | None = None,
    ) -> int:
        """Record crashes; return how many hits were new (a report stored before for the
        same host and source is not counted again). ``sender``: the network address they
        were received from, kept with each new hit.

        :param host: the host they came from (this host's name without it).
        :param now: when they are stored (Unix seconds; the clock without it).
        """
        host = host or socket.gethostname()
        now = time.time() if now is None else now
        return self._record(crashes, source, host, now, sender)

    @abstractmethod
    def _record(
        self, crashes: list[Crash], source: str, host: str, now: float, sender: str | None
    ) -> int:
        # Store one batch in the backend (see record); return how many hits were new.
        ...

    @abstractmethod
    def signatures(self) -> list[StoredCrash]:
        """Return every signature, most recently seen first."""
        ...

    def get(self, prefix: str) -> tuple[StoredCrash, list[Hit]]:
        """Return one signature (a unique prefix is enough) and its hits, newest first.

        :raises KassistError: no signature, or several, start with ``prefix``.
        """
        rows = self._named(prefix.lower())
        if not rows:
            raise KassistError(f"no crash {prefix!r} in the store", "see `kassist crashes list`")
        if len(rows) > 1:
            raise KassistError(f"{prefix!r} names several crashes", "give more of the signature")
        hits = self._db.execute(
            "SELECT seen, host, release, source, corrupted, report, crashed_at, uptime, sender"
            f" FROM hits WHERE signature = {self._MARK} ORDER BY seen DESC, id DESC",
            (rows[0].signature,),
        )
        return rows[0], [
            Hit(float(seen), str(host), release, str(source), bool(corrupted), str(report),
                crashed_at, uptime, sender)
            for seen, host, release, source, corrupted, report, crashed_at, uptime, sender in hits
        ]  # fmt: skip

    @abstractmethod
    def _named(self, prefix: str) -> list[StoredCrash]:
        # The signatures (two at the most) that start with prefix, in lower case.
        ...

    @abstractmethod
    def prune(self, before: float) -> int:
        """Drop the hits stored before ``before`` (Unix seconds); return how many went."""
        ...

    def features(self) -> dict[str, Features]:
        """Return what each signature is compared by (:mod:`assistant.triage.similar`)."""
        rows = self._db.execute("SELECT signature, features FROM crashes WHERE count > 0")
        return {str(sig): read_features(text) for sig, text in rows}

    @abstractmethod
    def lease_draft(self, signature: str, owner: str, seconds: float = DRAFT_LEASE_SECONDS,
                    now: float | None = None) -> bool:  # fmt: skip
        """Take the lease on drafting a new signature's report; ``False`` when another
        owner holds it (until it expires) or the draft is done. One draft per signature
        across every receiver writing to this store."""
        ...

    @abstractmethod
    def draft_done(self, signature: str, owner: str) -> None:
        """Mark a signature's draft as written (the lease is not given again)."""
        ...

    @abstractmethod
    def close(self) -> None:
        """Close the store."""
        ...
