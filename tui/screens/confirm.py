"""Confirm a change: the agent's dry run (old -> new per key) before anything is applied."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from actions.text import printable


def dry_run_lines(summary: str, verdict: dict[str, Any]) -> list[str]:
    """Return the lines a person reads before saying yes: each key's old and new value."""
    lines = [printable(summary)]
    changeset = verdict.get("changeset")
    changes = changeset.get("changes", []) if isinstance(changeset, dict) else []
    for c in changes:
        if isinstance(c, dict):
            old, new = printable(c.get("old")), printable(c.get("new"))
            lines.append(f"  {printable(c.get('target'))}  {old} -> {new}")
    if not verdict.get("ok"):
        lines.append("the agent refuses it:")
        lines += [f"  {printable(e.get('message', e))}" for e in verdict.get("errors") or []]
    return lines


class ConfirmChange(ModalScreen[bool]):
    """Ask yes or no for one change; dismissed with the answer."""

    BINDINGS = [  # noqa: RUF012  (Textual reads it as a class attribute)
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, summary: str, verdict: dict[str, Any]) -> None:
        super().__init__()
        self.summary = summary
        self.verdict = verdict

    def compose(self) -> ComposeResult:
        allowed = bool(self.verdict.get("ok"))
        with Vertical(id="confirm"):
            yield Label("Apply this change through the agent?" if allowed else "Refused")
            yield Static("\n".join(dry_run_lines(self.summary, self.verdict)), markup=False)
            with Horizontal():
                yield Button("Apply (y)", id="yes", variant="warning", disabled=not allowed)
                yield Button("Cancel (n)", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value and bool(self.verdict.get("ok")))
