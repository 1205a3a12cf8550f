"""The ``none`` backend: no model at all; drafters fall back to their templates."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from assistant.config import LLMConfig
from assistant.llm.base import (
    BackendDefaults,
    Constraint,
    GenerationStats,
    Message,
    Sampling,
    approx_tokens,
)


class NoneBackend(BackendDefaults):
    """Generate nothing, so that every feature keeps working without a model."""

    name = "none"
    model_name = "none"
    location = "none"
    constraint: Constraint = "none"

    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg

    def load(self) -> None:
        """Do nothing: there is no model to load."""

    def count_tokens(self, text: str) -> int:
        """Estimate tokens (there is no tokenizer without a model)."""
        return approx_tokens(text)

    def stream(
        self,
        messages: list[Message],
        max_tokens: int,
        stats: GenerationStats | None = None,
        json_schema: dict[str, Any] | None = None,
        sampling: Sampling | None = None,
    ) -> Iterator[str]:
        """Yield nothing: the caller uses its deterministic text instead."""
        return iter(())
