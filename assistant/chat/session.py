"""A headless chat session: history, routing, tools, streaming, cancellation, approval.

The TUI (``tui/``) and ``kassist ask`` are two thin front ends over
:class:`ChatSession`; nothing here imports textual. A turn routes the message, runs the
tool, and, for plain conversation, streams the model's answer from the facts it is
given. Changes are only ever *proposed*: :meth:`ChatSession.approve` hands a proposal to
the kernel agent, which validates it as always, and only after a person said yes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from assistant.chat.cues import is_small_talk
from assistant.chat.router import Decision, route
from assistant.chat.tools import TOOLS, Context, Proposal, ToolResult, run_tool
from assistant.errors import KassistError
from assistant.llm.base import Backend, GenerationStats, Message

ANSWER_PROMPT = "chat_answer"
#: Characters of a tool's evidence handed to the model.
EVIDENCE_CHARS = 2400
#: Characters of a documentation section handed to the model for a plain answer.
FACT_CHARS = 500


@dataclass
class Turn:
    """One question and what came of it.

    :param answer: the text shown as the assistant's reply (Markdown).
    :param error: one line when the tool failed.
    :param notice: one line when the model's prose was withheld, or the turn cancelled.
    :param draft: the model's text as it streamed, before the check (shown only if it passed).
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
        }


def _help_text() -> str:
    rows = [f"- `/{t.name}`: {t.summary}" for t in TOOLS if t.name != "answer"]
    return "I can use these tools (or ask me in plain words):\n" + "\n".join(rows)


def _clarify_text(decision: Decision) -> str:
    summaries = {t.name: t.summary for t in TOOLS}
    offered = [f"`/{a}` ({summaries.get(a, a)})" for a in decision.alternatives]
    return "I am not sure what you want. Did you mean " + " or ".join(offered) + "?"


