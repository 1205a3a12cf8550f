"""Hybrid retrieval over the documentation's passages: BM25 and embeddings, fused by rank.

A question loses its stop words; FTS5's BM25 ranks passages with the definition-list
term and the section title weighted above the text; the embedding model ranks the
operator documentation's passages by cosine similarity; reciprocal rank fusion
(``sum of 1 / (RRF_K + rank)``) merges the two lists; a second stage ranks the first
:data:`RERANK_POOL` again by how much of the question each one covers, a stub last.
Without the embeddings (model not installed, vectors not built) retrieval is BM25 alone
and says so once; without the passages file it is the knowledge base's section search.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.knowledge.base import KnowledgeBase
from assistant.knowledge.passages import Passage, units

#: Reciprocal rank fusion's constant (the usual 60).
RRF_K = 60
#: BM25 column weights: term (heading), section title, text.
BM25_WEIGHTS = (6.0, 3.0, 1.0)
#: Each ranked list's weight in the fusion: BM25, embeddings, heading names.
FUSION_WEIGHTS = (1.0, 0.5, 2.0)
#: How many candidates each ranker hands to the fusion.
CANDIDATES = 50
#: How many of the fused passages the second stage ranks again.
RERANK_POOL = 20
#: The second stage's weight of a passage's coverage of the question (the share of the
#: question's word weight its heading, section title and text hold), beside its fused
#: score scaled to the best one's (1.0).
COVERAGE_WEIGHT = 0.2
#: A passage with fewer quotable characters than this is a stub ("Documentation for
#: sysrq.c", a reference list's entry): a short text wins BM25 on one word it holds.
STUB_CHARS = 120
#: What the second stage takes off a stub's score.
STUB_PENALTY = 0.3

#: Words that carry no topic in an operator's question.
STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing done down during each few
    for from further get gets got had has have having he her here hers him his how i if in
    into is it its itself just let me mean means meaning more most my no nor not now of off
    on once only or other our out over own same she should so some such than that the their
    them then there these they this those through to too under until up use used using very
    want was we were what when where which while who whom why will with would you your
    yours tell explain happens happen work works set setting kernel linux please""".split()  # noqa: SIM905
)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*[A-Za-z0-9]|[A-Za-z0-9]")


def query_terms(question: str) -> list[str]:
    """Return a question's topic words: stop words dropped, dotted and slashed names cut
    into their parts (``tcp_tw_reuse`` stays whole: FTS5 matches it as a phrase).

    >>> query_terms("What does vm.swappiness control and what is the default?")
    ['vm', 'swappiness', 'control', 'default']
    """
    terms = []
    for word in _WORD.findall(question):
        for raw in re.split(r"[./]+", word.lower()):
            part = raw.strip("-")
            if part and part not in STOP_WORDS and part not in terms:
                terms.append(part)
    return terms[:24]


def _fts_expression(terms: list[str]) -> str:
    # Each term a quoted FTS5 string (an identifier becomes a phrase of its parts), ORed.
    return " OR ".join('"' + t.replace('"', "") + '"' for t in terms)


@dataclass(frozen=True)
class Hit:
    """One retrieved passage.

    :param passage: the passage (its ``cite`` is the citation).
    :param score: the fused score (higher is better).
    :param bm25_rank: its rank in the BM25 list (1 = first; 0: not in it).
    :param dense_rank: its rank in the embedding list (0: not in it).
    """

    passage: Passage
    score: float
    bm25_rank: int = 0
    dense_rank: int = 0


def _stem(word: str) -> str:
    return word[:6] if len(word) > 6 else word


def words_of(text: str) -> set[str]:
    """Return a text's words and their crude stems (their first six letters), identifiers
    also cut into their parts (``tcp_keepalive_time`` holds ``keepalive``)."""
    words = set(re.findall(r"[a-z0-9][a-z0-9_.-]*[a-z0-9]|[a-z0-9]", text.lower()))
    words |= {p for w in list(words) for p in re.split(r"[_.-]+", w) if p}
    return words | {_stem(w) for w in words}


def holds(term: str, words: set[str]) -> bool:
    """Return True when ``words`` (from :func:`words_of`) hold a question's term."""
    return term in words or (len(term) > 3 and _stem(term) in words)


def term_weights(terms: list[str], texts: list[set[str]]) -> dict[str, float]:
    """Return each question term's weight among ``texts`` (each one's :func:`words_of`):
    a term most of them hold tells little (``taint`` in a section on taint), one few hold
    tells much (``P``).

    >>> texts = [words_of(t) for t in ("taint flag G", "taint flag P", "taint")]
    >>> w = term_weights(["taint", "p"], texts)
    >>> w["p"] > w["taint"]
    True
    """
    n = len(texts)
    return {t: math.log((n + 1) / (0.5 + sum(1 for w in texts if holds(t, w)))) for t in terms}


