"""Confirm a change: its dry run (old -> new per key) before anything is applied.

An apply shows the agent's validation; a rollback shows, from the agent's journal, the
value each key would get back. A change the dry run refuses is shown with the reasons
and can only be closed: there is nothing to approve.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from actions.model import Completion
from actions.text import printable


def dry_run_lines(summary: str, verdict: Completion) -> list[str]:
    """Return the lines a person reads before saying yes: each key's old and new value."""
    lines = [printable(summary)]
    changes = verdict.changeset.changes if verdict.changeset is not None else []
    for c in changes:
        lines.append(f"  {printable(c.target)}  {printable(c.old)} -> {printable(c.new)}")
    if not verdict.ok:
        lines.append("the agent refuses it:")
        lines += [f"  {printable(e.message)}" for e in verdict.errors]
    lines += [f"({printable(n)})" for n in verdict.notices]
    return lines


class ConfirmChange(ModalScreen[bool]):
    """Ask yes or no for one change; dismissed with the answer (always no when refused)."""

    BINDINGS = [  # noqa: RUF012  (Textual reads it as a class attribute)
        Binding("y", "answer(True)", "yes"),
        Binding("n,escape", "answer(False)", "no"),
    ]

    def __init__(self, summary: str, op: str, verdict: Completion) -> None:
        super().__init__()
        self.summary = summary
        self.op = op
        self.verdict = verdict

    def compose(self) -> ComposeResult:
        what = "Roll this back" if self.op == "rollback" else "Apply this change"
        with Vertical(id="confirm"):
            if self.verdict.ok:
                yield Label(f"{what} through the agent?")
            else:
                yield Label("Refused: this change cannot be made", classes="refused")
            yield Static("\n".join(dry_run_lines(self.summary, self.verdict)), markup=False)
            with Horizontal():
                if self.verdict.ok:
                    label = "Roll back (y)" if self.op == "rollback" else "Apply (y)"
                    yield Button(label, id="yes", variant="warning")
                    yield Button("Cancel (n)", id="no", variant="primary")
                else:
                    yield Button("Close (n)", id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes" and self.verdict.ok)

    def action_answer(self, value: bool) -> None:
        self.dismiss(value and self.verdict.ok)
