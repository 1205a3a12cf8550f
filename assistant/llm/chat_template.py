"""kassist's own chat template for the Qwen2 family (ChatML), tool calls included.

A third-party GGUF carries its chat template as Jinja2 text in its metadata; that text
is data, and kassist does not execute it for the models it knows. For the ``qwen2``
architecture it renders ChatML here, in plain Python, with the tool-call convention of
Qwen2.5's template (function signatures inside ``<tools></tools>`` in the system turn,
calls as JSON inside ``<tool_call></tool_call>``, results inside
``<tool_response></tool_response>`` in a user turn). Any other model's template is
rendered by llama-cpp-python's ``Jinja2ChatFormatter``, which uses Jinja2's
``ImmutableSandboxedEnvironment`` (no attribute access to Python internals, no
mutation, bounded ``range``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from assistant.llm.base import Message

#: GGUF ``general.architecture`` values rendered with :func:`chatml`.
CHATML_FAMILIES = frozenset({"qwen2"})
#: Strings that end a ChatML turn (never part of an answer).
CHATML_STOP = ("<|im_end|>", "<|endoftext|>", "<|im_start|>")
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"

_TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_FORMAT = (
    "</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


#: A piece of the rendered prompt and whether it is template (markers that may be
#: special tokens) or content (text from messages, never read as special tokens).
Segment = tuple[str, bool]


def _turn(role: str, content: str) -> list[Segment]:
    return [(f"<|im_start|>{role}\n", True), (content, False), ("<|im_end|>\n", True)]


def tools_block(tools: Sequence[dict[str, Any]]) -> str:
    """Return the system turn's description of the tools, in Qwen2.5's wording.

    :param tools: OpenAI-style tool descriptions (``{"type": "function", "function": ...}``).
    """
    lines = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
    return f"{_TOOLS_PREAMBLE}{lines}\n{_TOOLS_FORMAT}"


def chatml_segments(
    messages: Sequence[Message], tools: Sequence[dict[str, Any]] = ()
) -> list[Segment]:
    """Render a conversation as ChatML, ending with the assistant's open turn.

    Message text stays content: a log line that contains ``<|im_end|>`` is tokenized as
    plain text, so it cannot close a turn or open one. A message whose role is ``tool``
    is a tool's result (a user turn wrapped in ``<tool_response>``, consecutive results in
    one turn, as Qwen's template does).
    """
    out: list[Segment] = []
    rest = list(messages)
    system = rest.pop(0).content if rest and rest[0].role == "system" else ""
    if tools:
        system = f"{system}\n\n{tools_block(tools)}" if system else tools_block(tools)
    if system:
        out += _turn("system", system)
    pending: list[str] = []
    for m in rest:
        if m.role == "tool":
            pending.append(f"<tool_response>\n{m.content}\n</tool_response>")
            continue
        if pending:
            out += _turn("user", "\n".join(pending))
            pending = []
        out += _turn(m.role, m.content)
    if pending:
        out += _turn("user", "\n".join(pending))
    out.append(("<|im_start|>assistant\n", True))
    return out


def chatml(messages: Sequence[Message], tools: Sequence[dict[str, Any]] = ()) -> str:
    """Return :func:`chatml_segments` as one string (for logs and token counts)."""
    return "".join(text for text, _ in chatml_segments(messages, tools))


def plain_messages(messages: Sequence[Message]) -> list[Message]:
    """Return the conversation with each tool result as a user turn in ``<tool_response>``
    tags (what Qwen's template renders), for backends and servers that take only
    ``system``, ``user`` and ``assistant`` messages."""
    return [
        Message("user", f"<tool_response>\n{m.content}\n</tool_response>")
        if m.role == "tool"
        else m
        for m in messages
    ]
