"""``kassist chat``: the Textual chat (``tui/``), imported only when this command runs."""

from __future__ import annotations

import click

from assistant.cli.common import LlmFlags, chat_session, session_options
from assistant.errors import NotAvailable


@click.command()
@session_options("Do not record the conversation.")
def chat(
    socket_path: str | None,
    store_path: str | None,
    no_history: bool,
    llm_flags: LlmFlags,
) -> None:
    """Open the chat: ask about this system, see crashes and pressure, approve changes."""
    try:
        from tui.app import KassistApp
    except ImportError as exc:
        raise NotAvailable(f"the chat needs textual ({exc.name})", "pip install textual") from None
    cfg, session = chat_session(llm_flags, socket_path, store_path)
    history = None
    if cfg.chat.history and not no_history:
        from assistant.chat.history import ChatHistory

        history = ChatHistory()
    try:
        KassistApp(session, cfg.chat, history=history).run()
    finally:
        if history is not None:
            history.close()
