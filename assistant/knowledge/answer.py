"""Grounded answers: retrieve the documentation, then answer in cited sentences from it.

Without a model (``--backend none``) the answer quotes: the best passage's most relevant
sentences, then the best sentence of each of the next passages, each with a ``[n]``
citation to its ``Documentation/...#anchor``. A small model is a better reader than
writer, and on the dev set its own choice of sentences answered fewer questions than the
quote, so a model never replaces the quote, it leads it: in ``select`` mode (the default
with a model) the sentences of the retrieved passages are numbered, the model names the
ones that answer the question (best first), and those are shown verbatim first, then the
rest of the quote; in ``write`` mode the model writes sentences ending in the ``[n]`` of
the passage they come from, each must pass the checker against that passage (names,
numbers, units, negations) or is dropped, and the quote follows what passed. An invalid
choice or draft leaves the quote alone. Every answer ends with its sources, so the
citation is in its text.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assistant.knowledge.passages import Passage, plain, term_name, units
from assistant.knowledge.retrieve import (
    Hit,
    Retrieval,
    Retriever,
    held_weight,
    open_retriever,
    query_terms,
    term_weights,
    words_of,
)

if TYPE_CHECKING:
    from assistant.knowledge.base import KnowledgeBase
    from assistant.llm.base import Backend, GenerationStats

#: Passages whose sentences an answer may use.
READ_PASSAGES = 5
#: Sentences offered to the model to choose from.
OFFERED = 10
#: Most sentences in an answer.
MAX_SENTENCES = 4
#: Most characters of a quoted answer (a passage this short is quoted whole).
QUOTE_CHARS = 900
#: Most sentences of a quoted answer from retrieval's first passage.
MAX_QUOTED = 6
#: Sentences a quoted answer adds from the other passages read (the best of each).
OTHER_QUOTED = 2
SELECT_PROMPT = "answer_select"
WRITE_PROMPT = "answer_write"
MODES = ("auto", "quote", "select", "write")


@dataclass(frozen=True)
class Sentence:
    """One sentence of an answer and the passage it comes from.

    :param text: the sentence as shown (without its citation mark).
    :param source: the 1-based number of its source in :attr:`Answer.sources`.
    :param quoted: True when it is the passage's own sentence, False when the model
        wrote it (and the checker confirmed it against the passage).
    """

    text: str
    source: int
    quoted: bool = True


@dataclass
class Answer:
    """A cited answer to a question.

    :param question: the question.
    :param sentences: the answer's sentences, in order.
    :param sources: the passages cited, ``[n]`` being ``sources[n - 1]``.
    :param mode: how the sentences were chosen: ``quote``, ``select`` or ``write``.
    :param retrieval: what retrieval found.
    :param notice: one line when something degraded (no embeddings, the model's choice
        refused, a sentence dropped by the checker), else "".
    :param dropped: the model's sentences the checker refused, with why.
    :param stats: the model's generation, when one ran.
    :param draft: what the model wrote in ``write`` mode, before the check.
    """

    question: str
    sentences: list[Sentence] = field(default_factory=list)
    sources: list[Passage] = field(default_factory=list)
    mode: str = "quote"
    retrieval: Retrieval | None = None
    notice: str = ""
    dropped: list[str] = field(default_factory=list)
    stats: GenerationStats | None = None
    draft: str = ""

    @property
    def text(self) -> str:
        """Return the answer as Markdown: cited sentences, then the numbered sources."""
        if not self.sentences:
            return "The kernel's documentation here has nothing that answers this."
        body = " ".join(f"{s.text} [{s.source}]" for s in self.sentences)
        cited = sorted({s.source for s in self.sentences})
        lines = [f"[{n}] {self.sources[n - 1].cite}" for n in cited]
        return body + "\n\nSources:\n" + "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return the answer as JSON-ready data."""
        return {
            "answer": self.text,
            "mode": self.mode,
            "sentences": [
                {"text": s.text, "source": s.source, "quoted": s.quoted} for s in self.sentences
            ],
            "sources": [
                {"cite": p.cite, "section": p.section, "heading": p.heading} for p in self.sources
            ],
            "retrieval": self.retrieval.mode if self.retrieval else None,
            "notice": self.notice or None,
        }


@dataclass(frozen=True)
class Candidate:
    """A sentence an answer may quote: its text, its passage's rank and its relevance."""

    text: str
    passage: int
    index: int
    score: float


