"""The retrieval index beside a knowledge base: passages, their BM25 index and embeddings.

Built once from a knowledge base (``kassist kb build`` does it after the knowledge
base; :func:`ensure` builds what is missing) into two files beside it, named after
it so that a new knowledge base gets new ones:

- ``<kb>.passages<N>.sqlite``: every documentation section cut into passages
  (:mod:`assistant.knowledge.passages`) with an FTS5 index over their term, section
  title and text (a few seconds to build);
- ``passages<N>.<digest>.<model id>.npy``: one unit-length float16 embedding per passage
  of the operator documentation (:data:`EMBEDDED_DIRS`), row ``i`` for passage id
  ``i + 1``'s turn in :func:`embedded_ids`; the model id holds the weights' hash, so
  another model never reads these vectors (minutes to build: see docs/answers.md).

Each file is written beside its final name and renamed into place.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.knowledge.passages import Passage, passages

if TYPE_CHECKING:
    from assistant.knowledge.base import KnowledgeBase
    from assistant.knowledge.embed import Encoder

#: Bump when passages or their tables change (a new file name).
INDEX_VERSION = 1
#: Documentation left out of the passages: translations repeat the English text.
SKIPPED_DIRS = ("Documentation/translations/",)
#: The documentation an operator asks about; the opening passage of each of its sections
#: and definition-list entries gets an embedding (the rest is found by BM25 alone), which
#: keeps the build to minutes on two cores.
EMBEDDED_DIRS = tuple(
    f"Documentation/{d}/"
    for d in (
        *("admin-guide", "accounting", "block", "core-api", "dev-tools", "filesystems"),
        *("locking", "mm", "networking", "RCU", "scheduler", "security", "trace"),
        *("kernel-hacking", "bpf"),
    )
)
#: Hardware, driver and development-process corners of those folders, left to BM25.
UNEMBEDDED_DIRS = tuple(
    f"Documentation/{d}/"
    for d in (
        *("networking/device_drivers", "networking/devlink", "networking/dsa"),
        *("networking/caif", "admin-guide/media", "admin-guide/laptops", "admin-guide/cifs"),
        *("admin-guide/aoe", "admin-guide/auxdisplay", "admin-guide/gpio"),
        *("admin-guide/device-mapper", "trace/coresight", "trace/rv", "dev-tools/kunit"),
        *("RCU/Design", "filesystems/spufs", "bpf/libbpf"),
    )
)
#: Tokens of a passage that its embedding reads: its term, section title and opening.
EMBED_TOKENS = 48
#: Batches embedded at once while building (one BLAS thread each).
BUILD_THREADS = min(2, os.cpu_count() or 1)

Progress = Callable[[str], None]

_STATEMENTS = (
    """CREATE TABLE passages (
        id      INTEGER PRIMARY KEY,
        path    TEXT NOT NULL,
        anchor  TEXT NOT NULL,
        section TEXT NOT NULL,
        heading TEXT NOT NULL,
        text    TEXT NOT NULL
    )""",
    """CREATE VIRTUAL TABLE passages_fts USING fts5(
        heading, section, text, content='passages', content_rowid='id',
        tokenize='porter unicode61'
    )""",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # The names a passage's heading documents (somaxconn, memory.high, oom_score_adj).
    "CREATE TABLE names (name TEXT NOT NULL, passage INTEGER NOT NULL)",
    "CREATE INDEX names_by_name ON names(name)",
)


def passages_path(kb_path: Path) -> Path:
    """Return the passages file that belongs beside a knowledge base file."""
    return kb_path.with_name(f"{kb_path.stem}.passages{INDEX_VERSION}.sqlite")


def vectors_path(kb_path: Path, digest: str, model_id: str) -> Path:
    """Return the embeddings file of one passages index for one model, beside the knowledge
    base: named by the passages' content digest and the model's weights, not by the knowledge
    base's file, so that a rebuilt knowledge base with the same documentation reuses it."""
    return kb_path.with_name(f"passages{INDEX_VERSION}.{digest}.{model_id}.npy")


