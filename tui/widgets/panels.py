"""The side panels: pressure sparklines, recent crashes, pending changes, the agent."""

from __future__ import annotations

from collections import deque

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, ListItem, ListView, Sparkline, Static

#: Readings kept for each sparkline.
HISTORY = 60


def scale_label(name: str, series: deque[float]) -> str:
    """Return a gauge's label: its last reading and the range its sparkline spans.

    >>> scale_label("cpu", deque([0.5, 2.0, 1.0]))
    'cpu 1.00%  (scale 0.50-2.00%)'
    """
    unit = "" if name == "load" else "%"
    low, high = min(series), max(series)
    scale = f"  (scale {low:.2f}-{high:.2f}{unit})" if len(series) > 1 else ""
    return f"{name} {series[-1]:.2f}{unit}{scale}"


class PressurePanel(Vertical):
    """Load and PSI ``some avg10`` as sparklines."""

    def __init__(self) -> None:
        super().__init__(id="pressure", classes="panel")
        self.series: dict[str, deque[float]] = {
            k: deque(maxlen=HISTORY) for k in ("load", "cpu", "memory", "io")
        }

    def compose(self) -> ComposeResult:
        yield Label("pressure", classes="panel-title")
        for name in self.series:
            yield Static(name, id=f"label-{name}", markup=False)
            yield Sparkline([], id=f"spark-{name}")

    def add(self, name: str, value: float) -> None:
        """Add a reading and redraw its sparkline and label.

        A sparkline spans its own lowest to highest reading, so a flat line of noise looks
        like peaks: the label gives that scale.
        """
        series = self.series[name]
        series.append(value)
        self.query_one(f"#spark-{name}", Sparkline).data = list(series)
        self.query_one(f"#label-{name}", Static).update(scale_label(name, series))


class CrashesPanel(Vertical):
    """The newest crashes of the store."""

    def __init__(self) -> None:
        super().__init__(id="crashes", classes="panel")

    def compose(self) -> ComposeResult:
        yield Label("recent crashes", classes="panel-title")
        yield Static("none", id="crash-list", markup=False)

    def show(self, rows: list[tuple[str, str, int]]) -> None:
        """Show (signature, title, count) rows."""
        text = "\n".join(f"{sig[:8]} x{count} {title[:40]}" for sig, title, count in rows)
        self.query_one("#crash-list", Static).update(text or "none")


class ProposalsPanel(Vertical):
    """Changes proposed in the conversation, waiting for approve or reject."""

    def __init__(self) -> None:
        super().__init__(id="proposals", classes="panel")

    def compose(self) -> ComposeResult:
        yield Label("pending changes", classes="panel-title")
        yield ListView(id="proposal-list")

    def add(self, index: int, summary: str) -> None:
        """Add a proposal (``index`` in the app's list of proposals)."""
        item = ListItem(Label(summary, markup=False), id=f"proposal-{index}")
        self.query_one(ListView).append(item)

    def drop(self, index: int) -> None:
        """Remove a decided proposal."""
        for item in self.query(f"#proposal-{index}"):
            item.remove()

    def selected(self) -> int | None:
        """Return the highlighted proposal's index, or the first one's."""
        view = self.query_one(ListView)
        item = view.highlighted_child or (view.children[0] if view.children else None)
        if item is None or item.id is None:
            return None
        return int(item.id.split("-", 1)[1])


class AgentPanel(Vertical):
    """One line on the kernel agent."""

    def __init__(self) -> None:
        super().__init__(id="agent", classes="panel")

    def compose(self) -> ComposeResult:
        yield Label("agent", classes="panel-title")
        yield Static("?", id="agent-state", markup=False)

    def show(self, line: str) -> None:
        """Show the agent's state line."""
        self.query_one("#agent-state", Static).update(line)