# ---------------------------------------------------------------- retrieval, cached


@functools.lru_cache(maxsize=2)
def _retriever_for(path: str) -> Retriever:
    from pathlib import Path

    from assistant.knowledge.base import KnowledgeBase

    return open_retriever(KnowledgeBase(Path(path)))


def retriever(kb: KnowledgeBase | None = None) -> Retriever | None:
    """Return the retriever for ``kb`` (default: the installed knowledge base), loaded once
    per process; None when no knowledge base is built."""
    if kb is None:
        from assistant.knowledge.base import try_open

        kb = try_open()
        if kb is None:
            return None
    return _retriever_for(str(kb.path))


# ---------------------------------------------------------------- choosing sentences


def candidates(question: str, hits: list[Hit], encoder: Any = None) -> list[Candidate]:
    """Return the quotable sentences of the first :data:`READ_PASSAGES` passages, scored
    by how well each answers ``question``: cosine similarity when the embedding model is
    loaded, and the question's topic words it holds, each weighted by how few of the
    sentences hold it."""
    terms = query_terms(question)
    found: list[tuple[str, int, int]] = []
    words: list[set[str]] = []
    read = hits[:READ_PASSAGES]
    shared = _shared_sentences([h.passage for h in read])
    for rank, hit in enumerate(read):
        # Every sentence of a passage holds its heading's words: the heading tells which
        # passage answers, never which of its sentences (the first, which the name heads,
        # would otherwise win on the name alone). A sentence other passages say too
        # ("A read-write single value file which exists on non-root cgroups.") holds
        # nothing of its own.
        heading = words_of(hit.passage.heading)
        for i, text in enumerate(units(hit.passage.text, hit.passage.heading)):
            found.append((text, rank, i))
            said_elsewhere = _body(text, hit.passage.heading) in shared
            words.append(heading if said_elsewhere else words_of(text) | heading)
    cosine = [0.0] * len(found)
    if encoder is not None and found:
        vectors = encoder.encode([question, *(t for t, _, _ in found)], max_tokens=96)
        cosine = [float(v) for v in vectors[1:] @ vectors[0]]
    weights = term_weights(terms, words)
    scored = []
    for (text, rank, i), cos, held in zip(found, cosine, words, strict=True):
        scored.append(Candidate(text, rank, i, cos + 0.1 * held_weight(weights, held)))
    return scored


def _body(sentence: str, heading: str) -> str:
    # A sentence without the name :func:`units` put before it.
    name = plain(term_name(heading))
    return sentence[len(name) + 2 :] if name and sentence.startswith(f"{name}: ") else sentence


def _shared_sentences(read: list[Passage]) -> set[str]:
    # The sentences (without their heading's name) that more than one passage holds.
    seen: dict[str, set[int]] = {}
    for n, passage in enumerate(read):
        for text in units(passage.text, passage.heading):
            seen.setdefault(_body(text, passage.heading), set()).add(n)
    return {text for text, where in seen.items() if len(where) > 1}


def quote(cands: list[Candidate]) -> list[Candidate]:
    """Return the sentences a model-free answer quotes.

    From retrieval's first passage: all of it when short (at most :data:`MAX_QUOTED`
    sentences), else its first sentence and its most relevant others, up to
    :data:`QUOTE_CHARS`, in its order; then the most relevant sentence of the other
    passages read.
    (Measured on the tune part: trusting another passage than retrieval's first, by
    question words or embeddings, answered fewer questions.)
    """
    own = [c for c in cands if c.passage == 0]
    chosen: list[Candidate] = []
    if sum(len(c.text) for c in own) <= QUOTE_CHARS:
        chosen = own[:MAX_QUOTED]
    elif own:
        chosen = [own[0]]
        for c in sorted(own[1:], key=lambda c: -c.score):
            size = sum(len(x.text) for x in chosen) + len(c.text)
            if len(chosen) < MAX_QUOTED and size <= QUOTE_CHARS:
                chosen.append(c)
        chosen.sort(key=lambda c: c.index)
    seen = {c.text for c in chosen}
    taken: set[int] = set()
    for c in sorted((c for c in cands if c.passage > 0), key=lambda c: -c.score):
        if len(taken) == OTHER_QUOTED:
            break
        if c.passage not in taken and c.text not in seen and c.score > 0:
            chosen.append(c)
            taken.add(c.passage)
            seen.add(c.text)
    return chosen


