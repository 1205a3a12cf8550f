"""``kassist chat``: the Textual app over :class:`assistant.chat.session.ChatSession`.

Blocking work (the model, drgn, eBPF, the agent) runs in thread workers that post typed
messages back; the UI never waits on them, a slow tool shows what it is doing, and the
cancel key (Esc) stops a tool as well as the model. Messages typed while a turn runs are
queued, never lost or merged. A change is applied only after
:class:`~tui.screens.confirm.ConfirmChange` (a ``ModalScreen[bool]``) showed the agent's
dry run and the person said yes; the agent validates it again when it applies it. Every
decision (applied, refused, declined) is written into the conversation and its export.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from textual import events, on, work
from textual.app import App, ComposeResult
from textual.command import Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Footer, Header, Input, Markdown, Static
from textual.widgets._markdown import MarkdownStream
from textual.worker import Worker, WorkerState

from actions.model import Completion
from assistant.chat.history import ChatHistory, turns_markdown
from assistant.chat.memory import Outcome, Proposal
from assistant.chat.router import SLASH
from assistant.chat.session import ChatSession, Turn
from assistant.chat.tools import TOOLS
from assistant.config import ChatConfig
from assistant.errors import KassistError
from tui.screens.confirm import ConfirmChange
from tui.screens.help import HelpScreen
from tui.sources import Sources
from tui.widgets.messages import AssistantMessage, Notice, ToolCall, UserMessage
from tui.widgets.panels import AgentPanel, CrashesPanel, PressurePanel, ProposalsPanel
from tui.widgets.prompt import PromptInput

#: Seconds between refreshes of the live panels.
PANEL_INTERVAL = 2.0
#: Below this many columns the side panels are hidden: the conversation keeps the width.
SIDE_MIN_WIDTH = 80
_FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.S)


class Token(Message):
    """A piece of the answer the model is writing."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class Progress(Message):
    """A line on what a slow tool is doing."""

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
    """The agent's dry run of a proposal (or why there is none), to show before yes or no."""

    def __init__(self, proposal: Proposal, verdict: Completion | None, error: str = "") -> None:
        super().__init__()
        self.proposal = proposal
        self.verdict = verdict
        self.error = error


class Decided(Message):
    """What became of a proposal the person decided on."""

    def __init__(self, proposal: Proposal, outcome: Outcome) -> None:
        super().__init__()
        self.proposal = proposal
        self.outcome = outcome


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
        (cfg.key_cancel, "stop the running tool or answer; close a dialog"),
        (cfg.key_approve, "review the selected pending change (shows the dry run)"),
        (cfg.key_reject, "decline the selected pending change"),
        (cfg.key_copy, "copy the last answer"),
        (cfg.key_copy_code, "copy the last code block"),
        (cfg.key_export, "export the conversation (with every outcome) to Markdown"),
        (cfg.key_help, "this help (press it again, or Esc, to close)"),
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


