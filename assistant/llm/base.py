"""The one small interface every LLM backend implements, and the message types."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from assistant.config import LLMConfig

#: ``tool`` is a tool's result, sent back to a model that called it (native tool use).
Role = Literal["system", "user", "assistant", "tool"]

#: How a backend constrains structured output: a llama.cpp grammar compiled here,
#: a JSON schema handed to a server, or nothing (pydantic alone decides).
Constraint = Literal["gbnf", "server-schema", "none"]


@dataclass(frozen=True)
class Message:
    """One chat message.

    :param role: ``system``, ``user``, ``assistant`` or ``tool`` (a tool's result).
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


@dataclass(frozen=True)
class Sampling:
    """How free text is sampled, beyond the configuration's temperature.

    A backend applies what it can: llama.cpp all of it, a server what its API takes.

    :param stop: strings that end the answer when generated (not included in it).
    :param repeat_penalty: divides the logits of tokens already in the context (1.0: off);
        a small model loops without it.
    :param min_p: drop tokens whose probability is below this fraction of the most likely
        token's (0.0: off).
    :param top_p: nucleus sampling's cumulative probability (1.0: off).
    :param temperature: overrides ``llm.temperature`` when set.
    :param grammar: a GBNF grammar the answer must match (e.g.
        :func:`assistant.llm.grammar.prose_gbnf`); llama.cpp and llama.cpp's server apply
        it, other backends ignore it (what they generate is checked all the same).
    :param tools: OpenAI-style tool descriptions the model may call natively; its calls
        come back in the text as ``<tool_call>`` blocks
        (:func:`assistant.llm.tool_calls.parse_tool_calls`).
    """

    stop: tuple[str, ...] = ()
    repeat_penalty: float = 1.0
    min_p: float = 0.0
    top_p: float = 1.0
    temperature: float | None = None
    grammar: str | None = None
    tools: tuple[dict[str, Any], ...] = ()


@runtime_checkable
class Backend(Protocol):
    """An LLM backend: turns chat messages into a stream of text pieces.

    A backend is constructed from :class:`assistant.config.LLMConfig` and may load
    its model lazily, on the first call to :meth:`stream`. Every backend has every
    member below; what one cannot do is a no-op documented as such (the ``none``
    backend generates nothing, only :class:`~assistant.llm.log.LoggedBackend` records).
    """

    name: str
    model_name: str
    #: where the model comes from: a file, a directory, a server's URL
    location: str
    #: how :meth:`stream` honours ``json_schema``
    constraint: Constraint
    cfg: LLMConfig

    def load(self) -> object:
        """Load the model or reach the server now (otherwise done on first use).

        :raises LLMUnavailable: the model cannot be loaded or reached.
        """
        ...

    def context_size(self) -> int:
        """Return the model's context window in tokens (prompt and answer together)."""
        ...

    def stream(
        self,
        messages: list[Message],
        max_tokens: int,
        stats: GenerationStats | None = None,
        json_schema: dict[str, Any] | None = None,
        sampling: Sampling | None = None,
    ) -> Iterator[str]:
        """Yield the answer's text as it is generated.

        :param messages: the conversation so far, system message first.
        :param max_tokens: the most tokens to generate.
        :param stats: filled in with token counts and timings when given.
        :param json_schema: constrain the answer to one JSON object of this (flat) schema,
            as far as the backend can (see :attr:`constraint`).
        :param sampling: stop strings and sampling settings for free text.
        :raises LLMUnavailable: the model cannot be loaded or reached.
        :raises SchemaNotSupported: the backend cannot constrain output to this schema.
        """
        ...

    def count_tokens(self, text: str) -> int:
        """Return how many tokens ``text`` takes with this model's own tokenizer
        (an estimate where the backend has none: :func:`approx_tokens`)."""
        ...

    def record_outcome(self, stats: GenerationStats, structured: Any, refusal: str | None) -> None:
        """Attach a structured step's validated object (or why it was refused) to the
        generation ``stats.log_id`` in the LLM log; a no-op for a backend that does not log."""
        ...


def approx_tokens(text: str) -> int:
    """Estimate a token count when no tokenizer can be reached (about 3.5 bytes a token).

    Kernel logs are dense in hex and symbols, so this errs on the high side.
    """
    return (len(text.encode("utf-8")) * 2 + 6) // 7


class BackendDefaults:
    """What most backends share: the context size from the configuration, no log.

    A backend class lists it first among its bases and sets ``cfg`` in ``__init__``.
    """

    cfg: LLMConfig

    def context_size(self) -> int:
        """Return ``llm.n_ctx``, the context window the backend was configured with."""
        return self.cfg.n_ctx

    def record_outcome(self, stats: GenerationStats, structured: Any, refusal: str | None) -> None:
        """Do nothing: only a logging backend records outcomes."""
