"""The chat's one path for a plain question ("what is a soft lockup?"): facts, then prose.

:class:`DocsAnswerer` finds documentation for the question (the kernel knowledge base),
streams the model's answer written only from it, and shows it only when the shared
meaning-and-grounding checker passes it; otherwise (or with no model) it quotes the
documentation. It is the one adapter :class:`~assistant.chat.session.ChatSession` calls
for such questions: a grounded-answer function with citations plugs in by giving the
session another object with the same ``__call__`` and ``warm``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from assistant.chat.cues import is_small_talk
from assistant.llm.base import Backend, GenerationStats, Message

ANSWER_PROMPT = "chat_answer"
#: Characters of the facts handed to the model.
EVIDENCE_CHARS = 2400
#: Characters of a documentation section handed to the model for a plain answer.
FACT_CHARS = 500


@dataclass
class Answer:
    """What a plain question got.

    :param text: the answer shown (Markdown); empty when there was nothing to say.
    :param notice: one line when the model's prose was withheld, or the answer cancelled.
    :param draft: the model's text as it streamed, before the check.
    """

    text: str
    notice: str = ""
    draft: str = ""
    stats: GenerationStats | None = None
    cited: list[str] = field(default_factory=list)
    #: machine-readable detail (``kassist ask --format json``'s ``data``).
    data: dict[str, object] = field(default_factory=dict)


class Answerer(Protocol):
    """What the session needs from an answer path."""

    def __call__(
        self,
        question: str,
        on_token: Callable[[str], None] | None,
        cancel: threading.Event | None,
    ) -> Answer:
        """Answer one question, streaming the prose through ``on_token``."""
        ...

    def warm(self) -> None:
        """Prepare (load the model, cache the fixed prompt) before the first question."""
        ...


def knowledge_facts(question: str) -> str:
    """Return documentation sections for a question, cited; ``""`` without a knowledge base."""
    from assistant.knowledge import try_open

    kb = try_open()
    if kb is None:
        return ""
    # One section, its opening only: a short prompt keeps a follow-up's first token near a
    # second with the bundled model (the whole section is cited, not quoted).
    hits = kb.search(question, limit=1)
    return "\n\n".join(f"[{h.cite}] {h.title}: {h.text[:FACT_CHARS]}" for h in hits)


def facts_answer(facts: str) -> str:
    """Quote the first documentation section (the answer when no model may write one)."""
    first = facts.split("\n\n", 1)[0]
    return "From the kernel's documentation:\n\n> " + first[:800].replace("\n", "\n> ")


def check(draft: str, facts: str, messages: list[Message]) -> str | None:
    """Run the shared checker on a draft: ``None`` when it may be shown, else why not."""
    from assistant.drafters.checker import Evidence, check_draft

    if not draft:
        return "empty"
    verdict = check_draft(draft, Evidence(text=facts, prompt_lines=[m.content for m in messages]))
    return None if verdict.ok else "; ".join(verdict.problems)[:200]


@dataclass
class DocsAnswerer:
    """Answer from the kernel's documentation; the model writes only what the checker passes.

    :param backend: the model, or ``None`` (the documentation is quoted).
    :param facts: where the documentation for a question comes from.
    :param fallback: what to say when nothing matches (the chat's help).
    """

    backend: Backend | None
    facts: Callable[[str], str] = knowledge_facts
    fallback: Callable[[], str] = lambda: ""

    def __call__(
        self,
        question: str,
        on_token: Callable[[str], None] | None,
        cancel: threading.Event | None,
    ) -> Answer:
        """Answer one question (see the module's docstring)."""
        facts = "" if is_small_talk(question) else self.facts(question)
        if self.backend is None or not facts:
            if facts:
                return Answer(facts_answer(facts))
            notice = (
                ""
                if self.backend is None or is_small_talk(question)
                else ("no documentation matched the question; showing what I can do")
            )
            return Answer(self.fallback(), notice)
        from assistant.llm.prompts import load_prompt

        prompt = load_prompt(ANSWER_PROMPT)
        messages = prompt.render(question=question[:600], facts=facts[:EVIDENCE_CHARS])
        stats = GenerationStats(prompt_name=prompt.label)
        pieces: list[str] = []
        notice = ""
        max_tokens = int(prompt.meta.get("max_tokens", 120))
        for piece in self.backend.stream(messages, max_tokens, stats):
            if cancel is not None and cancel.is_set():
                notice = "cancelled"
                break
            pieces.append(piece)
            if on_token is not None:
                on_token(piece)
        draft = "".join(pieces)
        verdict = check(draft.strip(), facts, messages)
        if verdict is None:
            return Answer(draft.strip(), notice, draft, stats)
        withheld = f"the model's answer was withheld ({verdict})"
        return Answer(facts_answer(facts), notice or withheld, draft, stats)

    def warm(self) -> None:
        """Evaluate the answer prompt's fixed system part once, so its KV cache is kept.

        A backend that reuses a cached prefix (llama_cpp) then reads only a question's own
        tokens; the TUI calls this in a worker when it opens.
        """
        if self.backend is None:
            return
        from assistant.llm.prompts import load_prompt

        messages = load_prompt(ANSWER_PROMPT).render(question="", facts="")
        for _ in self.backend.stream(messages, 1):
            break


@dataclass
class GroundedAnswerer:
    """Answer in cited sentences retrieved from the kernel's documentation.

    Retrieval and the sentences' choice live in :mod:`assistant.knowledge.answer`
    (quoted without a model; chosen by the model and checked with one).

    :param backend: the model, or ``None`` (the best passages are quoted).
    :param fallback: what to say when no documentation matches (the chat's help).
    """

    backend: Backend | None
    fallback: Callable[[], str] = lambda: ""

    def __call__(
        self,
        question: str,
        on_token: Callable[[str], None] | None,
        cancel: threading.Event | None,
    ) -> Answer:
        """Answer one question; the whole answer reaches ``on_token`` once it is checked."""
        from assistant.knowledge.answer import answer

        found = answer(question, self.backend)
        if not found.sources:
            return Answer(self.fallback(), found.notice or "no documentation matched the question")
        if cancel is not None and cancel.is_set():
            return Answer("", "cancelled")
        if on_token is not None:
            on_token(found.text)
        cited = [p.cite for p in found.sources]
        return Answer(found.text, found.notice, found.text, found.stats, cited, found.to_dict())

    def warm(self) -> None:
        """Load the retrieval index (and the model's fixed prompt) before the first question."""
        from assistant.knowledge.answer import warm

        warm(self.backend)
