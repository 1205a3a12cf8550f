"""The chat's one path for a plain question ("what is a soft lockup?"): cited documentation.

:class:`GroundedAnswerer` is the adapter :class:`~assistant.chat.session.ChatSession`
calls for such questions; retrieval, the sentences' choice and their check live in
:mod:`assistant.knowledge.answer` (quoted without a model; chosen, or written and checked
sentence by sentence, with one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from assistant.chat.cues import is_small_talk
from assistant.llm.base import Backend, GenerationStats


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


@dataclass
class GroundedAnswerer:
    """Answer in cited sentences retrieved from the kernel's documentation.

    Retrieval and the sentences' choice live in :mod:`assistant.knowledge.answer`
    (quoted without a model; chosen by the model and checked with one).

    :param backend: the model, or ``None`` (the best passages are quoted).
    :param fallback: what to say when no documentation matches (the chat's help).
    :param mode: :data:`assistant.knowledge.answer.MODES`; in ``write`` mode the model's
        draft streams through ``on_token`` before the checked answer replaces it.
    """

    backend: Backend | None
    fallback: Callable[[], str] = lambda: ""
    mode: str = "auto"

    def __call__(
        self,
        question: str,
        on_token: Callable[[str], None] | None,
        cancel: threading.Event | None,
    ) -> Answer:
        """Answer one question: the model's draft (``write`` mode) streams through
        ``on_token``; otherwise the whole answer reaches it once it is checked."""
        from assistant.knowledge.answer import answer

        if is_small_talk(question):
            return Answer(self.fallback())
        found = answer(question, self.backend, mode=self.mode, on_token=on_token)
        if not found.sources:
            return Answer(self.fallback(), found.notice or "no documentation matched the question")
        if cancel is not None and cancel.is_set():
            return Answer("", "cancelled")
        if on_token is not None and not found.draft:
            on_token(found.text)
        cited = [p.cite for p in found.sources]
        draft = found.draft or found.text
        return Answer(found.text, found.notice, draft, found.stats, cited, found.to_dict())

    def warm(self) -> None:
        """Load the retrieval index (and the model's fixed prompt) before the first question."""
        from assistant.knowledge.answer import warm

        warm(self.backend)
