"""LangChain's chat-model interface over kassist's own backends.

LangChain is the orchestration layer (chat history, prompt composition, tools
described for the chat); generation itself goes straight to our backends, because
LangChain's local integrations (``ChatLlamaCpp``) break for small local models,
notably tool calling with several tools bound. Structured output goes through
:mod:`assistant.llm.structured` (grammar, pydantic, bounded retries, refusal), not
through LangChain's tool-calling path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.chat_models import BaseChatModel, generate_from_stream
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict

from assistant.errors import KassistError
from assistant.llm.base import Backend, GenerationStats, Message, Role, Sampling
from assistant.llm.errors import SchemaNotSupported
from assistant.llm.grammar import tool_call_gbnf
from assistant.llm.tool_calls import call_text, parse_tool_calls

_ROLES: dict[str, Role] = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def to_messages(messages: list[BaseMessage]) -> list[Message]:
    """Turn LangChain messages into ours: a model's tool calls become ``<tool_call>``
    text in its turn, a tool's result a ``tool`` message.

    :raises KassistError: a message type the backends cannot take.
    """
    out: list[Message] = []
    for m in messages:
        role = _ROLES.get(m.type)
        if role is None:
            raise KassistError(f"cannot send a {m.type!r} message to the model", "use chat turns")
        text = str(m.text)
        if isinstance(m, AIMessage) and m.tool_calls:
            calls = [call_text(c["name"], c["args"]) for c in m.tool_calls]
            text = "\n".join([text, *calls]).strip()
        out.append(Message(role, text))
    return out


def _cut_at_stop(text: str, stop: list[str] | None) -> tuple[str, bool]:
    for s in stop or []:
        at = text.find(s)
        if at != -1:
            return text[:at], True
    return text, False


class KassistChatModel(BaseChatModel):
    """A LangChain chat model whose generations come from a kassist backend.

    >>> chat = KassistChatModel(backend=make_backend(cfg.llm), max_tokens=64)  # doctest: +SKIP
    >>> chat.invoke("Which subsystem is tcp_close in?").content  # doctest: +SKIP
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any
    max_tokens: int = 160

    @property
    def _llm_type(self) -> str:
        return f"kassist-{self.backend.name}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"backend": self.backend.name, "model": self.backend.model_name}

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        backend: Backend = self.backend
        stats = GenerationStats(prompt_name=str(kwargs.get("prompt_name", "")))
        max_tokens = int(kwargs.get("max_tokens", self.max_tokens))
        said = ""
        pieces = backend.stream(to_messages(messages), max_tokens, stats)
        for piece in pieces:
            text, stopped = _cut_at_stop(said + piece, stop)
            new = text[len(said) :]
            said = text
            if new:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=new))
                if run_manager is not None:
                    run_manager.on_llm_new_token(new, chunk=chunk)
                yield chunk
            if stopped:
                close = getattr(pieces, "close", None)
                if callable(close):
                    close()
                break
        usage = {
            "input_tokens": stats.prompt_tokens,
            "output_tokens": stats.completion_tokens,
            "total_tokens": stats.prompt_tokens + stats.completion_tokens,
            "input_token_details": {"cache_read": stats.cached_tokens},
        }
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=usage,
                response_metadata={
                    "model_name": backend.model_name,
                    "first_token_s": stats.first_token_s,
                    "total_s": stats.total_s,
                    "log_id": stats.log_id,
                },
            )
        )

    def bind_tools(
        self, tools: Sequence[Any], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Let the model call ``tools`` (LangChain tools, or OpenAI-style descriptions)
        natively: their descriptions go into the prompt (the Qwen family's tool-call
        template, or the server's), and each answer's calls come back as the
        ``AIMessage``'s ``tool_calls``; a malformed one as ``invalid_tool_calls``.
        Invoked with ``must_call=True``, the answer is one call under a grammar."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if kwargs.get("tools"):
            return self._generate_with_tools(messages, tuple(kwargs["tools"]), kwargs)
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    def _generate_with_tools(
        self, messages: list[BaseMessage], tools: tuple[dict[str, Any], ...], kwargs: Any
    ) -> ChatResult:
        backend: Backend = self.backend
        stats = GenerationStats(prompt_name=str(kwargs.get("prompt_name", "tools")))
        max_tokens = int(kwargs.get("max_tokens", self.max_tokens))
        how = Sampling(temperature=kwargs.get("temperature"), tools=tools)
        if kwargs.get("must_call"):
            # One valid call of one of the tools, nothing else (a grammar, where the
            # backend applies one; otherwise the call is checked after the fact).
            with contextlib.suppress(SchemaNotSupported):
                how = replace(how, grammar=tool_call_gbnf(list(tools)))
        text = "".join(backend.stream(to_messages(messages), max_tokens, stats, sampling=how))
        parsed = parse_tool_calls(text)
        message = AIMessage(
            content=parsed.content,
            tool_calls=[{"name": c.name, "args": c.args, "id": c.id} for c in parsed.calls],
            invalid_tool_calls=[
                {
                    "name": None,
                    "args": c.text,
                    "id": c.id,
                    "error": c.error,
                    "type": "invalid_tool_call",
                }
                for c in parsed.invalid
            ],
            usage_metadata={
                "input_tokens": stats.prompt_tokens,
                "output_tokens": stats.completion_tokens,
                "total_tokens": stats.prompt_tokens + stats.completion_tokens,
            },
            response_metadata={"model_name": backend.model_name, "raw": text},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])


class Conversation:
    """A chat with history, kept as LangChain messages.

    Each turn sends the whole history; the ``llama_cpp`` backend reuses the KV cache of
    the previous turns, so only the new turn is read.
    """

    def __init__(self, chat: KassistChatModel, system: str) -> None:
        self.chat = chat
        self.history: list[BaseMessage] = [SystemMessage(system)]

    def ask(self, question: str, **kwargs: Any) -> AIMessage:
        """Ask one question, remember it and the answer, and return the answer."""
        self.history.append(HumanMessage(question))
        answer = self.chat.invoke(self.history, **kwargs)
        reply = AIMessage(
            content=answer.content,
            usage_metadata=answer.usage_metadata,
            response_metadata=answer.response_metadata,
        )
        self.history.append(reply)
        return reply