def held_weight(weights: dict[str, float], words: set[str]) -> float:
    """Return the sum of the weights (:func:`term_weights`) of the terms ``words`` hold."""
    return sum(w for t, w in weights.items() if holds(t, words))


def rerank(question: str, hits: list[Hit]) -> list[Hit]:
    """Return ``hits`` ranked again: each one's fused score scaled to the best one's, plus
    :data:`COVERAGE_WEIGHT` times the share of the question's word weight (each word
    weighted by how few of the hits hold it) that its heading, section title and quotable
    text hold, less :data:`STUB_PENALTY` for a stub (under :data:`STUB_CHARS` quotable
    characters). Each hit's ``score`` becomes that score.
    """
    if not hits:
        return []
    quotable = [units(h.passage.text, h.passage.heading) for h in hits]
    texts = [
        words_of(f"{h.passage.heading} {h.passage.section} " + " ".join(u))
        for h, u in zip(hits, quotable, strict=True)
    ]
    weights = term_weights(query_terms(question), texts)
    total = sum(weights.values()) or 1.0
    top = max(h.score for h in hits) or 1.0
    scored = []
    for hit, words, unit in zip(hits, texts, quotable, strict=True):
        cover = held_weight(weights, words) / total
        stub = STUB_PENALTY if sum(len(u) for u in unit) < STUB_CHARS else 0.0
        score = hit.score / top + COVERAGE_WEIGHT * cover - stub
        scored.append(Hit(hit.passage, score, hit.bm25_rank, hit.dense_rank))
    return sorted(scored, key=lambda h: -h.score)


@dataclass
class Retrieval:
    """What a search found, how, and how long it took.

    :param hits: the passages, best first.
    :param mode: ``hybrid``, ``bm25`` or ``sections`` (the knowledge base's own search).
    :param notice: one line when retrieval runs degraded (no embeddings), else "".
    :param seconds: wall time of the search.
    """

    hits: list[Hit] = field(default_factory=list)
    mode: str = "hybrid"
    notice: str = ""
    seconds: float = 0.0


class Retriever:
    """Search the passages beside a knowledge base.

    :param kb: the knowledge base (its file names the passages and embeddings files).
    :param passages_file: the passages index (see :mod:`assistant.knowledge.index`).
    :param vectors: (passage ids, unit-row float32 matrix), or None for BM25 only.
    :param encoder: the embedding model for questions (needed with ``vectors``).
    :param notice: why retrieval is degraded, if it is.
    """

    def __init__(
        self,
        kb: KnowledgeBase,
        passages_file: Path | None,
        vectors: tuple[Any, Any] | None = None,
        encoder: Any = None,
        notice: str = "",
    ) -> None:
        self.kb = kb
        self.passages_file = passages_file
        self._conn = (
            sqlite3.connect(f"file:{passages_file}?mode=ro", uri=True, check_same_thread=False)
            if passages_file is not None
            else None
        )
        self._vectors = vectors if encoder is not None else None
        self.encoder = encoder if vectors is not None else None
        self.notice = notice

    @property
    def mode(self) -> str:
        """Return ``hybrid``, ``bm25`` or ``sections``."""
        if self._conn is None:
            return "sections"
        return "hybrid" if self._vectors is not None else "bm25"

    def without_embeddings(self) -> Retriever:
        """Return the same retriever with BM25 alone (to measure what embeddings add)."""
        return Retriever(self.kb, self.passages_file)

    def search(self, question: str, k: int = 5) -> Retrieval:
        """Return the ``k`` passages that best answer ``question``, best first."""
        started = time.perf_counter()
        if self._conn is None:
            hits = [
                Hit(Passage(h.path, h.anchor, h.title, h.title, h.text), h.score, i + 1)
                for i, h in enumerate(self.kb.search(question, limit=k))
            ]
            return Retrieval(hits, "sections", self.notice, time.perf_counter() - started)
        bm25 = self.bm25(question, CANDIDATES)
        dense = self.dense(question, CANDIDATES) if self._vectors is not None else []
        fused: dict[int, float] = {}
        lists = (bm25, dense, self.named(question, CANDIDATES))
        for weight, ranked in zip(FUSION_WEIGHTS, lists, strict=True):
            for rank, pid in enumerate(ranked, 1):
                fused[pid] = fused.get(pid, 0.0) + weight / (RRF_K + rank)
        pool = sorted(fused, key=lambda pid: -fused[pid])[: max(k, RERANK_POOL)]
        b_rank = {pid: r for r, pid in enumerate(bm25, 1)}
        d_rank = {pid: r for r, pid in enumerate(dense, 1)}
        passages = self.passages(pool)
        hits = [
            Hit(passages[pid], fused[pid], b_rank.get(pid, 0), d_rank.get(pid, 0)) for pid in pool
        ]
        hits = rerank(question, hits)[:k]
        return Retrieval(hits, self.mode, self.notice, time.perf_counter() - started)

    def bm25(self, question: str, limit: int) -> list[int]:
        """Return passage ids by BM25 over the question's topic words, best first."""
        assert self._conn is not None
        terms = query_terms(question)
        if not terms:
            return []
        weights = ", ".join(str(w) for w in BM25_WEIGHTS)
        rows = self._conn.execute(
            f"SELECT rowid FROM passages_fts WHERE passages_fts MATCH ?"
            f" ORDER BY bm25(passages_fts, {weights}) LIMIT ?",
            (_fts_expression(terms), limit),
        )
        return [int(r[0]) for r in rows]

    def named(self, question: str, limit: int) -> list[int]:
        """Return the passages whose heading documents a name the question uses
        (``somaxconn`` for ``net.core.somaxconn``), the longest names first."""
        assert self._conn is not None
        # Only what looks like a name: with '_', '.', '-', '/' or a digit (a plain word
        # like "memory" heads too many passages to point at one).
        words = {w.lower().strip(".-/") for w in _WORD.findall(question)}
        names = {w for w in words if re.search(r"[_.\-/0-9]", w)}
        wanted = names | {p for w in names for p in re.split(r"[./]+", w) if re.search(r"[_\-]", p)}
        wanted |= {w.rsplit(".", 1)[-1] for w in names if "." in w}
        wanted = {w for w in wanted if len(w) > 2 and w not in STOP_WORDS}
        if not wanted:
            return []
        marks = ",".join("?" * len(wanted))
        rows = self._conn.execute(
            f"SELECT passage, name FROM names WHERE name IN ({marks})"
            " ORDER BY length(name) DESC, passage LIMIT ?",
            [*sorted(wanted), limit],
        )
        return list(dict.fromkeys(int(r[0]) for r in rows))

    def dense(self, question: str, limit: int) -> list[int]:
        """Return passage ids by cosine similarity with the question, best first."""
        import numpy as np

        assert self._vectors is not None and self.encoder is not None
        ids, matrix = self._vectors
        query = self.encoder.encode([question])[0]
        scores = matrix @ query
        top = np.argpartition(-scores, min(limit, len(scores) - 1))[:limit]
        top = top[np.argsort(-scores[top])]
        return [int(ids[i]) for i in top]

    def passages(self, ids: list[int]) -> dict[int, Passage]:
        """Return passages by id."""
        assert self._conn is not None
        marks = ",".join("?" * len(ids))
        rows = self._conn.execute(
            f"SELECT id, path, anchor, section, heading, text FROM passages WHERE id IN ({marks})",
            ids,
        )
        return {int(r[0]): Passage(*r[1:]) for r in rows}


