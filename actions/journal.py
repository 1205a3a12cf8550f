"""The crash-safe journal: SQLite in WAL mode (default ``/var/lib/kassist/journal.db``).

A changeset moves ``validated -> applying -> applied -> verified``, or on any
failure ``-> failed -> rolled_back``; an explicit rollback goes ``verified ->
rolling_back -> rolled_back``. Every change keeps its value before and after,
who asked, why and the evidence, so that a restarted agent can finish or undo
whatever a crash interrupted. ``synchronous=NORMAL``: a killed process loses
nothing (WAL); a power cut may lose the last transactions, never corrupt.

A full file system (``SQLITE_FULL``) aborts a transaction whole. The journal holds
a reserve beside its file (:class:`~actions.files.Reserve`): a transaction that meets
a full disk gives the reserve up and runs once more, so an operation under way can
record its end; :meth:`Journal.ready` tells the agent whether the next one may start.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from actions.errors import StorageError, StorageFull
from actions.files import RESERVE, Reserve, no_symlink, open_private, private_dir
from actions.model import Change, Changeset

T = TypeVar("T")

#: States in which a changeset is still in flight (the agent finishes or undoes them on start).
UNFINISHED = ("validated", "applying", "applied", "rolling_back")

# Numbered migrations, safe to re-run: user_version says how many have been applied.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE changesets (
        id INTEGER PRIMARY KEY,
        created REAL NOT NULL,
        updated REAL NOT NULL,
        state TEXT NOT NULL,
        who TEXT NOT NULL,
        persist INTEGER NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE changes (
        changeset_id INTEGER NOT NULL REFERENCES changesets(id),
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        old TEXT NOT NULL,
        new TEXT NOT NULL,
        risk TEXT NOT NULL,
        state TEXT NOT NULL,
        rec_id TEXT NOT NULL,
        rationale TEXT NOT NULL,
        evidence TEXT NOT NULL,
        expected_effect TEXT NOT NULL,
        source TEXT NOT NULL,
        PRIMARY KEY (changeset_id, seq)
    );
    CREATE INDEX changes_by_target ON changes(kind, target);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        changeset_id INTEGER,
        at REAL NOT NULL,
        event TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    CREATE INDEX events_by_changeset ON events(changeset_id);
    """,
    # The keys the agent manages, found without scanning the whole history.
    """
    CREATE INDEX changes_managed ON changes(kind, target, changeset_id) WHERE state = 'verified';
    """,
)


