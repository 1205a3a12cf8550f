"""Messages of the conversation: the person's, the assistant's (streamed), and tool calls."""

from __future__ import annotations

import json
from typing import Any

from textual.app import ComposeResult
from textual.await_complete import AwaitComplete
from textual.containers import Vertical
from textual.widgets import Collapsible, Markdown, Static

from assistant.markdown import markdown_safe


class UserMessage(Static):
    """What the person typed (shown as typed: plain text, no markup)."""

    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False, classes="user")


class AssistantMessage(Markdown):
    """The assistant's reply; streamed while the model writes, then set whole once.

    Angle brackets outside code are escaped (``/proc/<pid>/...`` is not an HTML tag).
    """

    def __init__(self, text: str = "") -> None:
        super().__init__(text, classes="assistant")

    def update(self, markdown: str) -> AwaitComplete:
        """Show ``markdown`` (Textual's Markdown shows its first text through this too)."""
        return super().update(markdown_safe(markdown))


class ToolCall(Vertical):
    """A tool call, collapsed: its name and arguments, and its result when expanded."""

    def __init__(self, name: str, args: dict[str, Any], result: str) -> None:
        super().__init__(classes="toolcall")
        self.tool_name = name
        self.tool_args = args
        self.result_text = result

    def compose(self) -> ComposeResult:
        title = f"tool {self.tool_name} {json.dumps(self.tool_args)}"
        with Collapsible(title=title, collapsed=True):
            yield Markdown(markdown_safe(self.result_text) or "(no result)")


class Notice(Static):
    """A one-line notice (withheld prose, cancellation, errors)."""

    def __init__(self, text: str) -> None:
        super().__init__(text, markup=False, classes="notice")
