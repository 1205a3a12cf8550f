"""``kassist chat``: the Textual app over :class:`assistant.chat.session.ChatSession`.

Blocking work (the model, drgn, eBPF, the agent) runs in thread workers that post typed
messages back; the UI never waits on them. A change is applied only after
:class:`~tui.screens.confirm.ConfirmChange` (a ``ModalScreen[bool]``) showed the agent's
dry run and the person said yes; the agent validates it again when it applies it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.command import Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Footer, Header, Input, Markdown
from textual.widgets._markdown import MarkdownStream
from textual.worker import Worker, WorkerState

from assistant.chat.history import ChatHistory
from assistant.chat.router import SLASH
from assistant.chat.session import ChatSession, Turn
from assistant.chat.tools import TOOLS, Proposal
from assistant.config import ChatConfig
from tui.screens.confirm import ConfirmChange
from tui.screens.help import HelpScreen
from tui.sources import Sources
from tui.widgets.messages import AssistantMessage, Notice, ToolCall, UserMessage
from tui.widgets.panels import AgentPanel, CrashesPanel, PressurePanel, ProposalsPanel

#: Seconds between refreshes of the live panels.
PANEL_INTERVAL = 2.0
_FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.S)


class Token(Message):
    """A piece of the answer the model is writing."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class TurnDone(Message):
    """A turn finished (answered, failed or cancelled)."""

    def __init__(self, turn: Turn) -> None:
        super().__init__()
        self.turn = turn


@dataclass(frozen=True)
class PanelData:
    """One refresh of the side panels."""

    load1: float
    psi: dict[str, float]
    crashes: list[tuple[str, str, int]]
    agent: str


class PanelsRead(Message):
    """The side panels' data was read."""

    def __init__(self, data: PanelData) -> None:
        super().__init__()
        self.data = data


class DryRun(Message):
    """The agent's dry run of a proposal, to show before asking yes or no."""

    def __init__(self, index: int, verdict: dict[str, Any]) -> None:
        super().__init__()
        self.index = index
        self.verdict = verdict


class Applied(Message):
    """The agent's answer to an approved proposal."""

    def __init__(self, index: int, verdict: dict[str, Any]) -> None:
        super().__init__()
        self.index = index
        self.verdict = verdict


class SlashCommands(Provider):
    """The command palette's slash commands: choosing one puts it in the input line."""

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        summaries = {t.name: t.summary for t in TOOLS}
        for name, (tool, _) in SLASH.items():
            text = f"/{name}"
            score = matcher.match(f"{text} {summaries.get(tool, '')}")
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(text),
                    lambda t=text: self.app.query_one("#prompt", Input).insert_text_at_cursor(t),
                    help=summaries.get(tool, ""),
                )


def help_text(cfg: ChatConfig) -> str:
    """The help screen's Markdown: keys (as configured) and slash commands."""
    keys = [
        (cfg.key_cancel, "stop the answer being written"),
        (cfg.key_approve, "approve the selected pending change (shows the dry run)"),
        (cfg.key_reject, "reject the selected pending change"),
        (cfg.key_copy, "copy the last answer"),
        (cfg.key_copy_code, "copy the last code block"),
        (cfg.key_export, "export the conversation to Markdown"),
        (cfg.key_help, "this help"),
        (cfg.key_quit, "quit"),
        ("ctrl+p", "command palette"),
    ]
    rows = [f"| `{k}` | {what} |" for k, what in keys]
    tools = [f"| `/{t.name}` | {t.summary} |" for t in TOOLS if t.name != "answer"]
    return "\n".join(
        [
            "# kassist chat",
            "",
            "Ask in plain words, or use a slash command. Changes are only proposed: they",
            "wait in *pending changes* until you approve them; the agent validates them.",
            'Keys are set in `[chat]` of the config (`key_cancel = "ctrl+c"`, ...).',
            "",
            "| key | does |",
            "|---|---|",
            *rows,
            "",
            "| command | does |",
            "|---|---|",
            *tools,
        ]
    )