def built_from(kb: KnowledgeBase) -> str:
    """Return what names one build of a knowledge base: its file name and build time."""
    return f"{kb.path.name} built {kb.meta.get('built_at', '?')}"


def meta(passages_file: Path, key: str) -> str:
    """Return one value of a passages index's meta table ("" when it has none or is not one).

    ``kb``: the :func:`built_from` of the knowledge base it was cut from; ``digest``: its
    contents' digest, which names its embeddings, so that vectors of other passages are
    never read.
    """
    try:
        with closing(sqlite3.connect(f"file:{passages_file}?mode=ro", uri=True)) as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    except sqlite3.Error:
        return ""
    return str(row[0]) if row else ""


_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]*[a-z0-9]")


def heading_names(heading: str) -> list[str]:
    """Return the names a passage heading documents, lower case.

    >>> heading_names("3.1 /proc/<pid>/oom_adj & /proc/<pid>/oom_score_adj - Adjust the score")
    ['oom_adj', 'oom_score_adj']
    >>> heading_names("file-max & file-nr")
    ['file-max', 'file-nr']
    """
    head = re.split(r"\s+-\s+|\s*\(|:\s", heading, maxsplit=1)[0]
    names = []
    for part in re.split(r"\s*(?:&|,|\band\b|\s)\s*", head):
        word = part.rstrip("/").rsplit("/", 1)[-1]
        if _NAME.fullmatch(word) and not word.replace(".", "").isdigit() and word not in names:
            names.append(word)
    return names


def embedded(path: str) -> bool:
    """Return whether a documentation file's passages get embeddings."""
    top = path.count("/") == 1  # Documentation/memory-barriers.txt and the like
    return (top or path.startswith(EMBEDDED_DIRS)) and not path.startswith(UNEMBEDDED_DIRS)


def _write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        write(partial)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def build_passages(kb: KnowledgeBase, target: Path, progress: Progress = lambda _: None) -> int:
    """Cut every documentation section of ``kb`` into passages and index them into ``target``.

    :return: how many passages were written.
    """
    count = 0
    content = hashlib.sha256()

    def write(partial: Path) -> None:
        nonlocal count
        with closing(sqlite3.connect(partial)) as conn:
            conn.execute("PRAGMA journal_mode = MEMORY")
            conn.execute("PRAGMA synchronous = OFF")
            with conn:
                for statement in _STATEMENTS:
                    conn.execute(statement)
                for p in _all_passages(kb):
                    _insert(conn, p)
                    content.update(f"{p.cite}\0{p.heading}\0{p.text}\0".encode())
                    count += 1
                meta = {
                    "index_version": str(INDEX_VERSION),
                    "kb": built_from(kb),
                    "digest": content.hexdigest()[:12],
                }
                conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", meta.items())
            with conn:
                conn.execute("INSERT INTO passages_fts(passages_fts) VALUES ('optimize')")

    started = time.monotonic()
    _write_atomically(target, write)
    progress(f"{count} passages indexed in {time.monotonic() - started:.0f} s: {target}")
    return count


def _insert(conn: sqlite3.Connection, p: Passage) -> None:
    # The passage, its BM25 row and the names its heading documents.
    cur = conn.execute(
        "INSERT INTO passages(path, anchor, section, heading, text) VALUES (?, ?, ?, ?, ?)",
        (p.path, p.anchor, p.section, p.heading, p.text),
    )
    conn.execute(
        "INSERT INTO passages_fts(rowid, heading, section, text) VALUES (?, ?, ?, ?)",
        (cur.lastrowid, p.heading, p.section, p.text),
    )
    conn.executemany(
        "INSERT INTO names(name, passage) VALUES (?, ?)",
        ((name, cur.lastrowid) for name in heading_names(p.heading)),
    )