def offered(cands: list[Candidate]) -> list[Candidate]:
    """Return the sentences offered to the model, in passage and sentence order."""
    top = sorted(cands, key=lambda c: -c.score)[:OFFERED]
    return sorted(top, key=lambda c: (c.passage, c.index))


# ---------------------------------------------------------------- the answer


def answer(
    question: str,
    backend: Backend | None = None,
    kb: KnowledgeBase | None = None,
    mode: str = "auto",
    k: int = 5,
    on_token: Callable[[str], None] | None = None,
) -> Answer:
    """Answer a question from the kernel's documentation, each sentence cited.

    :param backend: the model that selects or writes sentences; None (or the ``none``
        backend) quotes.
    :param kb: the knowledge base (default: the installed one).
    :param mode: ``auto`` (select with a model, quote without), ``quote``, ``select`` or
        ``write``.
    :param k: passages retrieved.
    :param on_token: receives the model's draft as it is written (``write`` mode), before
        the check; the answer's sentences are what passed it.
    """
    found = retriever(kb)
    if found is None:
        from assistant.knowledge.base import BUILD_HINT

        return Answer(question, notice=f"no kernel knowledge base: {BUILD_HINT}")
    retrieval = found.search(question, k)
    hits = retrieval.hits
    result = Answer(question, mode="quote", retrieval=retrieval, notice=retrieval.notice)
    result.sources = [h.passage for h in hits[:READ_PASSAGES]]
    # Sentences are scored by question words: embedding them too cost seconds a question
    # on a busy machine and gained 1 of 66 tune questions.
    cands = candidates(question, hits)
    use_model = backend is not None and getattr(backend, "name", "none") != "none"
    wanted = ("select" if use_model else "quote") if mode == "auto" else mode
    quoted = [Sentence(c.text, c.passage + 1) for c in quote(cands)]
    chosen: list[Sentence] | None = None
    if use_model and wanted == "select":
        picked = _select(question, cands, backend, result)
        # The model reorders and adds, never removes: its choice leads, then what the
        # quote holds besides (measured: the model's choice alone answered fewer
        # questions than the quote).
        if picked:
            shown = {s.text for s in picked}
            chosen = picked + [s for s in quoted if s.text not in shown]
    elif use_model and wanted == "write":
        written = _write(question, cands, result.sources, backend, result, on_token)
        if written:  # checked sentences first, then the quote they may have missed
            chosen = written + [s for s in quoted if s.text not in {w.text for w in written}]
    if chosen:
        result.mode = wanted
    else:
        chosen = quoted
    result.sentences = chosen
    return result


def _select(
    question: str, cands: list[Candidate], backend: Any, result: Answer
) -> list[Sentence] | None:
    from assistant.llm.errors import LLMUnavailable, StructuredRefusal
    from assistant.llm.prompts import load_prompt
    from assistant.llm.structured import run_step

    menu = offered(cands)
    if not menu:
        return None
    prompt = load_prompt(SELECT_PROMPT)
    lines = [f"{n}. {c.text}" for n, c in enumerate(menu, 1)]
    try:
        step = run_step(
            backend,
            prompt,
            {"question": question[:600], "sentences": "\n".join(lines)},
            int(prompt.meta.get("max_tokens", 24)),
        )
    except (StructuredRefusal, LLMUnavailable) as exc:
        result.notice = _join(result.notice, f"the model's choice was refused ({exc}); quoting")
        return None
    result.stats = step.stats[-1] if step.stats else None
    picked: list[int] = []
    for n in step.value.sentences:
        if 1 <= n <= len(menu) and n not in picked:
            picked.append(n)
    if not picked:
        result.notice = _join(result.notice, "the model chose no sentence; quoting")
        return None
    return [Sentence(menu[n - 1].text, menu[n - 1].passage + 1) for n in picked[:MAX_SENTENCES]]


_CITE = re.compile(r"\s*\[(\d+)\]\s*")
_LEADING_CITES = re.compile(r"(?:\s*\[\d+\])+")


