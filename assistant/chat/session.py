"""A headless chat session: history, routing, tools, streaming, cancellation, approval.

The TUI (``tui/``) and ``kassist ask`` are two thin front ends over
:class:`ChatSession`; nothing here imports textual. A turn routes the message, runs the
tool (which may report progress and stops when the turn is cancelled), and, for a plain
question, asks the session's one answer path (:mod:`assistant.chat.answer`). Changes are
only ever *proposed*: :meth:`ChatSession.approve` hands a proposal to the kernel agent,
which validates it as always, and only after a person said yes; every decision becomes an
:class:`~assistant.chat.memory.Outcome` recorded with the turn that proposed it.

The session owns the conversation's :class:`~assistant.chat.memory.Memory` (the last
crash, key, changeset and recommendation; the proposals still pending): two sessions in
one process never share it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from actions.model import Changeset, Completion, ErrorEntry
from assistant.chat.answer import Answerer, GroundedAnswerer
from assistant.chat.cues import (
    about_this_machine,
    asks,
    is_small_talk,
    mood,
)
from assistant.chat.memory import Memory, Outcome, Proposal
from assistant.chat.router import Decision, is_request, route
from assistant.chat.tools import TOOLS, Cancelled, Context, ToolResult, help_text, run_tool
from assistant.errors import KassistError, NotAvailable
from assistant.llm.base import Backend, GenerationStats


@dataclass
class Turn:
    """One question and what came of it.

    :param answer: the text shown as the assistant's reply (Markdown).
    :param error: one line when the tool failed.
    :param notice: one line when the model's prose was withheld, or the turn cancelled.
    :param draft: the model's text as it streamed, before the check (shown only if it passed).
    :param outcomes: what became of the turn's proposals (approved, refused, declined).
    """

    question: str
    decision: Decision
    result: ToolResult | None = None
    answer: str = ""
    error: str = ""
    notice: str = ""
    started: float = field(default_factory=time.time)
    stats: GenerationStats | None = None
    draft: str = ""
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def proposals(self) -> list[Proposal]:
        """Return the changes this turn proposed."""
        return list(self.result.proposals) if self.result else []

    def to_dict(self) -> dict[str, Any]:
        """Return the turn as the ``kassist.ask/1`` object."""
        return {
            "schema": "kassist.ask/1",
            "action": self.decision.action,
            "args": self.decision.args,
            "via": self.decision.via,
            "answer": self.answer,
            "error": self.error or None,
            "notice": self.notice or None,
            "data": self.result.data if self.result else {},
            "proposed": [p.to_dict() for p in self.proposals],
            "outcomes": [o.to_dict() for o in self.outcomes],
        }


#: Tools that read this machine's state: a general question the cues gave one of them
#: weakly ("what is swap used for?") also gets the documentation's answer.
READING_TOOLS = frozenset({"stats", "tune", "disks", "logs", "top", "health", "crashes"})
#: Below this the cues' pick of a reading tool is weak (a named thing gives 0.8 or more).
WEAK_CUE = 0.8


def _documentation_beside(turn: Turn) -> str:
    """Return where the documentation's cited answer goes beside a tool's: ``first`` (a
    key's page reached by a question about a concept, not "/docs KEY"; a message that asks
    both what a thing is and for a reading), ``after`` (a general question a reading tool
    took on phrases alone), or "" (none)."""
    decision = turn.decision
    if decision.via == "slash":
        return ""
    key = decision.args.get("key")
    form = asks(turn.question)
    asked = form in ("concept", "both") or (mood(turn.question) != "statement" and form == "")
    if decision.action == "docs" and key and key != "undocumented":
        return "first" if asked else ""  # "what is the current value of X?": the page alone
    if decision.action == "apply" and decision.args.get("hypothetical") and asked:
        return "first"  # "if I set vm.swappiness to 0, will it never swap?": then the dry run
    if decision.action in READING_TOOLS and form == "both":
        return "first"  # "is my box swapping, and what is swappiness?": both, the answer first
    general = mood(turn.question) == "question" and not about_this_machine(turn.question)
    weak = decision.confidence < WEAK_CUE and not decision.args
    return "after" if decision.action in READING_TOOLS and general and weak else ""


def _clarify_text(decision: Decision) -> str:
    summaries = {t.name: t.summary for t in TOOLS}
    offered = [f"`/{a}` ({summaries.get(a, a)})" for a in decision.alternatives]
    return "I am not sure what you want. Did you mean " + " or ".join(offered) + "?"


def _greeting() -> str:
    return "Hello. " + help_text()


class ChatSession:
    """A conversation with the assistant.

    :param backend: the model for routing and prose, or ``None`` (cues and facts only).
    :param ctx: where the tools find the store and the agent (its memory is replaced by
        this session's own).
    :param on_turn: called with each finished turn (a history store records it).
    :param on_outcome: called with each decided proposal (a history store records it).
    :param answerer: the answer path for plain questions (default: the documentation's).
    """

    def __init__(
        self,
        backend: Backend | None,
        ctx: Context | None = None,
        on_turn: Callable[[Turn], None] | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
        answerer: Answerer | None = None,
        native_tools: bool = False,
    ) -> None:
        self.backend = backend
        self.memory = Memory()
        self.ctx = replace(ctx or Context(), memory=self.memory)
        self.turns: list[Turn] = []
        self.on_turn = on_turn
        self.on_outcome = on_outcome
        self.answerer: Answerer = answerer or GroundedAnswerer(backend, fallback=_greeting)
        #: let the model call the tools itself (assistant.chat.native), router as fallback
        self.native_tools = native_tools
        self._probe_names: list[str] | None = None
        self._proposal_ids = 0

    @property
    def probe_names(self) -> list[str]:
        """Return the eBPF probes of the library (read once)."""
        if self._probe_names is None:
            from probes.bpf import list_probes

            self._probe_names = [p.name for p in list_probes()]
        return self._probe_names

    @property
    def pending(self) -> list[Proposal]:
        """Return the proposals no one decided yet, oldest first."""
        return list(self.memory.pending.values())

    def route(self, text: str) -> Decision:
        """Decide where a message goes, without running anything."""
        return route(text, self.probe_names, self.backend)

    def ask(
        self,
        text: str,
        on_token: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
        on_progress: Callable[[str], None] | None = None,
    ) -> Turn:
        """Run one turn: route, run the tool, and stream the answer through ``on_token``.

        :param cancel: set it to stop the turn (a tool at its next check, the model at its
            next token); the turn keeps what came so far.
        :param on_progress: told, one line at a time, what a slow tool is doing.
        """
        ctx = replace(self.ctx, progress=on_progress, cancel=cancel, imperative=is_request(text))
        native = self._native(text, ctx) if self.native_tools else None
        if isinstance(native, Turn):
            turn = native
        else:
            decision = self.route(text)
            turn = Turn(text, decision, notice=native or "")
            try:
                self._run(turn, ctx, on_token, cancel)
            except Cancelled:
                turn.notice = "cancelled: nothing was changed"
                turn.answer = turn.answer or f"**{decision.action}** was cancelled."
            except KassistError as exc:
                turn.error = exc.one_line()
                failed = f"**{decision.action}** failed: {turn.error}"
                turn.answer = f"{turn.answer}\n\n{failed}" if turn.answer else failed
        self._number_proposals(turn)
        self.turns.append(turn)
        if self.on_turn is not None:
            self.on_turn(turn)
        return turn

    def _native(self, text: str, ctx: Context) -> Turn | str | None:
        # The model calls the tools itself; a str is why the router takes the turn instead.
        from assistant.chat.native import Fallback, native_turn

        if self.backend is None or text.lstrip().startswith("/"):
            return None
        outcome = native_turn(self.backend, text, ctx)
        if isinstance(outcome, Fallback):
            return outcome.why
        first = outcome.calls[0]
        result = ToolResult(
            outcome.answer,
            {
                "calls": [
                    {"tool": c.name, "args": c.args, "data": c.result.data} for c in outcome.calls
                ]
            },
            [p for c in outcome.calls for p in c.result.proposals],
        )
        decision = Decision(first.name, first.args, via="native")
        return Turn(text, decision, result, outcome.answer, notice=outcome.notice)

    def _run(
        self,
        turn: Turn,
        ctx: Context,
        on_token: Callable[[str], None] | None,
        cancel: threading.Event | None,
    ) -> None:
        decision = turn.decision
        if decision.action == "clarify":
            turn.answer = _clarify_text(decision)
            return
        if decision.action == "answer":
            question = turn.question
            if decision.via == "slash":  # "/ask what is RCU": the question is the rest
                question = question.strip().partition(" ")[2] or question
            if is_small_talk(question):
                turn.answer = _greeting()
                return
            answer = self.answerer(question, on_token, cancel)
            turn.answer, turn.notice = answer.text, answer.notice
            turn.draft, turn.stats = answer.draft, answer.stats
            if answer.data:
                turn.result = ToolResult(answer.text, answer.data)
            return
        beside = _documentation_beside(turn)
        # "what is the difference between vm.dirty_ratio and ...?": the key's page answers
        # what the key is, the documentation's cited answer the question (measured on the
        # tune part: each alone missed what the other had). Asked first, it stands when the
        # tool fails. A general question a reading tool took gets it after the reading.
        cited = self.answerer(turn.question, None, cancel) if beside == "first" else None
        if cited is not None and cited.cited:
            turn.answer = cited.text
        turn.result = run_tool(decision.action, decision.args, ctx)
        if beside == "after":
            cited = self.answerer(turn.question, None, cancel)
        if cited is None or not cited.cited:
            turn.answer = turn.result.text
            return
        first, then = (
            (cited.text, turn.result.text) if beside == "first" else (turn.result.text, cited.text)
        )
        turn.answer = f"{first}\n\n{then}"
        turn.result.data = {**turn.result.data, "grounded": cited.data}

    def _number_proposals(self, turn: Turn) -> None:
        if turn.result is None or not turn.result.proposals:
            return
        numbered = []
        for p in turn.result.proposals:
            self._proposal_ids += 1
            numbered.append(replace(p, id=self._proposal_ids))
            self.memory.pending[self._proposal_ids] = numbered[-1]
        turn.result.proposals = numbered

    def warm(self) -> None:
        """Prepare the answer path (the TUI calls this in a worker when it opens)."""
        self.answerer.warm()

    # -- decisions on proposals -------------------------------------------------------------

    def approve(self, proposal: Proposal) -> Completion:
        """Carry out an approved proposal through the agent, which validates it first.

        The outcome is recorded (and the proposal leaves the pending list) whatever the
        agent answers.

        :raises NotAvailable: the agent cannot be reached (recorded as ``unavailable``).
        """
        from actions.client import CHANGE_TIMEOUT, AgentClient
        from actions.errors import ActionError

        try:
            with AgentClient(self.ctx.socket, timeout=CHANGE_TIMEOUT) as client:
                if proposal.op == "rollback":
                    done = client.rollback(proposal.changeset)
                else:
                    done = client.apply(list(proposal.recommendations))
        except ActionError as exc:
            self._decided(proposal, "unavailable", False, exc.one_line())
            raise NotAvailable(exc.message, exc.hint or "start it: kassist agent serve") from None
        cs = done.changeset
        if done.ok and cs is not None:
            self.memory.changeset = cs.id
        self._decided(proposal, done.verdict, done.ok, _detail(done), cs.id if cs else None)
        return done

    def dry_run(self, proposal: Proposal) -> Completion:
        """Show what a proposal would do, changing nothing.

        An apply is validated by the agent (old -> new per key). A rollback has no dry run
        in the protocol: the changeset is read from the agent's journal and each key is
        shown with the value it would get back (``ok`` false when it cannot be rolled back).

        :raises NotAvailable: the agent cannot be reached.
        """
        from actions.client import try_history, try_validate

        if proposal.op == "rollback":
            reading = try_history(self.ctx.socket, cs_id=proposal.changeset)
            if reading.changesets is None:
                raise NotAvailable(reading.error, "start it: kassist agent serve")
            return _rollback_preview(proposal.changeset, reading.changesets)
        dry = try_validate(self.ctx.socket, list(proposal.recommendations))
        if dry.completion is None:
            raise NotAvailable(dry.error, "start it: kassist agent serve")
        return dry.completion

    def decline(self, proposal: Proposal, refused: Completion | None = None) -> Outcome:
        """Drop a proposal without applying it: the person said no, or the agent's dry run
        refused it (then its errors are the outcome's detail)."""
        if refused is not None:
            return self._decided(proposal, f"refused ({refused.verdict})", False, _detail(refused))
        return self._decided(proposal, "declined", False, "you said no; nothing was changed")

    def outcome_of(self, proposal: int) -> Outcome | None:
        """Return what became of a proposal, or ``None`` while it is pending."""
        found = [o for t in self.turns for o in t.outcomes if o.proposal == proposal]
        return found[-1] if found else None

    def _decided(
        self, proposal: Proposal, verdict: str, ok: bool, detail: str, cs: int | None = None
    ) -> Outcome:
        outcome = Outcome(proposal.id, proposal.summary, verdict, ok, detail, cs, time.time())
        self.memory.pending.pop(proposal.id, None)
        for turn in self.turns:
            if any(p.id == proposal.id for p in turn.proposals):
                turn.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome


def _detail(done: Completion) -> str:
    # One line: the agent's errors, or the changeset and its keys.
    if done.errors:
        return "; ".join(e.message for e in done.errors)[:400]
    cs = done.changeset
    if cs is None:
        return ""
    keys = ", ".join(f"{c.target} {c.old} -> {c.new}" for c in cs.changes)
    return f"changeset {cs.id}: {keys}"


def _rollback_preview(cs_id: int | None, found: list[Changeset]) -> Completion:
    # What a rollback would put back, as a completion of its own (verdict "preview"): each
    # change with old and new swapped. Nothing is asked of the agent but its journal.
    cs = next((c for c in found if c.id == cs_id), None)
    if cs is None:
        error = ErrorEntry("rollback", "", f"no changeset {cs_id}")
        return Completion(ok=False, verdict="not_found", errors=[error])
    undo = [replace(c, old=c.new, new=c.old) for c in cs.changes]
    preview = replace(cs, changes=undo)
    if cs.state not in ("verified", "applied"):
        error = ErrorEntry("rollback", "", f"changeset {cs.id} is {cs.state}: nothing to undo")
        return Completion(ok=False, verdict="refused", errors=[error], changeset=preview)
    notice = "from the agent's journal; the agent checks every key again when it rolls back"
    return Completion(ok=True, verdict="preview", changeset=preview, notices=[notice])
