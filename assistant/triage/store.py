"""The crash store: every crash kassist has triaged, grouped by signature, in SQLite.

``$XDG_STATE_HOME/kassist/crashes.db`` (``/var/lib/kassist/crashes.db`` for root
without ``XDG_STATE_HOME``; see :func:`assistant.config.user_state_dir`). One row
per signature holds its title, type, first and last seen, and hit count; each
hit keeps the host, kernel release, source, the raw report and when the kernel
crashed (:mod:`assistant.triage.store_model`, the contract both backends keep).
The schema is built by numbered migrations (:mod:`assistant.db`); each runs in
its own transaction and is safe to re-run.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from assistant.config import user_state_dir
from assistant.db import Column, Migration, Schema
from assistant.db import migrate as run_migrations
from assistant.errors import KassistError
from assistant.triage.model import Crash
from assistant.triage.store_model import (
    DRAFT_LEASE_SECONDS,
    Store,
    StoredCrash,
    best_link,
    features_json,
    read_features,
    stored_report,
)

#: The store's numbered migrations. Append only: never edit one that has shipped.
SCHEMA = Schema(
    "the crash store",
    (
        Migration(
            1,
            (
                """CREATE TABLE IF NOT EXISTS crashes (
                    signature  TEXT PRIMARY KEY,
                    title      TEXT NOT NULL,
                    type       TEXT NOT NULL,
                    frame      TEXT,
                    guilty_file TEXT,
                    first_seen REAL NOT NULL,
                    last_seen  REAL NOT NULL,
                    count      INTEGER NOT NULL DEFAULT 0
                )""",
                """CREATE TABLE IF NOT EXISTS hits (
                    id        INTEGER PRIMARY KEY AUTOINCREMENT,
                    signature TEXT NOT NULL REFERENCES crashes(signature),
                    seen      REAL NOT NULL,
                    host      TEXT NOT NULL,
                    release   TEXT,
                    source    TEXT NOT NULL,
                    corrupted INTEGER NOT NULL DEFAULT 0,
                    report    TEXT NOT NULL
                )""",
                "CREATE INDEX IF NOT EXISTS hits_by_signature ON hits(signature, seen)",
            ),
        ),
        Migration(
            2,
            (
                # A log triaged twice must not count its crashes twice.
                "CREATE UNIQUE INDEX IF NOT EXISTS hits_once"
                " ON hits(signature, host, source, report)",
            ),
        ),
        Migration(
            3,
            (),
            # When the kernel crashed, beside when kassist stored it (``seen``).
            (Column("hits", "crashed_at", "REAL"), Column("hits", "uptime", "REAL")),
        ),
        Migration(
            4,
            (
                # One draft per new signature across the receivers of a store: a lease.
                """CREATE TABLE IF NOT EXISTS drafts (
                    signature    TEXT PRIMARY KEY,
                    owner        TEXT NOT NULL,
                    leased_until REAL NOT NULL,
                    done_at      REAL
                )""",
            ),
            # What crash similarity compares, and the link it found (non-binding).
            (
                Column("crashes", "features", "TEXT"),
                Column("crashes", "same_as", "TEXT"),
                Column("crashes", "same_as_why", "TEXT"),
            ),
        ),
        Migration(
            5,
            (),
            # The network address a receiver got the report from (beside its host's name).
            (Column("hits", "sender", "TEXT"),),
        ),
    ),
)
SCHEMA_VERSION = SCHEMA.version


def default_path() -> Path:
    """Return the store's default path."""
    return user_state_dir() / "crashes.db"