def _write(
    question: str,
    cands: list[Candidate],
    sources: list[Passage],
    backend: Any,
    result: Answer,
    on_token: Callable[[str], None] | None = None,
) -> list[Sentence] | None:
    from assistant.llm.base import GenerationStats
    from assistant.llm.errors import LLMUnavailable
    from assistant.llm.prompts import load_prompt

    prompt = load_prompt(WRITE_PROMPT)
    blocks = []
    for n, passage in enumerate(sources, 1):
        text = " ".join(c.text for c in cands if c.passage == n - 1)
        blocks.append(f"[{n}] {passage.heading}: {text[:700]}")
    messages = prompt.render(question=question[:600], passages="\n\n".join(blocks))
    stats = GenerationStats(prompt_name=prompt.label)
    pieces: list[str] = []
    try:
        for piece in backend.stream(messages, int(prompt.meta.get("max_tokens", 160)), stats):
            pieces.append(piece)
            if on_token is not None:
                on_token(piece)
    except LLMUnavailable as exc:
        result.notice = _join(result.notice, f"no model ({exc}); quoting")
        return None
    result.stats = stats
    result.draft = "".join(pieces)
    kept = []
    for text, source in split_cited(result.draft):
        if not 1 <= source <= len(sources):
            result.dropped.append(f"{text!r}: cites [{source}], which is not a source")
            continue
        evidence = " ".join(c.text for c in cands if c.passage == source - 1)
        why = check_sentence(text, evidence)
        if why:
            result.dropped.append(f"{text!r}: {why}")
            continue
        quoted = any(text == c.text for c in cands)
        kept.append(Sentence(text, source, quoted))
    if result.dropped:
        result.notice = _join(
            result.notice, f"{len(result.dropped)} of the model's sentences failed the check"
        )
    return kept[:MAX_SENTENCES] or None


def split_cited(draft: str) -> list[tuple[str, int]]:
    """Return a written answer's (sentence, cited source number) pairs; a sentence without
    a ``[n]`` is left out (it cites nothing).

    >>> split_cited("Swappiness is 60 [1]. It ranges to 200. [2] Done.")
    [('Swappiness is 60.', 1), ('It ranges to 200.', 2)]
    """
    cited: list[tuple[str, list[int]]] = []
    for piece in re.split(r"(?<=[.!?\]])\s+", draft.strip()):
        # marks written after a sentence's full stop ("... 200. [2] Done.") are its own
        lead = _LEADING_CITES.match(piece)
        start = lead.end() if lead and cited else 0
        if start:
            cited[-1][1].extend(int(m) for m in re.findall(r"\[(\d+)\]", piece[:start]))
        rest = piece[start:]
        cited.append((rest, [int(m) for m in re.findall(r"\[(\d+)\]", rest)]))
    out = []
    for piece, marks in cited:
        text = _CITE.sub(" ", piece).strip()
        text = re.sub(r"\s+([.!?])", r"\1", text)
        if marks and text:
            if not text.endswith((".", "!", "?")):
                text += "."
            out.append((text, marks[0]))
    return out


_NEGATION = re.compile(r"\b(?:not|never|no|cannot|can't|won't|don't|doesn't|isn't|without)\b")


def check_sentence(sentence: str, evidence: str) -> str:
    """Return why a written sentence is not supported by its passage ("" when it is).

    The shared checker holds its names, numbers and units to the passage; a negation
    the passage does not have is refused too.
    """
    from assistant.drafters.checker import Evidence, check_draft

    verdict = check_draft(sentence, Evidence(text=evidence, min_words=3, max_words=60))
    if not verdict.ok:
        return "; ".join(verdict.problems)
    said = set(_NEGATION.findall(sentence.lower()))
    if said and not said & set(_NEGATION.findall(evidence.lower())):
        return f"says {sorted(said)[0]!r}, the passage does not negate"
    return ""


def _join(first: str, second: str) -> str:
    return f"{first}; {second}" if first else second


def warm(backend: Backend | None = None, kb: KnowledgeBase | None = None) -> None:
    """Load the retrieval index and the embedding model, and with a model, evaluate the
    selection prompt's fixed part once (a backend that keeps its KV cache then reads only a
    question's own tokens). The chat calls it before the first question."""
    found = retriever(kb)
    if found is not None and found.encoder is not None:
        found.encoder.encode(["warm"])
    if backend is None or getattr(backend, "name", "none") == "none":
        return
    from assistant.llm.errors import LLMUnavailable
    from assistant.llm.prompts import load_prompt

    messages = load_prompt(SELECT_PROMPT).render(question="", sentences="", schema="")
    try:
        for _ in backend.stream(messages, 1):
            break
    except LLMUnavailable:
        return