class KassistApp(App[None]):
    """The chat: a conversation, live side panels, and an input line."""

    CSS_PATH = "kassist.tcss"
    TITLE = "kassist chat"
    COMMANDS = App.COMMANDS | {SlashCommands}

    def __init__(
        self,
        session: ChatSession,
        cfg: ChatConfig | None = None,
        sources: Sources | None = None,
        history: ChatHistory | None = None,
    ) -> None:
        super().__init__()
        self.session = session
        self.cfg = cfg or ChatConfig()
        self.sources = sources or Sources()
        self.history = history
        self.proposals: dict[int, Proposal] = {}
        self._next_proposal = 0
        self._cancel = threading.Event()
        self._stream: MarkdownStream | None = None
        self._reply: AssistantMessage | None = None
        self.tokens_streamed = 0
        self.tokens_shown = 0

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield VerticalScroll(id="conversation")
            with Vertical(id="side"):
                yield PressurePanel()
                yield CrashesPanel()
                yield ProposalsPanel()
                yield AgentPanel()
        yield Input(placeholder="Ask about this system, or /help", id="prompt")
        yield Footer()

    def on_mount(self) -> None:
        bindings: Iterable[tuple[str, str, str]] = (
            (self.cfg.key_cancel, "cancel", "cancel"),
            (self.cfg.key_approve, "approve", "approve"),
            (self.cfg.key_reject, "reject", "reject"),
            (self.cfg.key_copy, "copy", "copy"),
            (self.cfg.key_copy_code, "copy_code", "copy code"),
            (self.cfg.key_export, "export", "export"),
            (self.cfg.key_help, "help", "help"),
            (self.cfg.key_quit, "quit", "quit"),
        )
        for key, action, label in bindings:
            # Priority bindings (checked before the input line sees the key); the public
            # App.bind has no priority flag.
            self._bindings.bind(key, action, label, priority=True)
        self.query_one("#prompt", Input).focus()
        self.warm_model()
        self.refresh_panels()
        if self.sources.live:
            self.set_interval(PANEL_INTERVAL, self.refresh_panels)

    @work(thread=True, exclusive=True, exit_on_error=False, group="warm")
    def warm_model(self) -> None:
        """Load the model and read the fixed system prompt once, before the first question."""
        self.session.warm()

    # -- the conversation ----------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Tell whether a turn is being answered."""
        return any(w.group == "turn" and w.is_running for w in self.workers)

    @on(Input.Submitted, "#prompt")
    async def submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.busy:
            self.notify("still answering: wait, or cancel", severity="warning")
            return
        event.input.value = ""
        conversation = self.query_one("#conversation", VerticalScroll)
        await conversation.mount(UserMessage(text))
        self._reply = AssistantMessage("")
        self._reply.add_class("draft")
        await conversation.mount(self._reply)
        conversation.anchor()
        self._stream = Markdown.get_stream(self._reply)
        self._cancel.clear()
        self.answer(text)

    @work(thread=True, exclusive=True, exit_on_error=False, group="turn")
    def answer(self, text: str) -> None:
        """Run one turn in a thread; tokens and the result come back as messages."""

        def token(piece: str) -> None:
            self.tokens_streamed += 1
            self.post_message(Token(piece))

        turn = self.session.ask(text, on_token=token, cancel=self._cancel)
        self.post_message(TurnDone(turn))

    async def on_token(self, message: Token) -> None:
        if self._stream is not None:
            self.tokens_shown += 1
            await self._stream.write(message.text)

    async def on_turn_done(self, message: TurnDone) -> None:
        turn = message.turn
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        conversation = self.query_one("#conversation", VerticalScroll)
        reply = self._reply
        if reply is not None:
            # One full update at the end: the streamed draft is replaced by the checked
            # answer, so no block is left half-rendered and no last token is lost.
            reply.remove_class("draft")
            await reply.update(turn.answer)
        if turn.decision.action not in ("answer", "clarify"):
            await conversation.mount(
                ToolCall(turn.decision.action, turn.decision.args, turn.answer), before=reply
            )
        for line in (turn.notice, turn.error):
            if line:
                await conversation.mount(Notice(line))
        for proposal in turn.proposals:
            index = self._next_proposal
            self._next_proposal += 1
            self.proposals[index] = proposal
            self.query_one(ProposalsPanel).add(index, proposal.summary)
            self.notify(f"pending: {proposal.summary} ({self.cfg.key_approve} to review)")
        if self.history is not None:
            self.history.record(turn)

    def action_cancel(self) -> None:
        """Stop the answer being written (the turn keeps what came so far)."""
        self._cancel.set()

    # -- approving changes ------------------------------------------------------------------

    def action_approve(self) -> None:
        """Show the agent's dry run of the selected proposal, then ask yes or no."""
        index = self.query_one(ProposalsPanel).selected()
        if index is None:
            self.notify("no pending change")
            return
        self.dry_run(index)

    @work(thread=True, exit_on_error=False, group="agent")
    def dry_run(self, index: int) -> None:
        """Ask the agent to validate a proposal (nothing is applied)."""
        self.post_message(DryRun(index, self.session.dry_run(self.proposals[index])))

    def on_dry_run(self, message: DryRun) -> None:
        proposal = self.proposals[message.index]

        def decided(yes: bool | None) -> None:
            if yes:
                self.apply(message.index)
            else:
                self.notify(f"not applied: {proposal.summary}")

        self.push_screen(ConfirmChange(proposal.summary, message.verdict), decided)

    @work(thread=True, exit_on_error=False, group="agent")
    def apply(self, index: int) -> None:
        """Hand an approved proposal to the agent."""
        self.post_message(Applied(index, self.session.approve(self.proposals[index])))

    async def on_applied(self, message: Applied) -> None:
        verdict = message.verdict
        proposal = self.proposals.pop(message.index)
        self.query_one(ProposalsPanel).drop(message.index)
        state = verdict.get("verdict", "?")
        line = f"agent: {proposal.summary}: {state}"
        if verdict.get("errors"):
            line += (
                " (" + "; ".join(str(e.get("message", e)) for e in verdict["errors"])[:200] + ")"
            )
        await self.query_one("#conversation", VerticalScroll).mount(Notice(line))
        self.notify(line, severity="information" if verdict.get("ok") else "error")

    def action_reject(self) -> None:
        """Drop the selected proposal; nothing changes."""
        index = self.query_one(ProposalsPanel).selected()
        if index is None:
            return
        proposal = self.proposals.pop(index)
        self.query_one(ProposalsPanel).drop(index)
        self.notify(f"rejected: {proposal.summary}")

    # -- panels ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="panels")
    def refresh_panels(self) -> None:
        """Read the panels' data in a thread."""
        pressure = self.sources.pressure()
        data = PanelData(
            pressure.load1,
            pressure.psi,
            self.sources.crashes(self.session.ctx.store),
            self.sources.agent(self.session.ctx.socket),
        )
        self.post_message(PanelsRead(data))

    def on_panels_read(self, message: PanelsRead) -> None:
        data = message.data
        panel = self.query_one(PressurePanel)
        panel.add("load", data.load1)
        for name, value in data.psi.items():
            panel.add(name, value)
        self.query_one(CrashesPanel).show(data.crashes)
        self.query_one(AgentPanel).show(data.agent)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            self.notify(
                f"{event.worker.group}: {type(error).__name__}: {error}"[:200], severity="error"
            )

    # -- copy, export, help -------------------------------------------------------------------

    def _last_answer(self) -> str:
        replies = list(self.query(AssistantMessage))
        return replies[-1].source if replies else ""

    def action_copy(self) -> None:
        """Copy the last answer to the clipboard (OSC 52)."""
        self.copy_to_clipboard(self._last_answer())
        self.notify("copied the last answer")

    def action_copy_code(self) -> None:
        """Copy the last code block of the last answer."""
        blocks = _FENCE.findall(self._last_answer())
        if not blocks:
            self.notify("no code block in the last answer")
            return
        self.copy_to_clipboard(blocks[-1])
        self.notify("copied the last code block")

    def action_export(self) -> None:
        """Write the conversation to ``kassist-chat-<time>.md`` in the current directory."""
        out = [f"# kassist chat, {time.strftime('%Y-%m-%d %H:%M')}", ""]
        for turn in self.session.turns:
            out += [f"**You:** {turn.question}", "", f"**kassist** (`{turn.decision.action}`):"]
            out += ["", turn.answer, ""]
        path = Path(f"kassist-chat-{time.strftime('%Y%m%d-%H%M%S')}.md")
        path.write_text("\n".join(out), encoding="utf-8")
        self.notify(f"exported to {path}")

    def action_help(self) -> None:
        """Show the keys and commands."""
        self.push_screen(HelpScreen(help_text(self.cfg)))
