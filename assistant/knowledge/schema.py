"""The knowledge base's SQLite schema, built by the assistant's one migration runner.

The database is a build artefact: a new migration means a new file (the cache key
includes :data:`SCHEMA_VERSION`), never an in-place upgrade of a cached one.
"""

from __future__ import annotations

import sqlite3

from assistant.db import Migration, Schema, migrate

_STATEMENTS = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # One row per documentation section; docs_fts indexes its title and text (BM25).
    """CREATE TABLE docs (
        id     INTEGER PRIMARY KEY,
        path   TEXT NOT NULL,
        title  TEXT NOT NULL,
        anchor TEXT NOT NULL,
        level  INTEGER NOT NULL,
        line   INTEGER NOT NULL,
        text   TEXT NOT NULL
    )""",
    "CREATE INDEX docs_by_path ON docs(path, line)",
    """CREATE VIRTUAL TABLE docs_fts USING fts5(
        title, text, content='docs', content_rowid='id', tokenize='porter unicode61'
    )""",
    # MAINTAINERS: each section's lines in file order (F:/X: as get_maintainer.pl converts them).
    """CREATE TABLE maintainers (
        section INTEGER NOT NULL,
        name    TEXT NOT NULL,
        seq     INTEGER NOT NULL,
        kind    TEXT NOT NULL,
        value   TEXT NOT NULL,
        PRIMARY KEY (section, seq)
    )""",
    "CREATE TABLE mailmap (kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL)",
    # Every file of the tree, with the sections whose K: keywords its text contains.
    # file_emails: the addresses a .yaml file names, one a line (get_maintainer.pl adds them).
    """CREATE TABLE tree_files (
        path             TEXT PRIMARY KEY,
        keyword_sections TEXT NOT NULL,
        file_emails      TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID""",
    "CREATE TABLE tree_dirs (path TEXT PRIMARY KEY) WITHOUT ROWID",
    # The sysctls the documentation describes (section titles and definition-list terms).
    """CREATE TABLE sysctl_docs (
        id        INTEGER PRIMARY KEY,
        name      TEXT NOT NULL,
        directory TEXT NOT NULL,
        doc       INTEGER NOT NULL REFERENCES docs(id),
        title     TEXT NOT NULL,
        text      TEXT NOT NULL
    )""",
    "CREATE INDEX sysctl_docs_by_name ON sysctl_docs(name)",
    # The sysctls the C sources define (struct ctl_table entries at resolved directories).
    """CREATE TABLE sysctls (
        name      TEXT NOT NULL,
        directory TEXT NOT NULL,
        procname  TEXT NOT NULL,
        tbl       TEXT NOT NULL,
        source    TEXT NOT NULL,
        line      INTEGER NOT NULL,
        handler   TEXT NOT NULL,
        minimum   INTEGER,
        maximum   INTEGER,
        dflt      TEXT,
        maxlen    TEXT NOT NULL,
        mode      TEXT NOT NULL,
        data      TEXT NOT NULL,
        extra1    TEXT NOT NULL,
        extra2    TEXT NOT NULL,
        doc       INTEGER REFERENCES sysctl_docs(id),
        PRIMARY KEY (name, source, line)
    )""",
    "CREATE INDEX sysctls_by_name ON sysctls(name)",
)


#: The knowledge base's migrations: add a step when the tables or what the builder puts in
#: them change (that is a new cache file).
SCHEMA = Schema("the knowledge base", (Migration(1, _STATEMENTS),))
SCHEMA_VERSION = SCHEMA.version
#: What the builder extracts into that schema; bump it when extraction changes (e.g. the
#: per-device and per-namespace ctl_tables of version 2), so that a cached file built by
#: an older kassist is not read as if it held the new content.
BUILDER_VERSION = 2


def create_schema(conn: sqlite3.Connection) -> None:
    """Create every table of an empty knowledge base."""
    migrate(conn, SCHEMA)