class Journal:
    """The journal at ``path``; one SQLite connection per thread.

    :param path: the database file (created mode 0600, with its directory, mode 0700;
        never through a symlink).
    :param reserve: bytes held back on its file system (0: none).
    :raises ActionError: the file or its directory is a symlink or someone else's.
    """

    def __init__(self, path: Path, reserve: int = RESERVE) -> None:
        self.path = path
        private_dir(path.parent)
        # SQLite gives its -wal and -shm files the database file's mode: create it 0600.
        os.close(open_private(path, os.O_RDWR))
        for suffix in ("-wal", "-shm", "-journal"):
            no_symlink(path.with_name(path.name + suffix))
        self._local = threading.local()
        self._commits = 0
        self.reserve = Reserve(path.with_name(f".{path.name}.reserve"), reserve)
        with contextlib.suppress(OSError):  # ready() says so before the kernel is written
            self.reserve.ensure()
        self._migrate()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints (the only fsyncs) run from checkpoint(), off the apply path.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            # A checkpoint cuts the WAL back to this (bytes): a burst does not keep its space.
            conn.execute(f"PRAGMA journal_size_limit={4 << 20}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    def _write(self, body: Callable[[sqlite3.Connection], T]) -> T:
        # One transaction (BEGIN IMMEDIATE ... COMMIT). On a full disk SQLite aborts it
        # whole; it runs once more in the space the reserve held.
        for attempt in (1, 2):
            try:
                return self._tx(body)
            except sqlite3.Error as exc:
                if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
                    raise StorageError(
                        f"the journal {self.path} cannot record ({exc})", "see the agent's log"
                    ) from exc
                if attempt == 2 or not self.reserve.release():
                    raise StorageFull(
                        f"the journal {self.path} cannot record: its file system is full",
                        "free space there",
                    ) from None
        raise AssertionError("unreachable")

    def _tx(self, body: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            out = body(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                conn.execute("ROLLBACK")
            raise
        # A safety net when nobody calls checkpoint(): never let the WAL grow without bound.
        self._commits += 1
        if self._commits % 2000 == 0:
            self.checkpoint()
        return out

    def ready(self) -> str | None:
        """Hold the reserve; return why it cannot be held, or ``None`` when ready.

        A WAL grown over a full disk is cut back first (a truncating checkpoint).
        """
        try:
            if self.reserve.ensure():
                return None
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if self.reserve.ensure():
                return None
        except (OSError, sqlite3.Error) as exc:
            return f"the journal's reserve cannot be allocated ({exc})"
        return f"the journal's file system ({self.path.parent}) is full: free space there"

    def _migrate(self) -> None:
        def run(conn: sqlite3.Connection) -> None:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            for i, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={i}")

        self._write(run)

    def checkpoint(self) -> None:
        """Copy the WAL into the database file (a passive checkpoint: never blocks writers)."""
        self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- writing ----------------------------------------------------------------------

    def create(
        self,
        changes: Sequence[Change],
        who: dict[str, Any],
        persist: bool,
        now: float | None = None,
    ) -> int:
        """Journal a validated changeset with its old and new values.

        :param now: its creation time (seconds since the epoch; default: now).
        :return: the changeset's id.
        :raises StorageError: the journal cannot record (nothing was recorded).
        """
        now = time.time() if now is None else now

        def run(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO changesets (created, updated, state, who, persist)"
                " VALUES (?, ?, 'validated', ?, ?)",
                (now, now, json.dumps(who), int(persist)),
            )
            cs_id = int(cur.lastrowid or 0)
            conn.executemany(
                "INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (cs_id, seq, c.kind, c.target, c.old, c.new, c.risk, c.state, c.rec_id,
                     c.rationale, json.dumps(c.evidence), c.expected_effect, c.source)
                    for seq, c in enumerate(changes)
                ],
            )  # fmt: skip
            self._event(conn, cs_id, "validated", {"changes": len(changes)})
            return cs_id

        return self._write(run)

    def set_state(
        self,
        cs_id: int,
        state: str,
        error: str = "",
        change_state: str | None = None,
        changes: Mapping[int, str] | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Move a changeset to ``state``, in one transaction with its changes' states.

        :param change_state: the state of every change (optional).
        :param changes: seq -> the state of that change (optional; after ``change_state``).
        :param detail: more for the state's event (optional).
        :raises StorageError: the journal cannot record (nothing was recorded).
        """

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE changesets SET state = ?, updated = ?, error = CASE WHEN ? = '' "
                "THEN error ELSE ? END WHERE id = ?",
                (state, time.time(), error, error, cs_id),
            )
            if change_state is not None:
                conn.execute(
                    "UPDATE changes SET state = ? WHERE changeset_id = ?", (change_state, cs_id)
                )
            for seq, one in (changes or {}).items():
                conn.execute(
                    "UPDATE changes SET state = ? WHERE changeset_id = ? AND seq = ?",
                    (one, cs_id, seq),
                )
            about = {"error": error} if error else {}
            self._event(conn, cs_id, state, {**about, **(detail or {})})

        self._write(run)

    def set_change_state(self, cs_id: int, seq: int, state: str) -> None:
        """Move one change of a changeset to ``state``."""
        self._write(
            lambda conn: conn.execute(
                "UPDATE changes SET state = ? WHERE changeset_id = ? AND seq = ?",
                (state, cs_id, seq),
            )
        )

    def verified(self, cs_id: int) -> None:
        """Mark a changeset and its changes verified; earlier changes of its keys superseded."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE changesets SET state = 'verified', updated = ? WHERE id = ?",
                (time.time(), cs_id),
            )
            keys = conn.execute(
                "SELECT kind, target FROM changes WHERE changeset_id = ?", (cs_id,)
            ).fetchall()
            for kind, target in keys:
                conn.execute(
                    "UPDATE changes SET state = 'superseded' WHERE kind = ? AND target = ? "
                    "AND state = 'verified' AND changeset_id < ?",
                    (kind, target, cs_id),
                )
            conn.execute("UPDATE changes SET state = 'verified' WHERE changeset_id = ?", (cs_id,))
            self._event(conn, cs_id, "verified", {})

        self._write(run)

    def rolled_back(self, cs: Changeset, restored: Sequence[int]) -> None:
        """Close a rollback in one transaction: the changeset ``rolled_back``, each restored
        change too, and each of its keys handed back to the latest earlier verified
        changeset that managed it (``superseded`` -> ``verified``).

        :param restored: the seqs of the changes restored to their old value.
        """

        def run(conn: sqlite3.Connection) -> None:
            for seq in restored:
                c = cs.changes[seq]
                conn.execute(
                    "UPDATE changes SET state = 'rolled_back' WHERE changeset_id = ? AND seq = ?",
                    (cs.id, seq),
                )
                row = conn.execute(
                    "SELECT changes.changeset_id, changes.seq FROM changes"
                    " JOIN changesets ON changesets.id = changes.changeset_id"
                    " WHERE kind = ? AND target = ? AND changes.state = 'superseded'"
                    " AND changes.changeset_id < ? AND changesets.state = 'verified'"
                    " ORDER BY changes.changeset_id DESC LIMIT 1",
                    (c.kind, c.target, cs.id),
                ).fetchone()
                if row is not None:
                    conn.execute(
                        "UPDATE changes SET state = 'verified' WHERE changeset_id = ? AND seq = ?",
                        (row[0], row[1]),
                    )
            conn.execute(
                "UPDATE changesets SET state = 'rolled_back', updated = ? WHERE id = ?",
                (time.time(), cs.id),
            )
            self._event(conn, cs.id, "rolled_back", {})

        self._write(run)

    def event(self, cs_id: int | None, event: str, detail: dict[str, Any]) -> None:
        """Record an event (a rollback request, an override, a recovery...)."""
        self._write(lambda conn: self._event(conn, cs_id, event, detail))

    @staticmethod
    def _event(
        conn: sqlite3.Connection, cs_id: int | None, event: str, detail: dict[str, Any]
    ) -> None:
        conn.execute(
            "INSERT INTO events (changeset_id, at, event, detail) VALUES (?, ?, ?, ?)",
            (cs_id, time.time(), event, json.dumps(detail)),
        )

    # --- reading ----------------------------------------------------------------------

    def get(self, cs_id: int, with_events: bool = True) -> Changeset | None:
        """Return one changeset with its changes (and events), or ``None``."""
        conn = self._conn()
        row = conn.execute("SELECT * FROM changesets WHERE id = ?", (cs_id,)).fetchone()
        if row is None:
            return None
        return self._changeset(conn, row, with_events)

    def _changeset(
        self, conn: sqlite3.Connection, row: sqlite3.Row, with_events: bool
    ) -> Changeset:
        changes = [
            _change(c)
            for c in conn.execute(
                "SELECT * FROM changes WHERE changeset_id = ? ORDER BY seq", (row["id"],)
            )
        ]
        events = []
        if with_events:
            events = [
                {"at": e["at"], "event": e["event"], **json.loads(e["detail"])}
                for e in conn.execute(
                    "SELECT * FROM events WHERE changeset_id = ? ORDER BY id", (row["id"],)
                )
            ]
        return Changeset(
            id=row["id"],
            state=row["state"],
            created=row["created"],
            updated=row["updated"],
            changes=changes,
            who=json.loads(row["who"]),
            persist=bool(row["persist"]),
            error=row["error"],
            events=events,
        )

    def history(self, limit: int = 50, since: float = 0.0) -> list[Changeset]:
        """Return the latest changesets, newest first."""
        conn = self._conn()
        rows = conn.execute(
            "SELECT * FROM changesets WHERE created >= ? ORDER BY id DESC LIMIT ?",
            (since, limit),
        ).fetchall()
        return [self._changeset(conn, r, with_events=False) for r in rows]

    def in_states(self, states: Sequence[str]) -> list[Changeset]:
        """Return the changesets in any of ``states``, oldest first."""
        conn = self._conn()
        marks = ",".join("?" * len(states))
        rows = conn.execute(
            f"SELECT * FROM changesets WHERE state IN ({marks}) ORDER BY id", tuple(states)
        ).fetchall()
        return [self._changeset(conn, r, with_events=False) for r in rows]

    def ids_since(self, since: float) -> list[int]:
        """Return the ids of changesets created at or after ``since``, newest first."""
        rows = self._conn().execute(
            "SELECT id FROM changesets WHERE created >= ? ORDER BY id DESC", (since,)
        )
        return [int(r[0]) for r in rows]

    def later_change(self, kind: str, target: str, after_id: int) -> int | None:
        """Return the id of a later changeset that still manages the key, if any."""
        row = (
            self._conn()
            .execute(
                "SELECT changeset_id FROM changes"
                " WHERE kind = ? AND target = ? AND changeset_id > ?"
                " AND state IN ('verified', 'written', 'pending') ORDER BY changeset_id LIMIT 1",
                (kind, target, after_id),
            )
            .fetchone()
        )
        return None if row is None else int(row[0])

    def recent_times(self, within: float = 3600.0) -> list[tuple[str, str, float]]:
        """Return ``(kind, target, created)`` of every change attempted in the last ``within`` s.

        Changesets never journaled past ``validated`` are not counted; oldest first.
        """
        rows = self._conn().execute(
            "SELECT kind, target, changesets.created FROM changes"
            " JOIN changesets ON changesets.id = changes.changeset_id"
            " WHERE changesets.created >= ? AND changesets.state != 'validated'"
            " ORDER BY changesets.created",
            (time.time() - within,),
        )
        return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]

    def managed(self) -> list[tuple[int, int, Change]]:
        """Return the keys the agent manages: ``(changeset id, seq, change)`` in state verified."""
        rows = self._conn().execute(
            "SELECT * FROM changes WHERE state = 'verified' ORDER BY changeset_id, seq"
        )
        return [(int(r["changeset_id"]), int(r["seq"]), _change(r)) for r in rows]

    def persisted(self) -> list[tuple[int, Change]]:
        """Return the managed sysctl changes of changesets that asked to persist."""
        rows = self._conn().execute(
            "SELECT changes.* FROM changes"
            " JOIN changesets ON changesets.id = changes.changeset_id"
            " WHERE changes.state = 'verified' AND changesets.persist = 1 AND kind = 'sysctl'"
            " ORDER BY changeset_id, seq"
        )
        return [(int(r["changeset_id"]), _change(r)) for r in rows]

    def unpersisted(self) -> list[int]:
        """Return the verified changesets that asked to persist but were never persisted."""
        rows = self._conn().execute(
            "SELECT id FROM changesets WHERE state = 'verified' AND persist = 1 AND NOT EXISTS"
            " (SELECT 1 FROM events WHERE events.changeset_id = changesets.id"
            " AND events.event = 'persisted') ORDER BY id"
        )
        return [int(r[0]) for r in rows]

    def overridden(self) -> list[tuple[int, Change]]:
        """Return the changes someone else overrode (the agent no longer manages them)."""
        rows = self._conn().execute(
            "SELECT * FROM changes WHERE state = 'overridden' ORDER BY changeset_id, seq"
        )
        return [(int(r["changeset_id"]), _change(r)) for r in rows]

    def counts(self) -> dict[str, int]:
        """Return how many changesets are in each state."""
        rows = self._conn().execute("SELECT state, COUNT(*) FROM changesets GROUP BY state")
        return {str(r[0]): int(r[1]) for r in rows}


def _change(row: sqlite3.Row) -> Change:
    return Change(
        kind=row["kind"],
        target=row["target"],
        old=row["old"],
        new=row["new"],
        risk=row["risk"],
        state=row["state"],
        rec_id=row["rec_id"],
        rationale=row["rationale"],
        evidence=json.loads(row["evidence"]),
        expected_effect=row["expected_effect"],
        source=row["source"],
    )
