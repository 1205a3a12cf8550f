"""Subcommands whose issue is not done yet: each says so in one line and exits 2."""

from __future__ import annotations

import click

from assistant.errors import NotAvailable

# command → the work it waits for.
PENDING: dict[str, str] = {
    "tune": "the tuning drafter",
    "watch": "the log watcher",
    "chat": "the terminal UI",
}


def _pending(name: str) -> click.Command:
    @click.command(
        name=name,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        help=f"Not built yet: waits for {PENDING[name]}.",
    )
    def command() -> None:
        raise NotAvailable(f"`kassist {name}` is not built yet", f"it waits for {PENDING[name]}")

    return command


tune = _pending("tune")
watch = _pending("watch")
chat = _pending("chat")
