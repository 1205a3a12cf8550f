"""The help screen: the keys and the slash commands."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import ModalScreen
from textual.widgets import Markdown


class HelpScreen(ModalScreen[None]):
    """Keys and commands; escape, q or the help key (the app's binding) closes it."""

    BINDINGS = [Binding("escape,q", "close", "close")]  # noqa: RUF012

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        yield Markdown(self.text, id="help")

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
