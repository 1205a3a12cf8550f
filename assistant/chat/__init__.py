"""The chat engine: history, router, tools, streaming and approval, with no front end.

``kassist chat`` (the Textual TUI in ``tui/``) and ``kassist ask`` are thin front ends
over :class:`~assistant.chat.session.ChatSession`. The core never imports textual.
"""

from assistant.chat.memory import Memory, Outcome, Proposal
from assistant.chat.router import Decision, route
from assistant.chat.session import ChatSession, Turn
from assistant.chat.tools import TOOL_NAMES, TOOLS, Context, ToolResult

__all__ = [
    "TOOLS",
    "TOOL_NAMES",
    "ChatSession",
    "Context",
    "Decision",
    "Memory",
    "Outcome",
    "Proposal",
    "ToolResult",
    "Turn",
    "route",
]