def _all_passages(kb: KnowledgeBase) -> Iterator[Passage]:
    for path, title, anchor, text in kb.sections():
        if not path.startswith(SKIPPED_DIRS):
            yield from passages(path, anchor, title, text)


def embed_text(heading: str, section: str, text: str) -> str:
    """Return what a passage's embedding reads: its term, its section's title, its text."""
    head = heading if heading == section else f"{section}: {heading}"
    return f"{head}. {text}"


def embedded_rows(conn: sqlite3.Connection) -> list[tuple[int, str]]:
    """Return (passage id, text to embed) for the opening passage of every section and
    entry of the embedded documentation, by id."""
    rows = conn.execute("SELECT id, path, anchor, section, heading, text FROM passages ORDER BY id")
    seen: set[tuple[str, str, str]] = set()
    out = []
    for i, path, anchor, section, heading, text in rows:
        if embedded(path) and (path, anchor, heading) not in seen:
            seen.add((path, anchor, heading))
            out.append((i, embed_text(heading, section, text)))
    return out


def build_vectors(
    passages_file: Path,
    target: Path,
    encoder: Encoder,
    progress: Progress = lambda _: None,
) -> int:
    """Embed the operator documentation's passages into ``target`` (float16, one row each).

    The file is numpy's ``.npy`` of a structured array: ``id`` (int32 passage id) and
    ``v`` (384 float16).

    :return: how many passages were embedded.
    """
    import numpy as np

    with closing(sqlite3.connect(f"file:{passages_file}?mode=ro", uri=True)) as conn:
        rows = embedded_rows(conn)
    started = last = time.monotonic()
    vectors = np.zeros(len(rows), dtype=[("id", "<i4"), ("v", "<f2", (384,))])
    step = 256
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        vectors["id"][start : start + len(chunk)] = [i for i, _ in chunk]
        vectors["v"][start : start + len(chunk)] = encoder.encode(
            [t for _, t in chunk], max_tokens=EMBED_TOKENS, threads=BUILD_THREADS
        )
        now = time.monotonic()
        if now - last >= 10:
            last = now
            progress(f"embedding passages: {start + len(chunk)}/{len(rows)}")

    def write(partial: Path) -> None:
        with open(partial, "wb") as f:
            np.save(f, vectors)

    _write_atomically(target, write)
    progress(f"{len(rows)} passages embedded in {time.monotonic() - started:.0f} s: {target}")
    return len(rows)


def load_vectors(path: Path) -> tuple[Any, Any]:
    """Return (passage ids, float32 matrix of unit rows) from an embeddings file.

    :raises OSError, ValueError: the file is missing or not one :func:`build_vectors` wrote.
    """
    import numpy as np

    data = np.load(path, allow_pickle=False)
    if data.dtype.names != ("id", "v"):
        raise ValueError(f"{path} is not a passage embeddings file")
    return data["id"].astype(np.int64), data["v"].astype(np.float32)


def ensure(kb: KnowledgeBase, directory: Path | None = None, progress: Progress = print) -> str:
    """Build what is missing of ``kb``'s retrieval index (passages, then embeddings) into
    ``directory`` (default: beside the knowledge base), and say in one line what it holds.

    Without the embedding model the passages alone are built (retrieval is then BM25).
    """
    from assistant.knowledge.embed import EmbeddingUnavailable, default_encoder

    where = directory or kb.path.parent
    passages_file = where / passages_path(kb.path).name
    if meta(passages_file, "kb") != built_from(kb):
        build_passages(kb, passages_file, progress)
    try:
        encoder = default_encoder()
    except EmbeddingUnavailable as exc:
        return f"retrieval: BM25 over passages only ({exc.one_line()})"
    target = where / vectors_path(kb.path, meta(passages_file, "digest"), encoder.model_id).name
    if not target.is_file():
        progress("embedding the operator documentation's passages (minutes on two cores)")
        build_vectors(passages_file, target, encoder, progress)
    return f"retrieval: BM25 and {encoder.model_id} embeddings ({target.name})"