class ChatSession:
    """A conversation with the assistant.

    :param backend: the model for routing and prose, or ``None`` (cues and facts only).
    :param ctx: where the tools find the store and the agent.
    :param on_turn: called with each finished turn (a history store records it).
    """

    def __init__(
        self,
        backend: Backend | None,
        ctx: Context | None = None,
        on_turn: Callable[[Turn], None] | None = None,
        native_tools: bool = False,
    ) -> None:
        self.backend = backend
        self.ctx = ctx or Context()
        self.turns: list[Turn] = []
        self.on_turn = on_turn
        #: let the model call the tools itself (assistant.chat.native), router as fallback
        self.native_tools = native_tools
        self._probe_names: list[str] | None = None

    @property
    def probe_names(self) -> list[str]:
        """Return the eBPF probes of the library (read once)."""
        if self._probe_names is None:
            from probes.bpf import list_probes

            self._probe_names = [p.name for p in list_probes()]
        return self._probe_names

    def route(self, text: str) -> Decision:
        """Decide where a message goes, without running anything."""
        return route(text, self.probe_names, self.backend)

    def ask(
        self,
        text: str,
        on_token: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Turn:
        """Run one turn: route, run the tool, and stream the answer through ``on_token``.

        :param cancel: set it to stop a generation; the turn keeps what came so far.
        """
        native = self._native(text) if self.native_tools else None
        if isinstance(native, Turn):
            turn = native
        else:
            decision = self.route(text)
            turn = Turn(text, decision, notice=native or "")
            try:
                self._run(turn, on_token, cancel)
            except KassistError as exc:
                turn.error = exc.one_line()
                turn.answer = f"**{decision.action}** failed: {turn.error}"
        self.turns.append(turn)
        if self.on_turn is not None:
            self.on_turn(turn)
        return turn

    def _native(self, text: str) -> Turn | str | None:
        # The model calls the tools itself; a str is why the router takes the turn instead.
        from assistant.chat.native import Fallback, native_turn

        if self.backend is None or text.lstrip().startswith("/"):
            return None
        outcome = native_turn(self.backend, text, self.ctx)
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
        self, turn: Turn, on_token: Callable[[str], None] | None, cancel: threading.Event | None
    ) -> None:
        decision = turn.decision
        if decision.action == "clarify":
            turn.answer = _clarify_text(decision)
            return
        if decision.action == "answer":
            self._answer(turn, on_token, cancel)
            return
        turn.result = run_tool(decision.action, decision.args, self.ctx)
        turn.answer = turn.result.text

    def _answer(
        self, turn: Turn, on_token: Callable[[str], None] | None, cancel: threading.Event | None
    ) -> None:
        facts = "" if is_small_talk(turn.question) else _knowledge_facts(turn.question)
        if self.backend is None or not facts:
            turn.answer = (facts and _facts_answer(facts)) or _help_text()
            if not facts and self.backend is not None:
                turn.notice = "no documentation matched the question; showing what I can do"
            return
        from assistant.llm.prompts import load_prompt

        prompt = load_prompt(ANSWER_PROMPT)
        messages = prompt.render(question=turn.question[:600], facts=facts[:EVIDENCE_CHARS])
        stats = GenerationStats(prompt_name=prompt.label)
        pieces: list[str] = []
        for piece in self.backend.stream(messages, int(prompt.meta.get("max_tokens", 120)), stats):
            if cancel is not None and cancel.is_set():
                turn.notice = "cancelled"
                break
            pieces.append(piece)
            if on_token is not None:
                on_token(piece)
        turn.stats = stats
        turn.draft = "".join(pieces)
        draft = turn.draft.strip()
        verdict = _check(draft, facts, messages)
        if verdict is None:
            turn.answer = draft
        else:
            turn.notice = f"the model's answer was withheld ({verdict})"
            turn.answer = _facts_answer(facts)

    def warm(self) -> None:
        """Evaluate the answer prompt's fixed system part once, so its KV cache is kept.

        A backend that reuses a cached prefix (llama_cpp) then reads only a question's own
        tokens; the TUI calls this in a worker when it opens.
        """
        if self.backend is None:
            return
        from assistant.llm.prompts import load_prompt

        messages = load_prompt(ANSWER_PROMPT).render(question="", facts="")
        for _ in self.backend.stream(messages, 1):
            break

    def approve(self, proposal: Proposal) -> dict[str, Any]:
        """Carry out an approved proposal through the agent, which validates it first.

        :raises KassistError: the agent cannot be reached.
        """
        from actions.client import AgentClient
        from actions.errors import ActionError
        from assistant.errors import NotAvailable

        try:
            with AgentClient(self.ctx.socket, timeout=60.0) as client:
                if proposal.op == "rollback":
                    answer = client.rollback(proposal.changeset)
                else:
                    answer = client.apply(list(proposal.recommendations))
        except ActionError as exc:
            raise NotAvailable(str(exc), "start it with `kassist agent serve`") from None
        return answer.to_wire(None)

    def dry_run(self, proposal: Proposal) -> dict[str, Any]:
        """Ask the agent to validate a proposal without applying it (old -> new per key)."""
        from actions.client import AgentClient
        from actions.errors import ActionError
        from assistant.errors import NotAvailable

        if proposal.op == "rollback":
            return {"ok": True, "verdict": "rollback", "changeset": proposal.changeset}
        try:
            with AgentClient(self.ctx.socket, timeout=60.0) as client:
                return client.validate(list(proposal.recommendations)).to_wire(None)
        except ActionError as exc:
            raise NotAvailable(str(exc), "start it with `kassist agent serve`") from None


def _knowledge_facts(question: str) -> str:
    # Documentation sections from the kernel's own sources, cited; "" without a knowledge base.
    from assistant.knowledge import try_open

    kb = try_open()
    if kb is None:
        return ""
    # One section, its opening only: a short prompt keeps a follow-up's first token near a
    # second with the bundled model (the whole section is cited, not quoted).
    hits = kb.search(question, limit=1)
    return "\n\n".join(f"[{h.cite}] {h.title}: {h.text[:FACT_CHARS]}" for h in hits)


def _facts_answer(facts: str) -> str:
    first = facts.split("\n\n", 1)[0]
    return "From the kernel's documentation:\n\n> " + first[:800].replace("\n", "\n> ")


def _check(draft: str, facts: str, messages: list[Message]) -> str | None:
    # The shared meaning-and-grounding checker; None when the draft may be shown.
    from assistant.drafters.checker import Evidence, check_draft

    if not draft:
        return "empty"
    verdict = check_draft(draft, Evidence(text=facts, prompt_lines=[m.content for m in messages]))
    return None if verdict.ok else "; ".join(verdict.problems)[:200]
