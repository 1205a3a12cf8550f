"""Errors of the LLM runtime."""

from __future__ import annotations

from assistant.errors import NotAvailable


class LLMUnavailable(NotAvailable):
    """The configured model cannot be found, loaded or reached."""
