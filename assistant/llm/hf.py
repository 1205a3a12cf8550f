"""The ``transformers`` backend: a local Hugging Face model directory, never the hub.

``llm.model`` names a directory holding a model and its tokenizer (what
``save_pretrained`` writes). Everything loads with ``local_files_only=True``; nothing
is downloaded. It runs on the CPU, or on CUDA when torch sees a GPU. There is no
grammar here: structured steps rely on the prompt and on pydantic validation.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from assistant.config import LLMConfig
from assistant.llm.base import BackendDefaults, Constraint, GenerationStats, Message, Sampling
from assistant.llm.chat_template import plain_messages
from assistant.llm.errors import LLMUnavailable


def _import_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError:
        raise LLMUnavailable(
            "the transformers backend needs torch and transformers",
            "install kassist's hf extra (./setup.sh test does; torch from"
            " https://download.pytorch.org/whl/cpu), or use the llama_cpp backend",
        ) from None
    return torch, transformers


class TransformersBackend(BackendDefaults):
    """Generate with a local transformers model (CPU by default, CUDA when present)."""

    name = "transformers"
    constraint: Constraint = "none"

    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg
        path = Path(cfg.model).expanduser() if cfg.model else None
        if path is None or not (path / "config.json").is_file():
            raise LLMUnavailable(
                f"the transformers backend needs a model directory, not {cfg.model!r}",
                "set llm.model (or --model) to a directory written by save_pretrained",
            )
        self.path = path
        self.model_name = path.name
        self.location = str(path)
        self.device = ""
        self._model: Any = None
        self._tokenizer: Any = None
        self.load_seconds = 0.0

    def load(self) -> Any:
        """Load the model and tokenizer from the directory (once) and return the model.

        :raises LLMUnavailable: torch/transformers missing, or the directory does not load.
        """
        if self._model is not None:
            return self._model
        torch, transformers = _import_transformers()
        t0 = time.perf_counter()
        if self.cfg.n_threads:
            torch.set_num_threads(self.cfg.n_threads)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                self.path, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise LLMUnavailable(
                f"cannot load the model in {self.path} ({exc})".replace("\n", " "),
                "give a directory written by save_pretrained, with its tokenizer",
            ) from None
        model.to(self.device)
        model.eval()
        self._model, self._tokenizer = model, tokenizer
        self.load_seconds = time.perf_counter() - t0
        return model

    def count_tokens(self, text: str) -> int:
        """Return the number of tokens of ``text`` with the model's tokenizer."""
        self.load()
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _input_ids(self, messages: list[Message]) -> Any:
        chat = [{"role": m.role, "content": m.content} for m in plain_messages(messages)]
        if getattr(self._tokenizer, "chat_template", None):
            out = self._tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            return out["input_ids"]
        raise LLMUnavailable(
            f"the tokenizer in {self.path} has no chat template", "use an instruct (chat) model"
        )

    def stream(
        self,
        messages: list[Message],
        max_tokens: int,
        stats: GenerationStats | None = None,
        json_schema: dict[str, Any] | None = None,
        sampling: Sampling | None = None,
    ) -> Iterator[str]:
        """Yield the answer's text as the model generates it (generation runs in a thread)."""
        torch, transformers = _import_transformers()
        model = self.load()
        t0 = time.perf_counter()
        ids = self._input_ids(messages).to(self.device)
        if stats is not None:
            stats.prompt_tokens = int(ids.shape[-1])
            stats.constraint = "none" if json_schema is not None else ""
        streamer = transformers.TextIteratorStreamer(
            self._tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=self.cfg.timeout
        )
        how = sampling or Sampling()
        temperature = self.cfg.temperature if how.temperature is None else how.temperature
        kwargs: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "max_new_tokens": max_tokens,
            "do_sample": temperature > 0,
            "repetition_penalty": how.repeat_penalty,
            "streamer": streamer,
            "pad_token_id": self._tokenizer.pad_token_id or self._tokenizer.eos_token_id,
        }
        if how.stop:
            kwargs["stop_strings"] = list(how.stop)
            kwargs["tokenizer"] = self._tokenizer
        if temperature > 0:
            kwargs["temperature"] = temperature
            if how.min_p > 0.0:
                kwargs["min_p"] = how.min_p
            if how.top_p < 1.0:
                kwargs["top_p"] = how.top_p
        result: dict[str, Any] = {}

        def run() -> None:
            try:
                with torch.no_grad():
                    result["out"] = model.generate(**kwargs)
            except Exception as exc:  # handed to the caller's thread below
                result["error"] = exc
                streamer.end()

        worker = threading.Thread(target=run, name="kassist-transformers", daemon=True)
        worker.start()
        try:
            for text in streamer:
                if text:
                    if stats is not None and stats.first_token_s == 0.0:
                        stats.first_token_s = time.perf_counter() - t0
                    yield text
        finally:
            worker.join()
            if stats is not None:
                out = result.get("out")
                stats.completion_tokens = (
                    int(out.shape[-1] - ids.shape[-1]) if out is not None else 0
                )
                stats.total_s = time.perf_counter() - t0
        if "error" in result:
            raise LLMUnavailable(
                f"generation failed: {result['error']}".replace("\n", " "), "see --debug"
            )
