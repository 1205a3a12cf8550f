"""Subcommands whose issue is not done yet: each says so in one line and exits 2."""

from __future__ import annotations

import click

from assistant.errors import NotAvailable

# command → the work it waits for.
PENDING: dict[str, str] = {
    "docs": "the documentation drafter",
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


docs = _pending("docs")
