"""The one small interface every LLM backend implements, and the message types."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]

#: How a backend constrains structured output: a llama.cpp grammar compiled here,
#: a JSON schema handed to a server, or nothing (pydantic alone decides).
Constraint = Literal["gbnf", "server-schema", "none"]


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
    """What one generation cost, filled in by the backend as it goes.

    :param prompt_tokens: tokens in the prompt, cached ones included.
    :param cached_tokens: prompt tokens whose KV-cache entries were reused from an earlier
        turn (not read again).
    :param completion_tokens: tokens generated.
    :param first_token_s: seconds from the request to the first generated token.
    :param total_s: seconds from the request to the last token.
    :param constraint: how the output was constrained (``gbnf``, ``server-schema``, ``none``);
        empty for free text.
    :param prompt_name: the prompt template the messages came from (``name@version``), for
        the log.
    :param log_id: the row of this generation in the LLM log, once written.
    """

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    first_token_s: float = 0.0
    total_s: float = 0.0
    constraint: str = ""
    prompt_name: str = ""
    log_id: int | None = None
    extra: dict[str, object] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """An LLM backend: turns chat messages into a stream of text pieces.

    A backend is constructed from :class:`assistant.config.LLMConfig` and may load
    its model lazily, on the first call to :meth:`stream`.
    """

    name: str
    model_name: str
    #: how :meth:`stream` honours ``json_schema``
    constraint: Constraint

    def stream(
        self,
        messages: list[Message],
        max_tokens: int,
        stats: GenerationStats | None = None,
        json_schema: dict[str, Any] | None = None,
    ) -> Iterator[str]:
        """Yield the answer's text as it is generated.

        :param messages: the conversation so far, system message first.
        :param max_tokens: the most tokens to generate.
        :param stats: filled in with token counts and timings when given.
        :param json_schema: constrain the answer to one JSON object of this (flat) schema,
            as far as the backend can (see :attr:`constraint`).
        :raises LLMUnavailable: the model cannot be loaded or reached.
        :raises SchemaNotSupported: the backend cannot constrain output to this schema.
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Return how many tokens ``text`` takes with this model's own tokenizer."""
        ...


def approx_tokens(text: str) -> int:
    """Estimate a token count when no tokenizer can be reached (about 3.5 bytes a token).

    Kernel logs are dense in hex and symbols, so this errs on the high side.
    """
    return (len(text.encode("utf-8")) * 2 + 6) // 7
