"""The transformers backend, through its real loading code, on a tiny randomly
initialised model saved to a temporary directory (no hub, no download)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from assistant.config import LLMConfig
from assistant.llm import make_backend
from assistant.llm.base import GenerationStats, Message
from assistant.llm.errors import LLMUnavailable, StructuredRefusal
from assistant.llm.prompts import load_prompt
from assistant.llm.structured import run_step
from tests.conftest import require

WORDS = [
    "kernel",
    "panic",
    "oops",
    "bug",
    "tcp",
    "net",
    "mm",
    "fs",
    "lock",
    "rcu",
    "slab",
    "page",
    "{",
    "}",
    ":",
    ",",
    '"',
    "severity",
    "high",
    "low",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(
        importlib.util.find_spec("torch") is not None
        and importlib.util.find_spec("transformers") is not None,
        "torch and transformers are not installed (the test extra has them)",
    )
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-llama")
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", "<pad>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


def test_tiny_model_loads_from_disk_and_streams(tiny_model: Path) -> None:
    backend = make_backend(LLMConfig(backend="transformers", model=str(tiny_model), log=False))
    stats = GenerationStats()
    pieces = list(backend.stream([Message("user", "kernel panic")], 6, stats))
    assert backend.device in {"cpu", "cuda"}  # type: ignore[attr-defined]
    assert stats.prompt_tokens > 2 and 1 <= stats.completion_tokens <= 6
    assert all(isinstance(p, str) for p in pieces)
    assert backend.count_tokens("kernel panic oops") == 3


def test_random_model_output_is_refused_not_passed_on(tiny_model: Path) -> None:
    backend = make_backend(LLMConfig(backend="transformers", model=str(tiny_model), log=False))
    with pytest.raises(StructuredRefusal) as info:
        run_step(backend, load_prompt("chat_router"), {"message": "oops"}, 8, retries=1)
    assert len(info.value.errors) == 2 and "valid" not in info.value.kinds


def test_a_directory_without_a_model_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LLMUnavailable, match="model directory"):
        make_backend(LLMConfig(backend="transformers", model=str(tmp_path)))
    (tmp_path / "config.json").write_text("{}")
    backend = make_backend(LLMConfig(backend="transformers", model=str(tmp_path), log=False))
    require(importlib.util.find_spec("transformers") is not None, "transformers not installed")
    with pytest.raises(LLMUnavailable, match="cannot load"):
        backend.load()