@dataclass
class _Pending:
    # The reply being written: its widget, its stream, and its progress line.
    reply: AssistantMessage
    stream: MarkdownStream
    progress: Static


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
        self.history = history  # written on the UI thread only (SQLite objects stay in theirs)
        self.queued: deque[str] = deque()
        self._cancel = threading.Event()
        self._pending: _Pending | None = None
        self._reviewing: int | None = None  # the proposal whose dry run or dialog is open
        self.tokens_streamed = 0
        self.tokens_shown = 0

    @property
    def proposals(self) -> dict[int, Proposal]:
        """Return the conversation's pending proposals by id."""
        return self.session.memory.pending

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="main"):
            yield VerticalScroll(id="conversation")
            with Vertical(id="side"):
                yield PressurePanel()
                yield CrashesPanel()
                yield ProposalsPanel()
                yield AgentPanel()
        yield PromptInput(placeholder="Ask about this system, or /help", id="prompt")
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

    def on_resize(self, event: events.Resize) -> None:
        # A narrow terminal gives the conversation the whole width.
        self.query_one("#side").display = event.size.width >= SIDE_MIN_WIDTH

    @work(thread=True, exclusive=True, exit_on_error=False, group="warm")
    def warm_model(self) -> None:
        """Load the model and read the fixed system prompt once, before the first question."""
        self.session.warm()

    # -- the conversation ----------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Tell whether a turn is being answered (or waits in the queue)."""
        running = any(w.group == "turn" and w.is_running for w in self.workers)
        return running or self._pending is not None or bool(self.queued)

    @on(Input.Submitted, "#prompt")
    async def submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()  # the line was cleared when Enter was read
        if not text:
            return
        if self._pending is not None:
            self.queued.append(text)
            self.notify(f"queued ({len(self.queued)} waiting): {text[:40]}")
            return
        await self._start(text)

    async def _start(self, text: str) -> None:
        conversation = self.query_one("#conversation", VerticalScroll)
        await conversation.mount(UserMessage(text))
        reply = AssistantMessage("")
        reply.add_class("draft")
        progress = Static("…", classes="progress", markup=False)
        await conversation.mount(reply)
        await conversation.mount(progress)
        conversation.anchor()
        self._pending = _Pending(reply, Markdown.get_stream(reply), progress)
        self._cancel.clear()
        self.answer(text)

    @work(thread=True, exclusive=True, exit_on_error=False, group="turn")
    def answer(self, text: str) -> None:
        """Run one turn in a thread; tokens, progress and the result come back as messages."""

        def token(piece: str) -> None:
            self.tokens_streamed += 1
            self.post_message(Token(piece))

        def progress(line: str) -> None:
            self.post_message(Progress(line))

        turn = self.session.ask(text, on_token=token, cancel=self._cancel, on_progress=progress)
        self.post_message(TurnDone(turn))

    async def on_token(self, message: Token) -> None:
        if self._pending is not None:
            self.tokens_shown += 1
            await self._pending.stream.write(message.text)

    def on_progress(self, message: Progress) -> None:
        if self._pending is not None:
            self._pending.progress.update(f"… {message.text} ({self.cfg.key_cancel} stops it)")

    async def on_turn_done(self, message: TurnDone) -> None:
        turn = message.turn
        pending, self._pending = self._pending, None
        conversation = self.query_one("#conversation", VerticalScroll)
        if pending is not None:
            await pending.stream.stop()
            await pending.progress.remove()
            # One full update at the end: the streamed draft is replaced by the checked
            # answer, so no block is left half-rendered and no last token is lost.
            pending.reply.remove_class("draft")
            await pending.reply.update(turn.answer)
        reply = pending.reply if pending is not None else None
        if turn.decision.action not in ("answer", "clarify", "help"):
            await conversation.mount(
                ToolCall(turn.decision.action, turn.decision.args, turn.answer), before=reply
            )
        for line in (turn.notice, turn.error):
            if line:
                await conversation.mount(Notice(line))
        for proposal in turn.proposals:
            self.query_one(ProposalsPanel).add(proposal.id, proposal.summary)
            self.notify(f"pending: {proposal.summary} ({self.cfg.key_approve} to review)")
        if self.history is not None:
            self.history.record(turn)
        if self.queued:
            await self._start(self.queued.popleft())

    def action_cancel(self) -> None:
        """Close a dialog; else stop the running tool or answer, and drop the queue."""
        if isinstance(self.screen, ModalScreen):
            self.screen.dismiss(False if isinstance(self.screen, ConfirmChange) else None)
            return
        dropped = len(self.queued)
        self.queued.clear()
        if self._pending is not None:
            self._cancel.set()
            self.notify("cancelling" + (f" ({dropped} queued dropped)" if dropped else ""))

    # -- approving changes ------------------------------------------------------------------

    def action_approve(self) -> None:
        """Show the dry run of the selected proposal, then ask yes or no (one at a time)."""
        if self._reviewing is not None or isinstance(self.screen, ModalScreen):
            self.notify("a change is being reviewed: answer it first")
            return
        ident = self.query_one(ProposalsPanel).selected()
        if ident is None or ident not in self.proposals:
            self.notify("no pending change")
            return
        self._reviewing = ident
        self.dry_run(self.proposals[ident])

    @work(thread=True, exit_on_error=False, group="agent")
    def dry_run(self, proposal: Proposal) -> None:
        """Ask what a proposal would do (nothing is applied)."""
        try:
            self.post_message(DryRun(proposal, self.session.dry_run(proposal)))
        except KassistError as exc:
            self.post_message(DryRun(proposal, None, exc.one_line()))

    async def on_dry_run(self, message: DryRun) -> None:
        proposal, verdict = message.proposal, message.verdict
        if verdict is None:
            self._reviewing = None
            await self._say(f"cannot review {proposal.summary}: {message.error}")
            return

        def decided(yes: bool | None) -> None:
            if verdict.ok and yes:
                self.apply(proposal)  # reviewed until the agent's answer arrives
            elif not verdict.ok:
                self.post_message(Decided(proposal, self.session.decline(proposal, verdict)))
            else:
                self.post_message(Decided(proposal, self.session.decline(proposal)))

        self.push_screen(ConfirmChange(proposal.summary, proposal.op, verdict), decided)

    @work(thread=True, exit_on_error=False, group="agent")
    def apply(self, proposal: Proposal) -> None:
        """Hand an approved proposal to the agent; the session records the outcome."""
        with contextlib.suppress(KassistError):  # recorded as an outcome ("unavailable")
            self.session.approve(proposal)
        outcome = self.session.outcome_of(proposal.id)
        if outcome is not None:
            self.post_message(Decided(proposal, outcome))

    async def on_decided(self, message: Decided) -> None:
        self._reviewing = None
        self.query_one(ProposalsPanel).drop(message.proposal.id)
        outcome = message.outcome
        if self.history is not None:
            self.history.record_outcome(outcome)
        await self._say(f"agent: {outcome.line()}" if outcome.verdict != "declined" else
                        f"declined: {outcome.summary}")  # fmt: skip
        self.notify(
            f"{outcome.verdict}: {outcome.summary}"[:80],
            severity="information" if outcome.ok or outcome.verdict == "declined" else "error",
        )

    async def _say(self, line: str) -> None:
        # A line in the conversation itself: readable in full, unlike a toast.
        conversation = self.query_one("#conversation", VerticalScroll)
        await conversation.mount(Notice(line))
        conversation.anchor()

    def action_reject(self) -> None:
        """Decline the selected proposal; nothing changes."""
        ident = self.query_one(ProposalsPanel).selected()
        if ident is None or ident not in self.proposals or ident == self._reviewing:
            return
        proposal = self.proposals[ident]
        self.post_message(Decided(proposal, self.session.decline(proposal)))

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
            if event.worker.group == "agent":
                self._reviewing = None
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
        """Write the conversation, with what became of every proposal, to Markdown."""
        title = f"kassist chat, {time.strftime('%Y-%m-%d %H:%M')}"
        path = Path(f"kassist-chat-{time.strftime('%Y%m%d-%H%M%S')}.md")
        try:
            path.write_text(turns_markdown(title, self.session.turns), encoding="utf-8")
        except OSError as exc:
            self.notify(f"not exported: {exc.strerror}: {path}", severity="error")
            return
        self.notify(f"exported to {path}")

    def action_help(self) -> None:
        """Show the keys and commands; the help key again (or Esc) closes them."""
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss(None)
        elif not isinstance(self.screen, ModalScreen):
            self.push_screen(HelpScreen(help_text(self.cfg)))
