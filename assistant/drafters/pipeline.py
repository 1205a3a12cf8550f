"""The one checked-draft pipeline: draft → cut → check sentence by sentence → show or withhold.

Every piece of prose a model writes for a person (a report's "What happened"
paragraph, a sysctl's documentation paragraph, a tuning explanation, a drive
finding's explanation, a chat answer) goes through :func:`checked_draft`:

1. the model drafts from a rendered prompt (:func:`draft_prompt`), with the prompt's
   own budget, stops and grammar;
2. the draft is cut at its last complete sentence and split into sentences;
3. each sentence is checked against the evidence by the shared checker
   (:func:`assistant.drafters.checker.check_draft`, plus an optional per-sentence check
   of the caller's); a sentence that fails is dropped — or, with ``policy="withhold"``,
   the whole draft is withheld;
4. what is left must still be a draft (at least ``min_sentences`` sentences and the
   evidence's ``min_words``), else it is withheld;
5. the outcome (shown text, every dropped sentence and why, or the refusal) is
   recorded with the generation in the LLM log, and logged on the ``kassist.drafts``
   logger.

With no backend (``--backend none``, ``--no-llm``) nothing is generated and the
caller's deterministic text stands: ``Draft(None, "no model")``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from assistant.drafters.checker import Evidence, check_draft, cut_to_sentence, split_sentences
from assistant.errors import KassistError
from assistant.llm.base import Backend, GenerationStats, Message, Sampling
from assistant.llm.grammar import prose_gbnf
from assistant.llm.prompts import Prompt, load_prompt

log = logging.getLogger("kassist.drafts")

#: The fewest words one sentence of a draft may have.
SENTENCE_MIN_WORDS = 4
#: What happens to a draft with a failing sentence.
Policy = Literal["drop", "withhold"]
#: A caller's own check of one sentence: the problems found (empty: it passes).
SentenceCheck = Callable[[str], list[str]]


@dataclass(frozen=True)
class DraftPrompt:
    """A rendered prompt and how to generate from it.

    :param messages: the chat messages.
    :param max_tokens: the answer's budget.
    :param sampling: stops, grammar and sampling (``None``: the backend's defaults).
    :param label: ``name@version`` of the prompt, for the LLM log.
    """

    messages: list[Message]
    max_tokens: int
    sampling: Sampling | None = None
    label: str = ""

    def lines(self) -> list[str]:
        """Return the prompt's non-blank lines (a draft must not echo them)."""
        return [ln for m in self.messages for ln in m.content.splitlines() if ln.strip()]


@dataclass(frozen=True)
class Draft:
    """The outcome of one checked draft.

    :param text: the sentences that passed, joined; ``None`` when the draft is withheld
        (or no model ran).
    :param why: one line: why it was withheld, or which sentences were dropped and why;
        empty when every sentence passed.
    :param raw: what the model generated.
    :param kept: the sentences shown.
    :param dropped: each dropped sentence with its problems.
    :param stats: the generation's cost.
    """

    text: str | None
    why: str = ""
    raw: str = ""
    kept: tuple[str, ...] = ()
    dropped: tuple[tuple[str, str], ...] = ()
    stats: GenerationStats = field(default_factory=GenerationStats)

    @property
    def shown(self) -> bool:
        """Tell whether any of the model's text is shown."""
        return self.text is not None


# A token that is a name, not a word: it holds a digit, an underscore, a slash, a dot, an
# ampersand or an arrow (a lock class: ``&(&pool->lock)->rlock``).
_NAME_MARK = re.compile(r"[\d_/.+&]|->")
_ARROWS = frozenset({"->", "<-"})


def _unwrapped(token: str) -> str:
    # "(sda1)" -> "sda1", but "(&(&r->lock)->rlock)" keeps its inner parentheses.
    token = token.strip(".:'\"")
    while token.startswith("(") and token.endswith(")") and _balanced(token[1:-1]):
        token = token[1:-1]
    while token.startswith("(") and not _balanced(token):
        token = token[1:]
    while token.endswith(")") and not _balanced(token):
        token = token[:-1]
    return token.strip(".:'\"")


def _balanced(text: str) -> bool:
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


def names_of(facts: Sequence[tuple[str, str]]) -> list[str]:
    """Return the names in the facts' values that prose may use (see ``prose_gbnf``).

    >>> names_of([("Lock", "&(&info->lock)->rlock, held by task 12 (sshd)")])
    ['&(&info->lock)->rlock', '12']
    """
    found: list[str] = []
    for _, value in facts:
        for raw in re.split(r"[\s,;]+", value):
            token = _unwrapped(raw)
            if token and token not in _ARROWS and _NAME_MARK.search(token) and token not in found:
                found.append(token)
    return found


def sampling_of(prompt: Prompt, facts: Sequence[tuple[str, str]] | None = None) -> Sampling:
    """Return the ``[sampling]`` table of a prompt's front matter as :class:`Sampling`.

    With ``names_grammar = true`` in the table and ``facts`` given, the answer is
    constrained to prose whose only names are the facts' (:func:`names_of`), in at most
    ``sentences`` sentences (default 2).
    """
    table: dict[str, Any] = dict(prompt.meta.get("sampling", {}))
    if "stop" in table:
        table["stop"] = tuple(table["stop"])
    names_grammar = bool(table.pop("names_grammar", False))
    sentences = int(table.pop("sentences", 2))
    sampling = Sampling(**table)
    if names_grammar and facts is not None:
        sampling = replace(sampling, grammar=prose_gbnf(names_of(facts), sentences))
    return sampling


def draft_prompt(
    prompt_name: str, facts: Sequence[tuple[str, str]] | None = None, **context: Any
) -> DraftPrompt:
    """Load and render a prompt of ``prompts/`` with its budget and ``[sampling]`` table.

    :param facts: (label, value) pairs; with ``names_grammar`` in the prompt, the only
        names the answer may use are theirs. They are also passed to the template as
        ``facts``.
    """
    prompt = load_prompt(prompt_name)
    if facts is not None:
        context["facts"] = list(facts)
    return DraftPrompt(
        messages=prompt.render(**context),
        max_tokens=int(prompt.meta.get("max_tokens", 80)),
        sampling=sampling_of(prompt, facts),
        label=prompt.label,
    )


def check_sentences(
    raw: str,
    evidence: Evidence,
    sentence_check: SentenceCheck | None = None,
    policy: Policy = "drop",
    min_sentences: int = 1,
    sentence_words: int = SENTENCE_MIN_WORDS,
) -> Draft:
    """Check a draft sentence by sentence (steps 2 to 4 above); no generation, no log.

    The evidence's ``max_sentences`` keeps the first that many passing sentences; its
    ``min_words`` and ``max_words`` bound the whole text that is shown;
    ``sentence_words`` is the fewest words of one sentence.
    """
    cut = cut_to_sentence(" ".join(raw.split()))
    sentences = split_sentences(cut) if cut and cut[-1:] in ".!?\"')]`" else []
    if not sentences:
        return Draft(None, "the model wrote no complete sentence", raw)
    one = replace(evidence, min_words=sentence_words, max_sentences=1)
    kept: list[str] = []
    dropped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for sentence in sentences:
        problems = list(check_draft(sentence, one).problems)
        if sentence.lower() in seen:
            problems.append("repeats an earlier sentence")
        if sentence_check is not None and not problems:
            problems += sentence_check(sentence)
        seen.add(sentence.lower())
        if problems:
            dropped.append((sentence, "; ".join(problems)))
        else:
            kept.append(sentence)
    if evidence.max_sentences is not None:
        kept = kept[: evidence.max_sentences]
    text = " ".join(kept)
    words = len(text.split())
    if dropped and policy == "withhold":
        return _withheld(raw, kept, dropped, f"a sentence failed the check ({dropped[0][1]})")
    if len(kept) < min_sentences or words < evidence.min_words:
        why = dropped[0][1] if dropped else f"too short ({words} words)"
        return _withheld(raw, kept, dropped, why)
    if words > evidence.max_words:
        return _withheld(raw, kept, dropped, f"too long ({words} words)")
    note = ""
    if dropped:
        n = len(dropped)
        note = f"{n} sentence{'s' if n > 1 else ''} dropped ({dropped[0][1]})"
    return Draft(text, note, raw, tuple(kept), tuple(dropped))


def _withheld(raw: str, kept: list[str], dropped: list[tuple[str, str]], why: str) -> Draft:
    return Draft(None, f"withheld: {why}", raw, tuple(kept), tuple(dropped))


def checked_draft(
    prompt: DraftPrompt,
    evidence: Evidence,
    backend: Backend | None,
    sentence_check: SentenceCheck | None = None,
    policy: Policy = "drop",
    min_sentences: int = 1,
    sentence_words: int = SENTENCE_MIN_WORDS,
) -> Draft:
    """Draft with the model, check sentence by sentence, log the outcome.

    :param prompt: the rendered prompt (:func:`draft_prompt`).
    :param evidence: what the draft may say (its ``prompt_lines`` default to the prompt's).
    :param backend: the model; ``None``: no draft (``Draft(None, "no model")``).
    :param sentence_check: the caller's own check of each sentence (e.g. it must say
        something the documentation says).
    :param policy: ``drop`` failing sentences and show the rest, or ``withhold`` the
        draft when any fails.
    :param min_sentences: the fewest passing sentences that make a draft worth showing.
    :param sentence_words: the fewest words of one sentence (a documentation's
        "Defaults to 3." is a whole one).
    """
    if backend is None:
        return Draft(None, "no model")
    if not evidence.prompt_lines:
        evidence = replace(evidence, prompt_lines=prompt.lines())
    stats = GenerationStats(prompt_name=prompt.label)
    try:
        raw = "".join(
            backend.stream(prompt.messages, prompt.max_tokens, stats, sampling=prompt.sampling)
        )
    except KassistError as exc:
        draft = Draft(None, f"withheld: the model failed ({exc.one_line()})", stats=stats)
        _record(backend, draft)
        return draft
    draft = replace(
        check_sentences(raw, evidence, sentence_check, policy, min_sentences, sentence_words),
        stats=stats,
    )
    _record(backend, draft)
    return draft


def _record(backend: Backend, draft: Draft) -> None:
    outcome = {
        "text": draft.text,
        "kept": list(draft.kept),
        "dropped": [{"sentence": s, "why": why} for s, why in draft.dropped],
    }
    backend.record_outcome(
        draft.stats, outcome if draft.shown else None, None if draft.shown else draft.why
    )
    log.info(
        "draft %s: %s (%d kept, %d dropped)%s",
        draft.stats.prompt_name or "?",
        "shown" if draft.shown else "withheld",
        len(draft.kept),
        len(draft.dropped),
        f": {draft.why}" if draft.why else "",
    )