_BUILD_HINT = "`kassist kb build` (as root: ./setup.sh) makes it"


def _beside_or_user(path: Path) -> Path | None:
    # The file beside the knowledge base, else the same name in the user's cache.
    from assistant.knowledge.base import user_dir

    for candidate in (path, user_dir() / path.name):
        if candidate.is_file():
            return candidate
    return None


def open_retriever(kb: KnowledgeBase, encoder: Callable[[], Any] | None = None) -> Retriever:
    """Return the best retriever this machine has for ``kb``: hybrid, BM25, or sections.

    Never raises for a missing piece: the retriever's ``notice`` says in one line what is
    missing and what retrieval does instead.

    :param encoder: returns the embedding model (default: the installed one, loaded once);
        raises :class:`~assistant.knowledge.embed.EmbeddingUnavailable` when there is none.
    """
    from assistant.knowledge import index
    from assistant.knowledge.embed import EmbeddingUnavailable, default_encoder

    passages_file = _beside_or_user(index.passages_path(kb.path))
    if passages_file is None:
        return Retriever(
            kb,
            None,
            notice=f"no passage index for {kb.path.name}: section search only; {_BUILD_HINT}",
        )
    cut_from = index.meta(passages_file, "kb")
    if cut_from != index.built_from(kb):
        return Retriever(
            kb,
            None,
            notice=f"{passages_file} was cut from another knowledge base"
            f" ({cut_from or 'unreadable'}): section search only; {_BUILD_HINT}",
        )
    try:
        model = (encoder or default_encoder)()
    except EmbeddingUnavailable as exc:
        return Retriever(kb, passages_file, notice=f"BM25 only: {exc.one_line()}")
    vectors_file = _beside_or_user(
        index.vectors_path(kb.path, index.meta(passages_file, "digest"), model.model_id)
    )
    if vectors_file is None:
        return Retriever(
            kb,
            passages_file,
            notice=f"BM25 only: no passage embeddings for {model.model_id}; {_BUILD_HINT}",
        )
    try:
        vectors = index.load_vectors(vectors_file)
    except (OSError, ValueError) as exc:
        return Retriever(kb, passages_file, notice=f"BM25 only: {vectors_file}: {exc}")
    return Retriever(kb, passages_file, vectors, model)
