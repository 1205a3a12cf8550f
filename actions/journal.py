"""The crash-safe journal: SQLite in WAL mode (default ``/var/lib/kassist/journal.db``).

A changeset moves ``validated -> applying -> applied -> verified``, or on any
failure ``-> failed -> rolled_back``; an explicit rollback goes ``verified ->
rolling_back -> rolled_back``. Every change keeps its value before and after,
who asked, why and the evidence, so that a restarted agent can finish or undo
whatever a crash interrupted. ``synchronous=NORMAL``: a killed process loses
nothing (WAL); a power cut may lose the last transactions, never corrupt.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from actions.files import no_symlink, open_private, private_dir
from actions.model import Change, Changeset

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
    :raises ActionError: the file or its directory is a symlink or someone else's.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        private_dir(path.parent)
        # SQLite gives its -wal and -shm files the database file's mode: create it 0600.
        os.close(open_private(path, os.O_RDWR))
        for suffix in ("-wal", "-shm", "-journal"):
            no_symlink(path.with_name(path.name + suffix))
        self._local = threading.local()
        self._commits = 0
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
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        # A safety net when nobody calls checkpoint(): never let the WAL grow without bound.
        self._commits += 1
        if self._commits % 2000 == 0:
            self.checkpoint()

    def _migrate(self) -> None:
        with self._tx() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            for i, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={i}")

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
        """
        now = time.time() if now is None else now
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO changesets (created, updated, state, who, persist)"
                " VALUES (?, ?, 'validated', ?, ?)",
                (now, now, json.dumps(who), int(persist)),
            )
            cs_id = int(cur.lastrowid or 0)
            for seq, c in enumerate(changes):
                conn.execute(
                    "INSERT INTO changes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cs_id,
                        seq,
                        c.kind,
                        c.target,
                        c.old,
                        c.new,
                        c.risk,
                        c.state,
                        c.rec_id,
                        c.rationale,
                        json.dumps(c.evidence),
                        c.expected_effect,
                        c.source,
                    ),
                )
            self._event(conn, cs_id, "validated", {"changes": len(changes)})
        return cs_id

    def set_state(
        self, cs_id: int, state: str, error: str = "", change_state: str | None = None
    ) -> None:
        """Move a changeset to ``state`` (and, optionally, every change to ``change_state``)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE changesets SET state = ?, updated = ?, error = CASE WHEN ? = '' "
                "THEN error ELSE ? END WHERE id = ?",
                (state, time.time(), error, error, cs_id),
            )
            if change_state is not None:
                conn.execute(
                    "UPDATE changes SET state = ? WHERE changeset_id = ?", (change_state, cs_id)
                )
            self._event(conn, cs_id, state, {"error": error} if error else {})

    def set_change_state(self, cs_id: int, seq: int, state: str) -> None:
        """Move one change of a changeset to ``state``."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE changes SET state = ? WHERE changeset_id = ? AND seq = ?",
                (state, cs_id, seq),
            )

    def verified(self, cs_id: int) -> None:
        """Mark a changeset and its changes verified; earlier changes of its keys superseded."""
        with self._tx() as conn:
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

    def unsupersede(self, kind: str, target: str, after_id: int) -> None:
        """Hand a key back to the latest earlier changeset that managed it (after a rollback)."""
        with self._tx() as conn:
            row = conn.execute(
                "SELECT changeset_id, seq FROM changes WHERE kind = ? AND target = ? "
                "AND state = 'superseded' AND changeset_id < ? "
                "ORDER BY changeset_id DESC LIMIT 1",
                (kind, target, after_id),
            ).fetchone()
            if row is not None:
                conn.execute(
                    "UPDATE changes SET state = 'verified' WHERE changeset_id = ? AND seq = ?",
                    (row["changeset_id"], row["seq"]),
                )

    def event(self, cs_id: int | None, event: str, detail: dict[str, Any]) -> None:
        """Record an event (a rollback request, an override, a recovery...)."""
        with self._tx() as conn:
            self._event(conn, cs_id, event, detail)

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
