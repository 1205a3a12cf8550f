"""The one small interface every LLM backend implements, and the message types."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat message.

    :param role: ``system``, ``user`` or ``assistant``.
    :param content: the text.
    """

    role: Role
    content: str


@dataclass
class GenerationStats:
    """What one generation cost.

    :param prompt_tokens: tokens read from the prompt (after any cache reuse).
    :param completion_tokens: tokens generated.
    :param first_token_s: seconds from the request to the first generated token.
    :param total_s: seconds from the request to the last token.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float = 0.0
    total_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """An LLM backend: turns chat messages into a stream of text pieces.

    A backend is constructed from :class:`assistant.config.LLMConfig` and may load
    its model lazily, on the first call to :meth:`stream`.
    """

    name: str
    model_name: str

    def stream(
        self, messages: list[Message], max_tokens: int, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        """Yield the answer's text as it is generated.

        :param messages: the conversation so far, system message first.
        :param max_tokens: the most tokens to generate.
        :param stats: filled in with token counts and timings when given.
        :raises LLMUnavailable: the model cannot be loaded or reached.
        """
        ...
