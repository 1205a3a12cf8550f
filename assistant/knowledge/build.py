"""Build the knowledge base: one pass over Documentation/ and one stream of the source tarball.

The result is one SQLite file, written beside its final name and renamed into
place, so a reader never sees half a database.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from assistant.knowledge import ctl_table, maintainers, rst
from assistant.knowledge.schema import BUILDER_VERSION, SCHEMA_VERSION, create_schema
from assistant.knowledge.sources import Sources, doc_files, tree_members

#: Where global constants are looked for (``#define`` in headers, initialisers in C).
_DEFINE_DIRS = ("include/", "arch/x86/include/")
_GLOBAL_C_DIRS = ("kernel/", "mm/", "fs/", "net/", "security/", "init/", "ipc/", "lib/", "block/")
#: Files larger than this are not scanned for K: keywords (firmware blobs, tables), bytes.
_MAX_SCAN_BYTES = 4 << 20

Progress = Callable[[str], None]


@dataclass
class BuildStats:
    """What a build put into the knowledge base."""

    kernel_version: str = ""
    doc_sections: int = 0
    doc_files: int = 0
    sysctl_docs: int = 0
    tree_files: int = 0
    keyword_files: int = 0
    maintainer_sections: int = 0
    sysctls: int = 0
    sysctls_unresolved: int = 0
    seconds: float = 0.0


@dataclass
class _Tree:
    # What the tarball stream keeps.
    dirs: set[str] = field(default_factory=set)
    files: dict[str, str] = field(default_factory=dict)
    file_emails: dict[str, str] = field(default_factory=dict)
    pending: list[tuple[str, str]] = field(default_factory=list)
    keywords: list[maintainers.Keyword] | None = None
    maintainers_text: str = ""
    mailmap_text: str = ""
    makefile_text: str = ""
    sysctl_sources: list[tuple[str, str]] = field(default_factory=list)
    defines: dict[str, str | None] = field(default_factory=dict)
    initialisers: dict[str, str | None] = field(default_factory=dict)
    net_defaults: dict[str, str | None] = field(default_factory=dict)


def build(
    target: Path,
    sources: Sources,
    progress: Progress = lambda _: None,
    keep: Callable[[str], bool] = lambda _: True,
) -> BuildStats:
    """Build the knowledge base into ``target`` (replacing it), and return what it holds.

    :param keep: which paths to index (tree paths like ``net/core/sock.c`` and
        documentation paths like ``Documentation/...``); everything by default.
        MAINTAINERS, ``.mailmap`` and the Makefile are always kept.
    """
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    stats = BuildStats()
    try:
        with closing(sqlite3.connect(partial)) as conn:
            # No journal file beside the partial file (a failed build is deleted whole),
            # but one in memory, so that a rollback stays a rollback.
            conn.execute("PRAGMA journal_mode = MEMORY")
            conn.execute("PRAGMA synchronous = OFF")
            create_schema(conn)
            with conn:
                doc_rows = _index_docs(conn, sources, keep, progress, stats)
                tree = _stream_tree(sources, keep, progress)
                _store_tree(conn, tree, stats)
                _store_sysctls(conn, tree, doc_rows, stats, progress)
                stats.seconds = time.monotonic() - started
                _store_meta(conn, sources, stats)
            with conn:
                conn.execute("INSERT INTO docs_fts(docs_fts) VALUES ('optimize')")
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    progress(f"done in {stats.seconds:.0f} s: {target}")
    return stats


def _remove_stale_partials(target: Path) -> None:
    # A build that was killed leaves its partial file; its process is gone.
    for stale in target.parent.glob(f".{target.name}.*.partial"):
        pid = stale.name.removeprefix(f".{target.name}.").removesuffix(".partial")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            stale.unlink(missing_ok=True)


# ---------------------------------------------------------------- documentation


def _index_docs(
    conn: sqlite3.Connection,
    sources: Sources,
    keep: Callable[[str], bool],
    progress: Progress,
    stats: BuildStats,
) -> dict[str, list[tuple[int, rst.SysctlEntry]]]:
    # Returns sysctl name → [(sysctl_docs id, entry)].
    progress(f"reading the documentation under {sources.doc_root}")
    by_name: dict[str, list[tuple[int, rst.SysctlEntry]]] = {}
    for path, text in doc_files(sources.doc_root, keep):
        stats.doc_files += 1
        found = (
            rst.abi_entries(text) if path.startswith("Documentation/ABI/") else rst.sections(text)
        )
        if not found:
            found = [rst.Section(path.rsplit("/", 1)[-1], "", 1, 1, text.strip())]
        ids: dict[int, int] = {}
        for section in found:
            cursor = conn.execute(
                "INSERT INTO docs(path, title, anchor, level, line, text)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (path, section.title, section.anchor, section.level, section.line, section.text),
            )
            assert cursor.lastrowid is not None
            ids[section.line] = cursor.lastrowid
            conn.execute(
                "INSERT INTO docs_fts(rowid, title, text) VALUES (?, ?, ?)",
                (cursor.lastrowid, section.title, section.text),
            )
            stats.doc_sections += 1
        if path in rst.SYSCTL_DOCS:
            for entry in rst.sysctl_entries(path, text):
                cursor = conn.execute(
                    "INSERT INTO sysctl_docs(name, directory, doc, title, text)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (entry.name, entry.directory, ids[entry.section.line], entry.title, entry.text),
                )
                assert cursor.lastrowid is not None
                by_name.setdefault(entry.name, []).append((cursor.lastrowid, entry))
                stats.sysctl_docs += 1
    progress(f"{stats.doc_sections} sections from {stats.doc_files} documentation files")
    return by_name


# ---------------------------------------------------------------- the source tree


def _stream_tree(sources: Sources, keep: Callable[[str], bool], progress: Progress) -> _Tree:
    tree = _Tree()
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 5 or done == total:
            last[0] = now
            progress(f"streaming {sources.tarball.name}: {100 * done // max(total, 1)}%")

    progress(f"streaming {sources.tarball} once (about a minute or two)")
    for path, content in tree_members(sources.tarball, report):
        if content is None:
            tree.dirs.add(path)
            continue
        _keep_special(tree, path, content)
        if not keep(path):
            continue
        _add_parents(tree.dirs, path)
        text = content.decode("latin-1") if len(content) <= _MAX_SCAN_BYTES else ""
        if tree.keywords is None:
            tree.pending.append((path, text))
        else:
            tree.files[path] = _keyword_text(tree.keywords, text)
        _collect_constants(tree, path, text)
        if path.endswith(".yaml"):
            tree.file_emails[path] = "\n".join(maintainers.file_emails(text))
    if tree.keywords is None:
        _parse_maintainers_now(tree)
    return tree


def _keep_special(tree: _Tree, path: str, content: bytes) -> None:
    if path == "MAINTAINERS":
        tree.maintainers_text = content.decode("utf-8", errors="replace")
        _parse_maintainers_now(tree)
    elif path == ".mailmap":
        tree.mailmap_text = content.decode("utf-8", errors="replace")
    elif path == "Makefile":
        tree.makefile_text = content.decode("utf-8", errors="replace")


def _parse_maintainers_now(tree: _Tree) -> None:
    # Keywords are known once MAINTAINERS is read; files streamed before it wait.
    sections = maintainers.parse_maintainers(tree.maintainers_text, lambda p: p in tree.dirs)
    tree.keywords = maintainers.keywords(sections)
    for path, text in tree.pending:
        tree.files[path] = _keyword_text(tree.keywords, text)
    tree.pending.clear()


def _keyword_text(keywords: list[maintainers.Keyword], text: str) -> str:
    return " ".join(map(str, maintainers.keyword_sections(keywords, text))) if text else ""


def _add_parents(dirs: set[str], path: str) -> None:
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    while parent and parent not in dirs:
        dirs.add(parent)
        parent = parent.rsplit("/", 1)[0] if "/" in parent else ""


def _merge(into: dict[str, str | None], items: Iterable[tuple[str, str]]) -> None:
    # A name with two different values anywhere is ambiguous: forget it.
    for name, value in items:
        if len(value) > 120:
            continue
        if name in into and into[name] != value:
            into[name] = None
        else:
            into.setdefault(name, value)


def _collect_constants(tree: _Tree, path: str, text: str) -> None:
    if path.endswith(".h") and path.startswith(_DEFINE_DIRS):
        _merge(tree.defines, ctl_table.defines(text).items())
    if not path.endswith(".c"):
        return
    if "ctl_table" in text:
        tree.sysctl_sources.append((path, text))
    if path.startswith(_GLOBAL_C_DIRS):
        _merge(tree.initialisers, ctl_table.initialisers(text).items())
    if path.startswith("net/") and "net->" in text:
        _merge(tree.net_defaults, ctl_table.net_assignments(text))


def _store_tree(conn: sqlite3.Connection, tree: _Tree, stats: BuildStats) -> None:
    sections = maintainers.parse_maintainers(tree.maintainers_text, lambda p: p in tree.dirs)
    conn.executemany(
        "INSERT INTO maintainers(section, name, seq, kind, value) VALUES (?, ?, ?, ?, ?)",
        (
            (s.index, s.name, seq, kind, value)
            for s in sections
            for seq, (kind, value) in enumerate(s.entries)
        ),
    )
    mailmap = maintainers.parse_mailmap(tree.mailmap_text)
    conn.executemany(
        "INSERT INTO mailmap(kind, key, value) VALUES (?, ?, ?)",
        [("name", k, v) for k, v in mailmap.names.items()]
        + [("address", k, v) for k, v in mailmap.addresses.items()],
    )
    conn.executemany(
        "INSERT INTO tree_files(path, keyword_sections, file_emails) VALUES (?, ?, ?)",
        ((p, k, tree.file_emails.get(p, "")) for p, k in sorted(tree.files.items())),
    )
    conn.executemany("INSERT INTO tree_dirs(path) VALUES (?)", ((d,) for d in sorted(tree.dirs)))
    stats.maintainer_sections = len(sections)
    stats.tree_files = len(tree.files)
    stats.keyword_files = sum(1 for v in tree.files.values() if v)
    stats.kernel_version = kernel_version(tree.makefile_text)


def kernel_version(makefile: str) -> str:
    """Return ``VERSION.PATCHLEVEL.SUBLEVEL`` from the top Makefile (``6.1.192``)."""
    parts = []
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
        match = re.search(rf"^{key}\s*=\s*(\d+)", makefile, re.M)
        if match:
            parts.append(match.group(1))
    return ".".join(parts)


# ---------------------------------------------------------------- sysctls


def _store_sysctls(
    conn: sqlite3.Connection,
    tree: _Tree,
    docs: dict[str, list[tuple[int, rst.SysctlEntry]]],
    stats: BuildStats,
    progress: Progress,
) -> None:
    net_defaults = {k: v for k, v in tree.net_defaults.items() if v is not None}
    parsed = ctl_table.tree_sysctls(tree.sysctl_sources)
    defined = {(s.directory, s.entry.procname) for _p, _t, found, _u in parsed for s in found}
    for path, text, found, unresolved in parsed:
        stats.sysctls_unresolved += unresolved
        local_init = ctl_table.initialisers(text)
        local_defines = ctl_table.defines(text)

        def names(
            name: str,
            local_init: dict[str, str] = local_init,
            local_defines: dict[str, str] = local_defines,
        ) -> str | None:
            for table in (local_init, local_defines, tree.initialisers, tree.defines):
                if name in table:
                    return table[name]
            return None

        for sysctl in found:
            fields = sysctl.entry.fields
            extra1, extra2 = fields.get("extra1", ""), fields.get("extra2", "")
            conn.execute(
                "INSERT OR IGNORE INTO sysctls(name, directory, procname, tbl, source, line,"
                " handler, minimum, maximum, dflt, maxlen, mode, data, extra1, extra2, doc)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sysctl.name,
                    sysctl.directory,
                    sysctl.entry.procname,
                    sysctl.entry.table,
                    path,
                    sysctl.entry.line,
                    fields.get("proc_handler", ""),
                    ctl_table.bound(extra1, names),
                    ctl_table.bound(extra2, names),
                    ctl_table.default(fields.get("data", ""), names, net_defaults)
                    if ctl_table.plain_handler(fields.get("proc_handler", ""))
                    else None,
                    fields.get("maxlen", ""),
                    fields.get("mode", ""),
                    fields.get("data", ""),
                    extra1,
                    extra2,
                    _doc_for(sysctl, docs, defined),
                ),
            )
    stats.sysctls = conn.execute("SELECT count(DISTINCT name) FROM sysctls").fetchone()[0]
    progress(
        f"{stats.sysctls} sysctls from the ctl_table definitions"
        f" ({stats.sysctls_unresolved} entries at unresolved paths)"
    )


def _doc_for(
    sysctl: ctl_table.Sysctl,
    docs: dict[str, list[tuple[int, rst.SysctlEntry]]],
    defined: set[tuple[str, str]],
) -> int | None:
    # The documentation entry with the same file name whose directory agrees best.
    # One filed under another directory (ip-sysctl.rst lists net.core.somaxconn
    # among the TCP variables) counts only when no sysctl of that name lives there.
    best: tuple[int, int] | None = None
    for doc_id, entry in docs.get(sysctl.entry.procname, []):
        score = _directory_agreement(sysctl.directory, entry.directory)
        if score < 10 and (entry.directory, entry.name) in defined:
            continue
        if score and (best is None or score > best[0]):
            best = (score, doc_id)
    return best[1] if best else None


def _directory_agreement(code: str, doc: str) -> int:
    # Components that agree from the top ("*" and "interface" in the docs match any);
    # 0 when even the first differs.
    score = 0
    for a, b in zip(code.split("/"), doc.split("/"), strict=False):
        if a == b or b in ("*", "interface", "<interface>"):
            score += 1
        else:
            break
    if score == len(code.split("/")) == len(doc.split("/")):
        score += 10  # the same directory, up to a device wildcard
    return score


def _store_meta(conn: sqlite3.Connection, sources: Sources, stats: BuildStats) -> None:
    meta = {
        "schema_version": str(SCHEMA_VERSION),
        "builder_version": str(BUILDER_VERSION),
        "kernel_version": stats.kernel_version,
        "doc_package_version": sources.doc_version or "",
        "source_package_version": sources.source_version or "",
        "doc_root": str(sources.doc_root),
        "tarball": str(sources.tarball),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": f"{stats.seconds:.1f}",
        "sysctls_unresolved": str(stats.sysctls_unresolved),
    }
    conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", meta.items())