class CrashStore(Store):
    """An open crash store. Use as a context manager, or call :meth:`close`.

    :param path: the database file; created (with its directory) if missing.
    :raises KassistError: the file cannot be opened or is not a kassist store.
    """

    path: Path
    _MARK = "?"

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._unusable(exc) from None
        try:
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._conn.execute("PRAGMA journal_mode = WAL")
            migrate(self._conn)
        except (OSError, sqlite3.Error, KassistError) as exc:
            self._conn.close()
            if isinstance(exc, KassistError):  # newer than this kassist
                raise
            raise self._unusable(exc) from None

    def _unusable(self, exc: Exception) -> KassistError:
        return KassistError(
            f"cannot open the crash store {self.path}: {exc}",
            "check its permissions, or set XDG_STATE_HOME to a writable directory",
        )

    @property
    def _db(self) -> sqlite3.Connection:
        return self._conn

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _record(
        self, crashes: list[Crash], source: str, host: str, now: float, sender: str | None
    ) -> int:
        new = 0
        with self._transaction() as db:
            for c in crashes:
                fresh = db.execute(
                    "INSERT INTO crashes(signature, title, type, frame, guilty_file, first_seen,"
                    " last_seen, count, features) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)"
                    " ON CONFLICT(signature) DO NOTHING",
                    (c.signature, c.title, c.type, c.frame, c.guilty_file, now, now,
                     features_json(c)),
                ).rowcount  # fmt: skip
                if fresh:
                    self._link(db, c.signature)
                cur = db.execute(
                    "INSERT OR IGNORE INTO hits(signature, seen, host, release, source, corrupted,"
                    " report, crashed_at, uptime, sender) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (c.signature, now, host, c.kernel.release, source, int(c.corrupted),
                     stored_report(c), c.time.wall, c.time.uptime, sender),
                )  # fmt: skip
                if cur.rowcount:
                    new += 1
                    db.execute(
                        "UPDATE crashes SET count = count + 1, last_seen = max(last_seen, ?),"
                        " first_seen = min(first_seen, ?) WHERE signature = ?",
                        (now, now, c.signature),
                    )
        return new

    def _link(self, db: sqlite3.Connection, signature: str) -> None:
        # A new signature: probably the same bug as one stored before? (non-binding)
        (mine,) = db.execute(
            "SELECT features FROM crashes WHERE signature = ?", (signature,)
        ).fetchone()
        others = db.execute(
            "SELECT signature, features FROM crashes WHERE signature != ? AND count > 0",
            (signature,),
        ).fetchall()
        found = best_link(read_features(mine), others)
        if found is not None:
            db.execute("UPDATE crashes SET same_as = ?, same_as_why = ? WHERE signature = ?",
                       (found[0], found[1].text(), signature))  # fmt: skip

    def lease_draft(self, signature: str, owner: str, seconds: float = DRAFT_LEASE_SECONDS,
                    now: float | None = None) -> bool:  # fmt: skip
        """Take the lease on drafting a new signature (see the contract)."""
        now = time.time() if now is None else now
        with self._transaction() as db:
            db.execute(
                "INSERT INTO drafts(signature, owner, leased_until) VALUES (?, ?, ?)"
                " ON CONFLICT(signature) DO UPDATE SET owner = excluded.owner,"
                " leased_until = excluded.leased_until"
                " WHERE drafts.done_at IS NULL AND drafts.leased_until < ?",
                (signature, owner, now + seconds, now),
            )
            row = db.execute(
                "SELECT owner, done_at FROM drafts WHERE signature = ?", (signature,)
            ).fetchone()
        return row is not None and row[0] == owner and row[1] is None

    def draft_done(self, signature: str, owner: str) -> None:
        """Mark a signature's draft as written."""
        with self._transaction() as db:
            db.execute("UPDATE drafts SET done_at = ? WHERE signature = ? AND owner = ?",
                       (time.time(), signature, owner))  # fmt: skip

    def signatures(self) -> list[StoredCrash]:
        """Return every signature, most recently seen first."""
        rows = self._db.execute(
            "SELECT signature, title, type, frame, guilty_file, first_seen, last_seen, count,"
            " same_as, same_as_why"
            " FROM crashes WHERE count > 0 ORDER BY last_seen DESC, signature"
        ).fetchall()
        return [self._summary(r) for r in rows]

    def _named(self, prefix: str) -> list[StoredCrash]:
        rows = self._db.execute(
            "SELECT signature, title, type, frame, guilty_file, first_seen, last_seen, count,"
            " same_as, same_as_why"
            " FROM crashes WHERE signature LIKE ? || '%' AND count > 0 LIMIT 2",
            (prefix,),
        ).fetchall()
        return [self._summary(r) for r in rows]

    def prune(self, before: float) -> int:
        """Drop the hits seen before ``before`` (Unix seconds) and the signatures left with
        none; return how many hits went. Counts of the signatures that stay are kept."""
        with self._transaction() as db:
            gone = db.execute("DELETE FROM hits WHERE seen < ?", (before,)).rowcount
            db.execute(
                "DELETE FROM crashes WHERE last_seen < ? AND NOT EXISTS"
                " (SELECT 1 FROM hits WHERE hits.signature = crashes.signature)",
                (before,),
            )
        return int(gone)

    def _summary(self, row: tuple[object, ...]) -> StoredCrash:
        sig = str(row[0])
        hosts = [
            h
            for (h,) in self._db.execute("SELECT DISTINCT host FROM hits WHERE signature=?", (sig,))
        ]
        releases = [
            r
            for (r,) in self._db.execute(
                "SELECT DISTINCT release FROM hits WHERE signature=? AND release IS NOT NULL",
                (sig,),
            )
        ]
        first_crashed, last_crashed = self._db.execute(
            "SELECT min(crashed_at), max(crashed_at) FROM hits WHERE signature=?", (sig,)
        ).fetchone()
        return StoredCrash(
            signature=sig,
            title=str(row[1]),
            type=str(row[2]),
            frame=None if row[3] is None else str(row[3]),
            guilty_file=None if row[4] is None else str(row[4]),
            first_seen=float(str(row[5])),
            last_seen=float(str(row[6])),
            count=int(str(row[7])),
            hosts=sorted(hosts),
            releases=sorted(releases),
            first_crashed=first_crashed,
            last_crashed=last_crashed,
            same_as=None if row[8] is None else str(row[8]),
            same_as_why=None if row[9] is None else str(row[9]),
        )


def migrate(db: sqlite3.Connection) -> int:
    """Bring a database to :data:`SCHEMA_VERSION`; return the version it was at.

    :raises SchemaTooNew: the database is newer than this kassist.
    """
    return run_migrations(db, SCHEMA)


def open_readonly_check(path: Path) -> bool:
    """Tell whether a store exists at ``path`` (without creating it)."""
    if not path.exists():
        return False
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
    return int(version) > 0
