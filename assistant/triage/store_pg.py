"""The fleet crash store: the crash store's schema on PostgreSQL, for many hosts at once.

Chosen by URL (``--store postgresql://...``, ``[store] url``): the same tables and columns
as the SQLite store (:mod:`assistant.triage.store`), built by numbered migrations kept in
``_migrations``, plus one column the SQLite store does not need: ``hits.report_sha``, the
SHA-256 of the report, which carries the "a report is counted once" key (PostgreSQL
cannot index a 256 KiB text). Many watch daemons upsert at once: a hit is inserted with
``ON CONFLICT DO NOTHING`` and only an inserted hit bumps its signature's count, under
the row lock of that ``UPDATE``, so no count is lost or doubled.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from assistant.errors import KassistError
from assistant.triage.model import Crash
from assistant.triage.store_model import (
    DRAFT_LEASE_SECONDS,
    Hit,
    Store,
    StoredCrash,
    best_link,
    features_json,
    read_features,
    stored_report,
)

#: Numbered migrations: (number, statements). Append only; never edit one that shipped.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE IF NOT EXISTS crashes (
                signature   TEXT PRIMARY KEY,
                title       TEXT NOT NULL,
                type        TEXT NOT NULL,
                frame       TEXT,
                guilty_file TEXT,
                first_seen  DOUBLE PRECISION NOT NULL,
                last_seen   DOUBLE PRECISION NOT NULL,
                count       BIGINT NOT NULL DEFAULT 0
            )""",
            """CREATE TABLE IF NOT EXISTS hits (
                id         BIGSERIAL PRIMARY KEY,
                signature  TEXT NOT NULL REFERENCES crashes(signature),
                seen       DOUBLE PRECISION NOT NULL,
                host       TEXT NOT NULL,
                release    TEXT,
                source     TEXT NOT NULL,
                corrupted  INTEGER NOT NULL DEFAULT 0,
                report     TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS hits_by_signature ON hits(signature, seen)",
        ),
    ),
    (
        2,
        (
            "ALTER TABLE hits ADD COLUMN IF NOT EXISTS report_sha TEXT NOT NULL DEFAULT ''",
            "CREATE UNIQUE INDEX IF NOT EXISTS hits_once"
            " ON hits(signature, host, source, report_sha)",
        ),
    ),
    (
        3,
        (
            # When the kernel crashed, beside when kassist stored it (``seen``).
            "ALTER TABLE hits ADD COLUMN IF NOT EXISTS crashed_at DOUBLE PRECISION",
            "ALTER TABLE hits ADD COLUMN IF NOT EXISTS uptime DOUBLE PRECISION",
        ),
    ),
    (
        4,
        (
            # One draft per new signature across the fleet: a lease, taken in one statement.
            """CREATE TABLE IF NOT EXISTS drafts (
                signature    TEXT PRIMARY KEY,
                owner        TEXT NOT NULL,
                leased_until DOUBLE PRECISION NOT NULL,
                done_at      DOUBLE PRECISION
            )""",
            # What crash similarity compares, and the link it found (non-binding).
            "ALTER TABLE crashes ADD COLUMN IF NOT EXISTS features TEXT",
            "ALTER TABLE crashes ADD COLUMN IF NOT EXISTS same_as TEXT",
            "ALTER TABLE crashes ADD COLUMN IF NOT EXISTS same_as_why TEXT",
        ),
    ),
    (
        5,
        (
            # The network address a receiver got the report from (beside its host's name).
            "ALTER TABLE hits ADD COLUMN IF NOT EXISTS sender TEXT",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
#: Tries of a batch the server aborted as a deadlock or a serialisation failure.
DEADLOCK_RETRIES = 5
#: The advisory lock that serialises migrations between processes.
_MIGRATION_LOCK = 0x6B617373  # "kass"


def is_url(target: str | None) -> bool:
    """Tell whether a store target is a PostgreSQL URL (else it is a SQLite file)."""
    return bool(target) and str(target).startswith(("postgresql://", "postgres://"))


def _connect(url: str) -> Any:
    try:
        import psycopg
    except ImportError:
        raise KassistError(
            "the fleet store needs psycopg", "pip install 'psycopg[binary]'"
        ) from None
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KassistError(
            f"cannot reach the fleet store: {first}", "check the URL and that PostgreSQL runs"
        ) from None


def migrate(conn: Any) -> int:
    """Apply the migrations this database has not seen; return the version it was at.

    :raises KassistError: the database's schema is newer than this kassist.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS _migrations"
            " (number INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)"
        )
        row = conn.execute("SELECT COALESCE(MAX(number), 0) FROM _migrations").fetchone()
        start = int(row[0])
        if start > SCHEMA_VERSION:
            raise KassistError(
                f"the fleet store has schema {start}, newer than this kassist's {SCHEMA_VERSION}",
                "upgrade kassist on this host",
            )
        for number, statements in MIGRATIONS:
            if number <= start:
                continue
            for sql in statements:
                conn.execute(sql)
            conn.execute(
                "INSERT INTO _migrations(number, applied_at) VALUES (%s, %s)", (number, time.time())
            )
    return start


