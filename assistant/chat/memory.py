"""What a conversation remembers: the things it talked about last, and its pending changes.

"write a bug report for that crash", "roll back the last change", "explain the last
recommendation", "what does it do?": each of these names something an earlier turn
found. A :class:`Memory` belongs to one :class:`~assistant.chat.session.ChatSession`
(never to the process: two conversations never share one), and the tools read and
update it through their :class:`~assistant.chat.tools.Context`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Proposal:
    """A change a tool proposes; nothing happens until a person approves it.

    :param op: ``apply`` or ``rollback``.
    :param recommendations: for ``apply``: DESIGN.md Recommendation objects.
    :param changeset: for ``rollback``: the changeset id (always a concrete one).
    :param summary: one line for a person.
    :param id: its number in the conversation (given by the session; 0 until then).
    """

    op: str
    summary: str
    recommendations: tuple[dict[str, Any], ...] = ()
    changeset: int | None = None
    id: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Return the proposal as JSON-ready data."""
        return {
            "id": self.id,
            "op": self.op,
            "summary": self.summary,
            "recommendations": list(self.recommendations),
            "changeset": self.changeset,
        }


@dataclass(frozen=True)
class Outcome:
    """What became of a proposal: the agent's verdict, or the person's no.

    :param proposal: the proposal's id in the conversation.
    :param verdict: the agent's (``verified``, ``rolled_back``, ``rejected``, ``failed``,
        ``refused``...), or ``declined`` (the person said no), or ``unavailable``.
    :param ok: the change holds as asked (a rollback: the keys are back).
    :param detail: one line: the changeset and its keys, or why not.
    :param at: when, seconds since the epoch.
    """

    proposal: int
    summary: str
    verdict: str
    ok: bool
    detail: str = ""
    changeset: int | None = None
    at: float = 0.0

    def line(self) -> str:
        """Return the outcome as one line for a person."""
        said = "done" if self.ok else "not done"
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.summary}: {self.verdict} ({said}){detail}"

    def to_dict(self) -> dict[str, Any]:
        """Return the outcome as JSON-ready data."""
        return {
            "proposal": self.proposal,
            "summary": self.summary,
            "verdict": self.verdict,
            "ok": self.ok,
            "detail": self.detail,
            "changeset": self.changeset,
            "at": self.at,
        }


@dataclass
class Memory:
    """The referents of one conversation.

    :param crash: the signature of the last crash shown.
    :param crash_source: where that crash came from (a log path, ``kmsg``), for a report.
    :param key: the last sysctl talked about (``net.core.somaxconn``).
    :param changeset: the last changeset the agent applied or showed in this conversation.
    :param recommendation: the id of the last tuning recommendation shown.
    :param tune: the last tune run's recommendations by id (what ``apply ID`` takes).
    :param tune_report: that run, for ``explain`` (an ``assistant.tuning.TuneReport``).
    :param pending: the proposals no one decided yet, by id.
    """

    crash: str | None = None
    crash_source: str | None = None
    key: str | None = None
    changeset: int | None = None
    recommendation: str | None = None
    tune: dict[str, dict[str, Any]] = field(default_factory=dict)
    tune_report: Any = None
    pending: dict[int, Proposal] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the referents (not the run itself) as JSON-ready data."""
        return {
            "crash": self.crash,
            "crash_source": self.crash_source,
            "key": self.key,
            "changeset": self.changeset,
            "recommendation": self.recommendation,
            "tune": sorted(self.tune),
        }
