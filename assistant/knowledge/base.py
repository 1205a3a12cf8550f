"""The built knowledge base, read-only: search, maintainers, sysctls; and where it lives.

Locations, first found wins: ``$KASSIST_KB`` (a file), the user's
``$XDG_CACHE_HOME/kassist/kb/``, then the shared ``/var/cache/kassist/kb/`` that
``setup.sh`` fills as root. A file is named by the source package version and
the schema and builder versions (``linux-source-6.1_6.1.192-3.s1b2.sqlite``), so a fresh
checkout reuses it and a new package or builder makes a new one.
"""

from __future__ import annotations

import os
import platform
import re
import sqlite3
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

from assistant.knowledge import maintainers as mnt
from assistant.knowledge.model import DocHit, KnowledgeUnavailable, Subsystem, SysctlDef
from assistant.knowledge.schema import BUILDER_VERSION, SCHEMA_VERSION
from assistant.knowledge.sources import SOURCE_PACKAGE, package_version

SHARED_DIR = Path("/var/cache/kassist/kb")
BUILD_HINT = "build it with `kassist kb build` (or ./setup.sh as root)"


def user_dir() -> Path:
    """Return ``$XDG_CACHE_HOME/kassist/kb`` (default ``~/.cache/kassist/kb``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kassist" / "kb"


def default_dir() -> Path:
    """Return where ``kassist kb build`` writes: the shared cache as root, else the user's."""
    return SHARED_DIR if os.geteuid() == 0 else user_dir()


def file_name(source_version: str | None) -> str:
    """Return the cache file name for a source package version, this schema and builder."""
    version = re.sub(r"[^A-Za-z0-9.+~-]", "_", source_version or "unknown")
    return f"{SOURCE_PACKAGE}_{version}.s{SCHEMA_VERSION}b{BUILDER_VERSION}.sqlite"


def candidates(source_version: str | None = None) -> list[Path]:
    """Return the files :func:`open_default` tries, in order."""
    env = os.environ.get("KASSIST_KB")
    if env:
        return [Path(env)]
    name = file_name(
        source_version if source_version is not None else package_version(SOURCE_PACKAGE)
    )
    return [user_dir() / name, SHARED_DIR / name]


def open_default() -> KnowledgeBase:
    """Open the knowledge base for the installed kernel sources.

    :raises KnowledgeUnavailable: when none is built (the message says how to build it).
    """
    tried = candidates()
    for path in tried:
        if path.is_file():
            return KnowledgeBase(path)
    raise KnowledgeUnavailable(f"no kernel knowledge base ({tried[0]})", BUILD_HINT)


def try_open() -> KnowledgeBase | None:
    """Return the knowledge base, or None when it is not built (callers print one notice)."""
    try:
        return open_default()
    except KnowledgeUnavailable:
        return None


def running_release() -> str:
    """Return the running kernel's release (``uname -r``)."""
    return platform.release()


def same_series(kb_version: str, release: str) -> bool:
    """Return whether a release (``6.1.0-18-amd64``) is of the knowledge base's ``6.1``."""
    return release.split(".")[:2] == kb_version.split(".")[:2]


