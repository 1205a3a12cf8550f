"""``kassist chat``: the Textual chat (``tui/``), imported only when this command runs."""

from __future__ import annotations

import click

from assistant.cli.common import backend_or_none, config_from_flags, llm_options
from assistant.errors import NotAvailable


@click.command()
@click.option("--socket", "socket_path", default=None, help="The agent's socket.")
@click.option("--store", "store_path", type=click.Path(), default=None, help="The crash store.")
@click.option("--no-history", is_flag=True, help="Do not record the conversation.")
@llm_options
def chat(
    socket_path: str | None,
    store_path: str | None,
    no_history: bool,
    model: str | None,
    backend: str | None,
    max_tokens: int | None,
    no_llm: bool,
    no_log: bool,
) -> None:
    """Open the chat: ask about this system, see crashes and pressure, approve changes."""
    try:
        from tui.app import KassistApp
    except ImportError as exc:
        raise NotAvailable(f"the chat needs textual ({exc.name})", "pip install textual") from None
    from assistant.chat.session import ChatSession
    from assistant.chat.tools import Context

    cfg = config_from_flags(model, backend, max_tokens, no_log)
    llm = backend_or_none(cfg, no_llm)
    session = ChatSession(
        llm,
        Context(store=store_path, socket=socket_path or cfg.agent.socket),
        native_tools=cfg.chat.native_tools,
    )
    history = None
    if cfg.chat.history and not no_history:
        from assistant.chat.history import ChatHistory

        history = ChatHistory()
    try:
        KassistApp(session, cfg.chat, history=history).run()
    finally:
        if history is not None:
            history.close()
