"""Native tool calls in a model's text: the Qwen2.5 convention, parsed strictly.

A model that calls a tool writes, in its answer, one JSON object per call inside
``<tool_call></tool_call>`` (what Qwen2.5's chat template teaches it; an OpenAI-style
server's structured ``tool_calls`` are turned into the same text by the ``openai``
backend). :func:`parse_tool_calls` splits an answer into its prose and its calls; a
call that is not a JSON object with a string ``name`` and an object ``arguments`` is
*invalid* and kept apart with the reason, never guessed at.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from assistant.llm.chat_template import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

_CALL = re.compile(
    rf"{re.escape(TOOL_CALL_OPEN)}\s*(.*?)\s*(?:{re.escape(TOOL_CALL_CLOSE)}|$)", re.S
)


_BARE_CALL = re.compile(r'^\{\s*"name"\s*:.*\}$')


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for.

    :param name: the tool's name.
    :param args: its arguments (a JSON object).
    :param id: a call id, unique within the answer (``call_0``, ``call_1``...).
    """

    name: str
    args: dict[str, Any]
    id: str


@dataclass(frozen=True)
class InvalidCall:
    """A ``<tool_call>`` block that is not a call: its text and why."""

    text: str
    error: str
    id: str


@dataclass(frozen=True)
class ParsedAnswer:
    """An answer split into prose and calls."""

    content: str
    calls: list[ToolCall] = field(default_factory=list)
    invalid: list[InvalidCall] = field(default_factory=list)


def _one(text: str, ident: str) -> ToolCall | InvalidCall:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return InvalidCall(text, f"not JSON ({exc.msg})", ident)
    if not isinstance(obj, dict):
        return InvalidCall(text, "not a JSON object", ident)
    name, args = obj.get("name"), obj.get("arguments", {})
    if isinstance(args, str):  # some servers send the arguments as a JSON string
        try:
            args = json.loads(args or "{}")
        except json.JSONDecodeError:
            return InvalidCall(text, "arguments are not JSON", ident)
    if not isinstance(name, str) or not name:
        return InvalidCall(text, "no tool name", ident)
    if not isinstance(args, dict):
        return InvalidCall(text, "arguments are not an object", ident)
    return ToolCall(name, args, ident)


def parse_tool_calls(text: str) -> ParsedAnswer:
    """Split a model's answer into its prose and its ``<tool_call>`` blocks.

    >>> parsed = parse_tool_calls('<tool_call>{"name": "crashes", "arguments": {}}</tool_call>')
    >>> parsed.calls[0].name, parsed.calls[0].args, parsed.content
    ('crashes', {}, '')
    >>> parse_tool_calls('{"name": "stats", "arguments": {}}').calls[0].name
    'stats'
    >>> parse_tool_calls("<tool_call>{oops</tool_call>").invalid[0].error
    'not JSON (Expecting property name enclosed in double quotes)'
    """
    calls: list[ToolCall] = []
    invalid: list[InvalidCall] = []
    blocks = [m.group(1) for m in _CALL.finditer(text)]
    content = _CALL.sub("", text).strip()
    if not blocks:
        # Qwen's <tool_call> tags are special tokens, which a backend's detokenizer may
        # drop: a line that is a JSON object naming a tool is then the call itself.
        blocks = [ln.strip() for ln in text.splitlines() if _BARE_CALL.match(ln.strip())]
        content = "\n".join(ln for ln in text.splitlines() if ln.strip() not in blocks).strip()
    for n, block in enumerate(blocks):
        found = _one(block, f"call_{n}")
        (calls if isinstance(found, ToolCall) else invalid).append(found)  # type: ignore[arg-type]
    return ParsedAnswer(content, calls, invalid)


def call_text(name: str, args: Any) -> str:
    """Return a call as the model writes it (for the conversation's history)."""
    body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"
