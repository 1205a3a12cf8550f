"""One migration runner for the assistant's SQLite databases.

Every database of the assistant (the crash store, the LLM log, and those to
come: chat history, knowledge base) declares its schema as a :class:`Schema`:
a name for messages and a tuple of numbered :class:`Migration` steps, append
only (never edit one that has shipped: add the next number). Opening the
database calls :func:`migrate`, which applies the steps the file has not seen:

>>> SCHEMA = Schema("chat history", (
...     Migration(1, ("CREATE TABLE turns (id INTEGER PRIMARY KEY, text TEXT NOT NULL)",)),
...     Migration(2, ("CREATE INDEX IF NOT EXISTS turns_by_id ON turns(id)",)),
... ))
>>> conn = sqlite3.connect(":memory:")
>>> migrate(conn, SCHEMA)   # the version the file was at
0
>>> migrate(conn, SCHEMA)   # safe to re-run: nothing left to do
2

The contract:

- ``PRAGMA user_version`` is the schema version: the number of the last step
  applied. A ``_migrations(number, applied_at)`` table keeps when each step
  ran (Unix seconds; ``NULL`` for steps applied before the table existed).
- Each step runs in its own ``BEGIN IMMEDIATE`` transaction together with its
  version bump, and the version is re-read inside it, so a process killed
  half-way leaves the previous version intact and two processes opening a new
  file at once do not apply a step twice. SQLite's DDL is transactional, so a
  failing statement leaves nothing of its step behind.
- A database whose version is newer than the code is refused with one
  :class:`SchemaTooNew` line (``the crash store at PATH has schema 3, newer
  than this kassist's 2: upgrade kassist, or move the file aside``); nothing
  in it is changed.
- Statements should still be idempotent where SQLite allows it (``IF NOT
  EXISTS``): a file whose version was reset by hand is then repaired, not
  broken. A new column is a :class:`Column` of its step, added only where it
  is missing (SQLite has no ``ADD COLUMN IF NOT EXISTS``).
- A database that predates ``user_version`` but recorded its steps in
  ``_migrations`` (the LLM log did) is adopted at the highest number recorded.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from assistant.errors import KassistError


@dataclass(frozen=True)
class Column:
    """A column a step adds to a table: ``ALTER TABLE table ADD COLUMN name decl``, run only
    when the table lacks it (SQLite has no ``ADD COLUMN IF NOT EXISTS``), so that the step
    stays safe to re-run.

    :param table: the table.
    :param name: the new column's name.
    :param decl: its type and constraints (``REAL``, ``TEXT NOT NULL DEFAULT ''``).
    """

    table: str
    name: str
    decl: str


@dataclass(frozen=True)
class Migration:
    """One numbered step of a schema.

    :param number: its version, 1 for the first step, each next step one more.
    :param statements: the SQL statements, run in order in one transaction.
    :param columns: columns added first, each only where it is missing.
    """

    number: int
    statements: tuple[str, ...]
    columns: tuple[Column, ...] = ()


@dataclass(frozen=True)
class Schema:
    """A database's schema as its numbered migrations.

    :param name: what a person calls the database (``the crash store``), for messages.
    :param migrations: the steps, numbered 1, 2, 3, ... in order.
    :raises ValueError: the steps are not numbered 1..N in order.
    """

    name: str
    migrations: tuple[Migration, ...]

    def __post_init__(self) -> None:
        numbers = [m.number for m in self.migrations]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(f"{self.name}: migrations must be numbered 1..N, not {numbers}")

    @property
    def version(self) -> int:
        """Return the version a database has once every step is applied."""
        return len(self.migrations)


class SchemaTooNew(KassistError):
    """The database was written by a newer kassist than this one."""


def schema_version(conn: sqlite3.Connection) -> int:
    """Return a database's schema version (``PRAGMA user_version``, 0 for a new file)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _database_path(conn: sqlite3.Connection) -> str:
    for _seq, name, file in conn.execute("PRAGMA database_list"):
        if name == "main":
            return str(file) or ":memory:"
    return "?"


def _adopt_legacy(conn: sqlite3.Connection) -> None:
    # The LLM log recorded its steps only in _migrations: carry that over to user_version.
    (highest,) = conn.execute("SELECT max(number) FROM _migrations").fetchone()
    if highest and schema_version(conn) == 0:
        conn.execute(f"PRAGMA user_version = {int(highest):d}")
    # The crash store recorded only user_version: give its steps a row (time unknown).
    conn.executemany(
        "INSERT OR IGNORE INTO _migrations(number, applied_at) VALUES (?, NULL)",
        [(n,) for n in range(1, schema_version(conn) + 1)],
    )


def check_not_newer(conn: sqlite3.Connection, schema: Schema) -> int:
    """Return the database's version, refusing one newer than ``schema``.

    :raises SchemaTooNew: its version is above :attr:`Schema.version`.
    """
    version = schema_version(conn)
    if version > schema.version:
        raise SchemaTooNew(
            f"{schema.name} at {Path(_database_path(conn))} has schema {version},"
            f" newer than this kassist's {schema.version}",
            "upgrade kassist, or move the file aside",
        )
    return version


def migrate(conn: sqlite3.Connection, schema: Schema) -> int:
    """Apply the steps of ``schema`` that the database has not seen; return its prior version.

    The connection's ``isolation_level`` is restored afterwards; the steps run
    with explicit transactions whatever it was.

    :param conn: an open connection to the database (a new, empty file is version 0).
    :param schema: the database's migrations.
    :return: the version the database was at before (0 for a new file).
    :raises SchemaTooNew: the database is newer than ``schema``.
    :raises sqlite3.Error: a step failed (its transaction was rolled back).
    """
    saved = conn.isolation_level
    conn.isolation_level = None
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            check_not_newer(conn, schema)
            conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations"
                " (number INTEGER PRIMARY KEY, applied_at REAL)"
            )
            _adopt_legacy(conn)
            start = check_not_newer(conn, schema)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        for step in schema.migrations[start:]:
            _apply(conn, schema, step)
    finally:
        conn.isolation_level = saved
    return start


def _apply(conn: sqlite3.Connection, schema: Schema, step: Migration) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Another process may have applied it since we looked.
        if check_not_newer(conn, schema) < step.number:
            for column in step.columns:
                _add_column(conn, column)
            for sql in step.statements:
                conn.execute(sql)
            conn.execute(
                "INSERT OR REPLACE INTO _migrations(number, applied_at) VALUES (?, ?)",
                (step.number, time.time()),
            )
            conn.execute(f"PRAGMA user_version = {step.number:d}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _add_column(conn: sqlite3.Connection, column: Column) -> None:
    names = {row[1] for row in conn.execute(f'PRAGMA table_info("{column.table}")')}
    if column.name not in names:
        conn.execute(f'ALTER TABLE "{column.table}" ADD COLUMN "{column.name}" {column.decl}')
