"""The LLM runtime: backends behind one interface, chosen by configuration."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

from assistant.config import LLMConfig
from assistant.llm.base import Backend, GenerationStats, Message
from assistant.llm.errors import LLMUnavailable, SchemaNotSupported, StructuredRefusal

ENTRY_POINT_GROUP = "kassist.backends"

BackendFactory = Callable[[LLMConfig], Backend]

#: The built-in backends, "module:class", registered in pyproject's entry points too;
#: listed here so that a source checkout whose metadata is stale still has them.
BUILTIN_BACKENDS: dict[str, str] = {
    "llama_cpp": "assistant.llm.llama_cpp:LlamaCppBackend",
    "openai": "assistant.llm.openai_compat:OpenAIBackend",
    "transformers": "assistant.llm.hf:TransformersBackend",
    "none": "assistant.llm.none:NoneBackend",
}


def _builtin(spec: str) -> BackendFactory:
    def factory(cfg: LLMConfig) -> Backend:
        import importlib

        module, attr = spec.split(":")
        cls: BackendFactory = getattr(importlib.import_module(module), attr)
        return cls(cfg)

    return factory


def backend_factories() -> dict[str, BackendFactory]:
    """Return every registered backend by name (built-in ones register like third-party ones).

    Backends are found through the ``kassist.backends`` entry-point group; the built-in
    ones are added even when the package metadata is missing or stale. Backend modules
    are imported only when a backend is made.
    """
    found: dict[str, BackendFactory] = {n: _builtin(s) for n, s in BUILTIN_BACKENDS.items()}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in found:
            found[ep.name] = _entry_point_factory(ep)
    return found


def _entry_point_factory(ep: metadata.EntryPoint) -> BackendFactory:
    def factory(cfg: LLMConfig) -> Backend:
        try:
            cls: BackendFactory = ep.load()
        except Exception as exc:  # a broken third-party plugin is one clear line
            raise LLMUnavailable(
                f"backend {ep.name!r} ({ep.value}) cannot be imported: {exc}",
                "reinstall the package that provides it",
            ) from None
        return cls(cfg)

    return factory


def make_backend(cfg: LLMConfig, log: bool | None = None) -> Backend:
    """Build the configured backend; with logging on, every generation is recorded.

    :param log: override ``cfg.log``.
    :raises LLMUnavailable: an unknown backend name, or a model that cannot be found.
    """
    factories = backend_factories()
    factory = factories.get(cfg.backend)
    if factory is None:
        raise LLMUnavailable(
            f"unknown LLM backend {cfg.backend!r}", f"use one of: {', '.join(sorted(factories))}"
        )
    backend = factory(cfg)
    if (cfg.log if log is None else log) and cfg.backend != "none":
        from assistant.llm.log import LoggedBackend

        return LoggedBackend(backend, cfg)
    return backend


__all__ = [
    "Backend",
    "GenerationStats",
    "LLMUnavailable",
    "Message",
    "SchemaNotSupported",
    "StructuredRefusal",
    "backend_factories",
    "make_backend",
]