class KnowledgeBase:
    """A built knowledge base (read-only SQLite)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            self.meta: dict[str, str] = dict(self._conn.execute("SELECT key, value FROM meta"))
        except sqlite3.Error as exc:
            raise KnowledgeUnavailable(
                f"cannot read the knowledge base {path}: {exc}", BUILD_HINT
            ) from exc
        if version != SCHEMA_VERSION:
            raise KnowledgeUnavailable(
                f"the knowledge base {path} has schema {version},"
                f" this kassist reads {SCHEMA_VERSION}",
                BUILD_HINT,
            )

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def kernel_version(self) -> str:
        """Return the kernel version the sources describe (``6.1.192``)."""
        return self.meta.get("kernel_version", "")

    def counts(self) -> dict[str, int]:
        """Return how many rows each kind of knowledge has."""
        queries = {
            "documentation files": "SELECT count(DISTINCT path) FROM docs",
            "documentation sections": "SELECT count(*) FROM docs",
            "documented sysctl entries": "SELECT count(*) FROM sysctl_docs",
            "MAINTAINERS sections": "SELECT count(DISTINCT section) FROM maintainers",
            "source files": "SELECT count(*) FROM tree_files",
            "sysctls (ctl_table)": "SELECT count(DISTINCT name) FROM sysctls",
            "sysctls documented": "SELECT count(DISTINCT name) FROM sysctls WHERE doc IS NOT NULL",
        }
        return {label: int(self._conn.execute(sql).fetchone()[0]) for label, sql in queries.items()}

    # ------------------------------------------------------------ documentation

    def search(self, query: str, limit: int = 5, prefix: str | None = None) -> list[DocHit]:
        """Return the documentation sections that best match ``query`` (BM25, best first).

        Sections with every word of the query come first, then those with some.

        :param prefix: only paths starting with it (``Documentation/networking/``).
        """
        terms = _fts_terms(query)
        hits: dict[tuple[str, str, str], DocHit] = {}
        for joiner in (" AND ", " OR "):
            if len(hits) >= limit or not terms:
                break
            for hit in self._match(joiner.join(terms), limit, prefix):
                hits.setdefault((hit.path, hit.anchor, hit.title), hit)
        return list(hits.values())[:limit]

    def _match(self, expression: str, limit: int, prefix: str | None) -> list[DocHit]:
        sql = (
            "SELECT d.path, d.title, d.anchor, d.text, -bm25(docs_fts, 4.0, 1.0) AS score"
            " FROM docs_fts JOIN docs d ON d.id = docs_fts.rowid WHERE docs_fts MATCH ?"
        )
        args: list[object] = [expression]
        if prefix:
            sql += " AND d.path LIKE ? ESCAPE '\\'"
            args.append(_like_prefix(prefix))
        sql += " ORDER BY score DESC LIMIT ?"
        args.append(limit)
        return [DocHit(*row) for row in self._conn.execute(sql, args)]

    def sections(self) -> Iterator[tuple[str, str, str, str]]:
        """Yield ``(path, title, anchor, text)`` of every documentation section, in file order."""
        yield from self._conn.execute("SELECT path, title, anchor, text FROM docs ORDER BY id")

    def section(self, path: str, anchor: str) -> DocHit | None:
        """Return one section by its citation parts, or None."""
        row = self._conn.execute(
            "SELECT path, title, anchor, text FROM docs WHERE path = ? AND anchor = ?"
            " ORDER BY line LIMIT 1",
            (path, anchor),
        ).fetchone()
        return DocHit(*row) if row else None

    # ------------------------------------------------------------ maintainers

    @cached_property
    def _sections(self) -> list[mnt.Section]:
        rows = self._conn.execute(
            "SELECT section, name, kind, value FROM maintainers ORDER BY section, seq"
        )
        return mnt.sections_from_rows(rows)

    @cached_property
    def _mailmap(self) -> mnt.Mailmap:
        return mnt.mailmap_from_rows(self._conn.execute("SELECT kind, key, value FROM mailmap"))

    def tree_path(self, path: str) -> str:
        """Return a crash report's file path as a path of the tree, where one fits.

        ``./net/ipv4/tcp.c`` loses its ``./``; an absolute build path
        (``/home/u/linux/net/ipv4/tcp.c``) becomes its longest suffix that is a
        file of the tree; any other path is returned stripped.
        """
        path = _tree_path(path)
        if self._has_file(path):
            return path
        parts = path.strip("/").split("/")
        for start in range(1, len(parts)):
            candidate = "/".join(parts[start:])
            if self._has_file(candidate):
                return candidate
        return path

    def _has_file(self, path: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM tree_files WHERE path = ?", (path,)).fetchone()
        return row is not None

    def _file_emails(self, path: str) -> list[str]:
        row = self._conn.execute(
            "SELECT file_emails FROM tree_files WHERE path = ?", (self.tree_path(path),)
        ).fetchone()
        return row[0].splitlines() if row and row[0] else []

    def _matched(self, path: str) -> list[mnt.Section]:
        path = self.tree_path(path)
        row = self._conn.execute(
            "SELECT keyword_sections FROM tree_files WHERE path = ?", (path,)
        ).fetchone()
        keyword = [int(i) for i in row[0].split()] if row and row[0] else []
        if (
            row is None
            and self._conn.execute(
                "SELECT 1 FROM tree_dirs WHERE path = ?", (path.rstrip("/"),)
            ).fetchone()
        ):
            path = path.rstrip("/") + "/"
        return mnt.matching_sections(self._sections, path, keyword)

    def maintainers(self, path: str) -> list[Subsystem]:
        """Return the MAINTAINERS sections covering a file of the tree, most specific first.

        :param path: a file of the tree (``net/ipv4/tcp.c``), or a path a crash report
            gives for one (see :meth:`tree_path`).
        """
        return [section.subsystem() for section in self._matched(path)]

    def recipients(self, path: str) -> tuple[list[str], list[str]]:
        """Return (To: maintainers and reviewers as ``Name <addr>``, Cc: lists) for a file.

        The lines ``get_maintainer.pl --no-git --no-rolestats -f FILE`` prints.
        """
        return mnt.recipients(self._matched(path), self._mailmap, self._file_emails(path))

    def in_tree(self, path: str) -> bool:
        """Return whether the file exists in the source tree the knowledge base was built from."""
        return self._has_file(self.tree_path(path))

    # ------------------------------------------------------------ sysctls

    def sysctl(self, name: str) -> SysctlDef | None:
        """Return the ``ctl_table`` definition of a sysctl (``net.core.somaxconn``), or None.

        ``/`` separators (``net/core/somaxconn``) are accepted too.
        """
        rows = list(self._sysctl_rows("WHERE s.name = ?", (name.strip().replace("/", "."),)))
        return rows[0] if rows else None

    def sysctls(self) -> list[SysctlDef]:
        """Return every sysctl defined at a resolved directory, by name (first definition each)."""
        return list(self._sysctl_rows("", ()))

    def _sysctl_rows(self, where: str, args: tuple[object, ...]) -> Iterator[SysctlDef]:
        sql = (
            "SELECT s.name, s.tbl, s.source, s.line, s.handler, s.minimum, s.maximum, s.dflt,"
            " s.maxlen,"
            " s.mode, s.data, d.path, d.title, d.anchor, sd.text"
            " FROM sysctls s LEFT JOIN sysctl_docs sd ON sd.id = s.doc"
            " LEFT JOIN docs d ON d.id = sd.doc " + where + " ORDER BY s.name, s.source, s.line"
        )
        seen: set[str] = set()
        for row in self._conn.execute(sql, args):
            if row[0] in seen:
                continue
            seen.add(row[0])
            doc = DocHit(row[11], row[12], row[13], row[14]) if row[11] is not None else None
            name, table, source, line, handler, low, high, dflt, maxlen, mode, data = row[:11]
            yield SysctlDef(
                name, table, source, line, handler, low, high, dflt, maxlen, mode, data, doc=doc
            )

    def documented_in(self, path: str) -> set[str]:
        """Return the sysctl file names one documentation file describes."""
        rows = self._conn.execute(
            "SELECT sd.name FROM sysctl_docs sd JOIN docs d ON d.id = sd.doc WHERE d.path = ?",
            (path,),
        )
        return {r[0] for r in rows}

    def documented_names(self) -> list[tuple[str, str, DocHit]]:
        """Return every sysctl the documentation names: (directory, file name, section)."""
        rows = self._conn.execute(
            "SELECT sd.directory, sd.name, d.path, d.title, d.anchor, sd.text"
            " FROM sysctl_docs sd JOIN docs d ON d.id = sd.doc ORDER BY sd.id"
        )
        return [(r[0], r[1], DocHit(r[2], r[3], r[4], r[5])) for r in rows]


def _fts_terms(query: str) -> list[str]:
    # Words as quoted FTS5 strings: no operator in a query can reach FTS5's syntax.
    words = re.findall(r"[A-Za-z0-9_]+", query)
    return ['"' + w.replace('"', "") + '"' for w in words][:32]


def _like_prefix(prefix: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", prefix) + "%"


def _tree_path(path: str) -> str:
    path = path.strip()
    while path.startswith("./"):
        path = path[2:]
    return path
