"""The ``none`` backend: no model at all; drafters fall back to their templates."""

from __future__ import annotations

from collections.abc import Iterator

from assistant.config import LLMConfig
from assistant.llm.base import GenerationStats, Message


class NoneBackend:
    """Generate nothing, so that every feature keeps working without a model."""

    name = "none"
    model_name = "none"

    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg

    def stream(
        self, messages: list[Message], max_tokens: int, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        """Yield nothing: the caller uses its deterministic text instead."""
        return iter(())