class PgCrashStore(Store):
    """The crash store on PostgreSQL, with the methods of the SQLite store.

    :param url: a libpq URL (``postgresql://user@host/db`` or ``postgresql:///db?host=/sock``).
    :raises KassistError: the server cannot be reached, or its schema is newer.
    """

    path: str
    _MARK = "%s"

    def __init__(self, url: str) -> None:
        self.path = url
        self._conn = _connect(url)
        try:
            migrate(self._conn)
        except BaseException:
            self._conn.close()
            raise

    @property
    def _db(self) -> Any:
        # The connection; one the server dropped (a restart, a failover) is opened again
        # here, raising KassistError while the server cannot be reached, so that a writer
        # that keeps what failed (watch's pending crashes) writes it once the server is back.
        if self._conn.broken:
            self._conn.close()
            self._conn = _connect(self.path)
        return self._conn

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def _record(
        self, crashes: list[Crash], source: str, host: str, now: float, sender: str | None
    ) -> int:
        # Rows are locked in signature order, so two hosts' batches cannot deadlock; a
        # deadlock the server still reports (another writer's order) is retried.
        ordered = sorted(crashes, key=lambda c: c.signature)
        retryable = _retryable()
        for attempt in range(DEADLOCK_RETRIES):
            try:
                return self._record_once(ordered, source, host, now, sender)
            except retryable:
                if attempt == DEADLOCK_RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        return 0

    def _record_once(
        self, crashes: list[Crash], source: str, host: str, now: float, sender: str | None
    ) -> int:
        new = 0
        with self._db.transaction():
            for c in crashes:
                report = stored_report(c)
                sha = hashlib.sha256(report.encode("utf-8")).hexdigest()
                fresh = self._db.execute(
                    "INSERT INTO crashes(signature, title, type, frame, guilty_file, first_seen,"
                    " last_seen, count, features) VALUES (%s, %s, %s, %s, %s, %s, %s, 0, %s)"
                    " ON CONFLICT (signature) DO NOTHING RETURNING features",
                    (c.signature, c.title, c.type, c.frame, c.guilty_file, now, now,
                     features_json(c)),
                ).fetchone()  # fmt: skip
                if fresh is not None:
                    self._link(c.signature, fresh[0])
                inserted = self._db.execute(
                    "INSERT INTO hits(signature, seen, host, release, source, corrupted, report,"
                    " report_sha, crashed_at, uptime, sender)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (signature, host, source, report_sha) DO NOTHING RETURNING id",
                    (c.signature, now, host, c.kernel.release, source, int(c.corrupted), report,
                     sha, c.time.wall, c.time.uptime, sender),
                ).fetchone()  # fmt: skip
                if inserted is not None:
                    new += 1
                    self._db.execute(
                        "UPDATE crashes SET count = count + 1,"
                        " last_seen = GREATEST(last_seen, %s), first_seen = LEAST(first_seen, %s)"
                        " WHERE signature = %s",
                        (now, now, c.signature),
                    )
        return new

    def _link(self, signature: str, mine: str | None) -> None:
        # A new signature: probably the same bug as one stored before? (non-binding)
        others = self._db.execute(
            "SELECT signature, features FROM crashes WHERE signature != %s AND count > 0",
            (signature,),
        ).fetchall()
        found = best_link(read_features(mine), others)
        if found is not None:
            self._db.execute(
                "UPDATE crashes SET same_as = %s, same_as_why = %s WHERE signature = %s",
                (found[0], found[1].text(), signature),
            )

    def lease_draft(self, signature: str, owner: str, seconds: float = DRAFT_LEASE_SECONDS,
                    now: float | None = None) -> bool:  # fmt: skip
        """Take the lease on drafting a new signature: one statement, so that of the
        receivers that race for it exactly one gets it (the row lock of the upsert)."""
        now = time.time() if now is None else now
        row = self._db.execute(
            "INSERT INTO drafts(signature, owner, leased_until) VALUES (%s, %s, %s)"
            " ON CONFLICT (signature) DO UPDATE SET owner = excluded.owner,"
            " leased_until = excluded.leased_until"
            " WHERE drafts.done_at IS NULL AND drafts.leased_until < %s RETURNING owner",
            (signature, owner, now + seconds, now),
        ).fetchone()
        return row is not None and row[0] == owner

    def draft_done(self, signature: str, owner: str) -> None:
        """Mark a signature's draft as written."""
        self._db.execute(
            "UPDATE drafts SET done_at = %s WHERE signature = %s AND owner = %s",
            (time.time(), signature, owner),
        )

    def signatures(self) -> list[StoredCrash]:
        """Return every signature, most recently seen first, with its hosts and releases."""
        rows = self._db.execute(
            "SELECT c.signature, c.title, c.type, c.frame, c.guilty_file, c.first_seen,"
            " c.last_seen, c.count,"
            " ARRAY(SELECT DISTINCT host FROM hits h WHERE h.signature = c.signature),"
            " ARRAY(SELECT DISTINCT release FROM hits h WHERE h.signature = c.signature"
            "       AND release IS NOT NULL),"
            " (SELECT min(crashed_at) FROM hits h WHERE h.signature = c.signature),"
            " (SELECT max(crashed_at) FROM hits h WHERE h.signature = c.signature),"
            " c.same_as, c.same_as_why"
            " FROM crashes c WHERE c.count > 0 ORDER BY c.last_seen DESC, c.signature"
        ).fetchall()
        return [_summary(r) for r in rows]

    def _named(self, prefix: str) -> list[StoredCrash]:
        return [r for r in self.signatures() if r.signature.startswith(prefix)][:2]

    def prune(self, before: float) -> int:
        """Drop the hits seen before ``before`` (Unix seconds) and the signatures left with
        none; return how many hits went. Counts of the signatures that stay are kept."""
        with self._db.transaction():
            gone = self._db.execute("DELETE FROM hits WHERE seen < %s", (before,)).rowcount
            self._db.execute(
                "DELETE FROM crashes c WHERE last_seen < %s"
                " AND NOT EXISTS (SELECT 1 FROM hits h WHERE h.signature = c.signature)",
                (before,),
            )
        return int(gone or 0)

    def import_hits(self, summary: StoredCrash, hits: list[Hit]) -> int:
        """Push one local signature's hits here (``kassist crashes sync``); return the new ones.

        Each hit keeps its own time, host, release and source, and is counted once.
        """
        new = 0
        with self._db.transaction():
            first = min((h.seen for h in hits), default=summary.first_seen)
            self._db.execute(
                "INSERT INTO crashes(signature, title, type, frame, guilty_file, first_seen,"
                " last_seen, count) VALUES (%s, %s, %s, %s, %s, %s, %s, 0)"
                " ON CONFLICT (signature) DO NOTHING",
                (summary.signature, summary.title, summary.type, summary.frame,
                 summary.guilty_file, first, first),
            )  # fmt: skip
            for h in hits:
                report = h.report.replace("\x00", "\ufffd")
                sha = hashlib.sha256(report.encode("utf-8")).hexdigest()
                row = self._db.execute(
                    "INSERT INTO hits(signature, seen, host, release, source, corrupted, report,"
                    " report_sha, crashed_at, uptime, sender)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (signature, host, source, report_sha) DO NOTHING RETURNING id",
                    (summary.signature, h.seen, h.host, h.release, h.source, int(h.corrupted),
                     report, sha, h.crashed_at, h.uptime, h.sender),
                ).fetchone()  # fmt: skip
                if row is not None:
                    new += 1
                    self._db.execute(
                        "UPDATE crashes SET count = count + 1,"
                        " last_seen = GREATEST(last_seen, %s), first_seen = LEAST(first_seen, %s)"
                        " WHERE signature = %s",
                        (h.seen, h.seen, summary.signature),
                    )
        return new


def _summary(row: tuple[Any, ...]) -> StoredCrash:
    return StoredCrash(
        signature=str(row[0]),
        title=str(row[1]),
        type=str(row[2]),
        frame=row[3],
        guilty_file=row[4],
        first_seen=float(row[5]),
        last_seen=float(row[6]),
        count=int(row[7]),
        hosts=sorted(row[8]),
        releases=sorted(row[9]),
        first_crashed=row[10],
        last_crashed=row[11],
        same_as=row[12],
        same_as_why=row[13],
    )


def _retryable() -> tuple[type[BaseException], ...]:
    # What the server aborts a batch with when another writer's order crossed ours: a
    # deadlock or a serialisation failure (psycopg is loaded by now: the store is open).
    from psycopg import errors

    return (errors.DeadlockDetected, errors.SerializationFailure)
