"""The LLM runtime: backends behind one interface, chosen by configuration."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

from assistant.config import LLMConfig
from assistant.llm.base import Backend, GenerationStats, Message
from assistant.llm.errors import LLMUnavailable

ENTRY_POINT_GROUP = "kassist.backends"

BackendFactory = Callable[[LLMConfig], Backend]


def backend_factories() -> dict[str, BackendFactory]:
    """Return every registered backend by name (built-in ones register like third-party ones).

    Backends are found through the ``kassist.backends`` entry-point group; the built-in
    ``llama_cpp`` and ``none`` are added even when the package metadata is missing
    (a source checkout that was never installed).
    """
    from assistant.llm.llama_cpp import LlamaCppBackend
    from assistant.llm.none import NoneBackend

    found: dict[str, BackendFactory] = {"llama_cpp": LlamaCppBackend, "none": NoneBackend}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in found:
            found[ep.name] = ep.load()
    return found


def make_backend(cfg: LLMConfig) -> Backend:
    """Build the configured backend.

    :raises LLMUnavailable: an unknown backend name, or a model that cannot be found.
    """
    factories = backend_factories()
    factory = factories.get(cfg.backend)
    if factory is None:
        raise LLMUnavailable(
            f"unknown LLM backend {cfg.backend!r}", f"use one of: {', '.join(sorted(factories))}"
        )
    return factory(cfg)


__all__ = [
    "Backend",
    "GenerationStats",
    "LLMUnavailable",
    "Message",
    "backend_factories",
    "make_backend",
]
