"""The input line: a message is taken, and the line cleared, when Enter is read.

Textual's ``Input`` submits through a binding checked as the Enter key bubbles up to the
app, a step behind the characters after it: keys typed quickly (or arriving together, as
from a paste or a busy machine) merge into the message before, and clearing the line
afterwards drops them. This line takes its value on Enter itself, in key order.
"""

from __future__ import annotations

from textual import events
from textual.widgets import Input


class PromptInput(Input):
    """An ``Input`` whose Enter submits the value of that moment and clears the line."""

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            self._restart_blink()
            event.stop()
            event.prevent_default()
            value, self.value = self.value, ""
            self.post_message(self.Submitted(self, value, None))
            return
        await super()._on_key(event)
