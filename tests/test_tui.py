"""The Textual chat: Pilot conversations, approving a real change, snapshots, a real tmux."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Static

from assistant.chat.session import ChatSession
from assistant.chat.tools import Context
from tests.agent_support import AgentProcess, NetNS, require_netns
from tests.conftest import (
    DATA,
    HANG_S,
    ROOT,
    hang_deadline,
    require,
    require_default_model,
    require_knowledge_base,
)
from tui.app import KassistApp
from tui.screens.confirm import ConfirmChange
from tui.screens.help import HelpScreen
from tui.sources import Pressure, Sources
from tui.widgets.messages import AssistantMessage, Notice, ToolCall, UserMessage

FIXED = Sources(
    pressure=lambda: Pressure(0.5, {"cpu": 1.0, "memory": 0.0, "io": 2.5}),
    crashes=lambda store: [("8fea0e445bc8c519", "KASAN: use-after-free Read in ip6_send_skb", 3)],
    agent=lambda socket: "up, 0 managed key(s)",
    live=False,
)


async def _wait_idle(app: KassistApp, pilot: object) -> None:
    await asyncio.sleep(0.05)
    await _until(pilot, lambda: not app.busy, "the app is idle again")
    await pilot.pause()  # type: ignore[attr-defined]


async def _ask(app: KassistApp, pilot: object, text: str) -> None:
    app.query_one("#prompt").value = text  # type: ignore[attr-defined]
    await pilot.press("enter")  # type: ignore[attr-defined]
    await _wait_idle(app, pilot)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    from assistant.triage import triage_path
    from assistant.triage.store import CrashStore

    path = tmp_path / "crashes.db"
    with CrashStore(path) as db:
        db.record(triage_path(str(DATA / "kasan-uaf-ip6_send_skb.log")).crashes, "test")
    return path


def test_a_conversation_with_the_none_backend(store: Path) -> None:
    async def run() -> None:
        app = KassistApp(ChatSession(None, Context(store=str(store))), sources=FIXED)
        async with app.run_test(size=(140, 45)) as pilot:
            await _ask(app, pilot, "any new crashes?")
            replies = list(app.query(AssistantMessage))
            assert "ip6_send_skb" in replies[-1].source
            assert [t.tool_name for t in app.query(ToolCall)] == ["crashes"]
            assert len(app.query(UserMessage)) == 1
            await _ask(app, pilot, "/triage /no/such/file.log")
            assert any(
                "no such" in str(n.render()).lower() or "cannot" in str(n.render())
                for n in app.query(Notice)
            )

    asyncio.run(run())


def test_the_bundled_model_streams_every_token(store: Path) -> None:
    require_default_model()
    from assistant.config import load_config
    from assistant.llm import make_backend

    backend = make_backend(
        load_config({"llm": {"backend": "llama_cpp", "log": False, "max_tokens": 40}}).llm
    )
    from assistant.chat.answer import GroundedAnswerer

    require_knowledge_base()
    # the model writes its answer from the documentation: every token of its draft reaches
    # the screen, and the checked, cited answer replaces the draft
    answerer = GroundedAnswerer(backend, mode="write")
    session = ChatSession(backend, Context(store=str(store)), answerer=answerer)

    async def run() -> None:
        app = KassistApp(session, sources=FIXED)
        async with app.run_test(size=(140, 45)) as pilot:
            await _ask(app, pilot, "what is a page cache?")
            assert app.tokens_streamed > 0
            assert app.tokens_shown == app.tokens_streamed
            reply = list(app.query(AssistantMessage))[-1]
            assert reply.source and not reply.has_class("draft")

    asyncio.run(run())


@pytest.fixture
def agent_in_netns(tmp_path: Path) -> Iterator[tuple[NetNS, ChatSession]]:
    # A real agent in a private network namespace, and a chat session that talks to it.
    require_netns()
    netns = NetNS()
    agent = AgentProcess(tmp_path, netns).start()
    try:
        yield netns, ChatSession(None, Context(socket=str(agent.socket)))
    finally:
        agent.stop()
        netns.close()


def test_approve_and_reject_a_real_change(agent_in_netns: tuple[NetNS, ChatSession]) -> None:
    netns, session = agent_in_netns
    before = netns.read("net.core.somaxconn")
    doubled = str(int(before) * 2)

    async def run() -> None:
        app = KassistApp(session, sources=FIXED)
        async with app.run_test(size=(140, 45)) as pilot:
            await _ask(app, pilot, f"change net.core.somaxconn to {doubled}")
            assert len(app.proposals) == 1
            await _ask(app, pilot, "set net.core.somaxconn to 1")  # a second one, rejected
            assert len(app.proposals) == 2
            app.query_one("#proposal-list").index = 1  # type: ignore[attr-defined]
            await pilot.press(app.cfg.key_reject)
            assert len(app.proposals) == 1
            assert netns.read("net.core.somaxconn") == before
            await pilot.press(app.cfg.key_approve)
            await _until(pilot, lambda: isinstance(app.screen, ConfirmChange), "the dialog")
            assert netns.read("net.core.somaxconn") == before  # nothing before "y"
            await pilot.press("y")
            await _until(pilot, lambda: not app.proposals, "the apply is decided")
            await pilot.pause(0.2)
            assert netns.read("net.core.somaxconn") == doubled
            assert any("verified" in str(n.render()) for n in app.query(Notice))

    asyncio.run(run())


async def _until(pilot: object, done: Callable[[], bool], what: str) -> None:
    # Wait for a condition of the app (never a timed assertion: the bound only ends a hang).
    deadline = hang_deadline()
    while not done():
        assert time.monotonic() < deadline, f"{what}: still not true after {HANG_S:g} s"
        await pilot.pause(0.05)  # type: ignore[attr-defined]


def _notices(app: KassistApp) -> list[str]:
    return [str(n.render()) for n in app.query(Notice)]


def test_esc_cancels_a_tool_that_shows_its_progress(tmp_path: Path) -> None:
    async def run() -> None:
        app = KassistApp(ChatSession(None, Context(store=str(tmp_path / "c.db"))), sources=FIXED)
        async with app.run_test(size=(140, 45)) as pilot:
            app.query_one("#prompt").value = "/disks"  # type: ignore[attr-defined]
            await pilot.press("enter")

            def progress() -> list[str]:
                return [str(s.render()) for s in app.query(".progress")]

            await _until(pilot, lambda: any("watching the drives" in p for p in progress()),
                         "the disks tool's progress")  # fmt: skip
            await pilot.press(app.cfg.key_cancel)
            await _wait_idle(app, pilot)
            turn = app.session.turns[-1]
            assert turn.notice.startswith("cancelled") and "was cancelled" in turn.answer
            assert any("cancelled" in n for n in _notices(app)) and not progress()

    asyncio.run(run())


def test_messages_typed_while_busy_are_queued_in_order(tmp_path: Path) -> None:
    async def run() -> None:
        app = KassistApp(ChatSession(None, Context(store=str(tmp_path / "c.db"))), sources=FIXED)
        async with app.run_test(size=(140, 45)) as pilot:
            prompt = app.query_one("#prompt")
            for text in ("/top", "/help", "/stats"):
                prompt.value = text  # type: ignore[attr-defined]
                await pilot.press("enter")
                assert prompt.value == ""  # type: ignore[attr-defined]
            await _until(pilot, lambda: len(app.session.turns) == 3 and not app.busy, "3 turns")
            assert [t.question for t in app.session.turns] == ["/top", "/help", "/stats"]
            assert [str(m.render()) for m in app.query(UserMessage)] == ["/top", "/help", "/stats"]

    asyncio.run(run())


def test_keys_arriving_together_stay_separate_messages(tmp_path: Path) -> None:
    # As the terminal driver posts them: a burst (a paste, a busy machine), Enter inside it.
    from textual import events

    async def run() -> None:
        app = KassistApp(ChatSession(None, Context(store=str(tmp_path / "c.db"))), sources=FIXED)
        async with app.run_test(size=(140, 45)) as pilot:
            await pilot.pause()
            for text in ("/help", "/stats"):
                for ch in text:
                    app.post_message(events.Key(ch, ch))
                app.post_message(events.Key("enter", "\r"))
            await _until(pilot, lambda: len(app.session.turns) == 2 and not app.busy, "2 turns")
            assert [t.question for t in app.session.turns] == ["/help", "/stats"]
            assert app.query_one("#prompt").value == ""  # type: ignore[attr-defined]

    asyncio.run(run())


def test_help_closes_on_escape_and_its_key_does_not_stack(store: Path) -> None:
    async def run() -> None:
        app = _snap_app(store)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press(app.cfg.key_help)
            assert isinstance(app.screen, HelpScreen) and len(app.screen_stack) == 2
            await pilot.press(app.cfg.key_help)  # the same key closes it: never a second one
            assert not isinstance(app.screen, HelpScreen) and len(app.screen_stack) == 1
            await pilot.press(app.cfg.key_help)
            await pilot.press("escape")
            assert len(app.screen_stack) == 1

    asyncio.run(run())


def test_a_narrow_terminal_gives_the_conversation_the_width(store: Path) -> None:
    async def run(width: int) -> bool:
        async with _snap_app(store).run_test(size=(width, 30)) as pilot:
            await pilot.pause()
            return bool(pilot.app.query_one("#side").display)

    assert asyncio.run(run(40)) is False
    assert asyncio.run(run(120)) is True


def test_angle_brackets_in_an_answer_are_shown() -> None:
    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield AssistantMessage("read /proc/<pid>/oom_score, or `cat /proc/<pid>/stat`")

    async def run() -> list[str]:
        app = One()
        async with app.run_test() as pilot:
            await pilot.pause()
            return [str(getattr(b.render(), "plain", "")) for b in app.query("MarkdownBlock")]

    shown = " ".join(asyncio.run(run()))
    assert "/proc/<pid>/oom_score" in shown and "/proc//" not in shown


async def _review(app: KassistApp, pilot: object) -> ConfirmChange:
    # Open the pending change's dialog; a second ctrl+o never stacks another.
    await pilot.press(app.cfg.key_approve)  # type: ignore[attr-defined]
    await _until(pilot, lambda: isinstance(app.screen, ConfirmChange), "the dialog")
    await pilot.press(app.cfg.key_approve)  # type: ignore[attr-defined]
    await pilot.pause(0.2)  # type: ignore[attr-defined]
    assert len(app.screen_stack) == 2
    assert isinstance(app.screen, ConfirmChange)
    return app.screen


async def _refused(app: KassistApp, pilot: object) -> None:
    # Refused by the agent's dry run: nothing to approve, and it leaves pending.
    await _ask(app, pilot, "set kernel.kptr_restrict to 0")
    dialog = await _review(app, pilot)
    assert not dialog.query("#yes") and dialog.query_one("#no")
    text = " ".join(str(s.render()) for s in dialog.query(Static))
    assert "the agent refuses it" in text
    await pilot.press("y")  # type: ignore[attr-defined]  # "yes" to a refusal only closes it
    await _until(pilot, lambda: not app.proposals, "the refusal is decided")
    assert any("refused" in n and "kernel.kptr_restrict" in n for n in _notices(app))


async def _approved(app: KassistApp, pilot: object, netns: NetNS, before: str, new: str) -> None:
    # Approved: applied, verified, and it leaves pending.
    await _ask(app, pilot, f"change net.core.somaxconn to {new}")
    await _review(app, pilot)
    assert netns.read("net.core.somaxconn") == before  # nothing before "y"
    await pilot.press("y")  # type: ignore[attr-defined]
    await _until(pilot, lambda: not app.proposals, "the apply is decided")
    assert netns.read("net.core.somaxconn") == new
    assert any("verified" in n for n in _notices(app))


async def _rolled_back(app: KassistApp, pilot: object, netns: NetNS, before: str, new: str) -> None:
    # The rollback dialog shows what each key gets back.
    await _ask(app, pilot, "roll back the last change")
    dialog = await _review(app, pilot)
    text = " ".join(str(s.render()) for s in dialog.query(Static))
    assert f"net.core.somaxconn  {new} -> {before}" in text
    await pilot.press("y")  # type: ignore[attr-defined]
    await _until(pilot, lambda: not app.proposals, "the rollback is decided")
    assert netns.read("net.core.somaxconn") == before


def test_approving_refusals_rollbacks_and_the_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_in_netns: tuple[NetNS, ChatSession]
) -> None:
    netns, session = agent_in_netns
    monkeypatch.chdir(tmp_path)
    before = netns.read("net.core.somaxconn")
    doubled = str(int(before) * 2)

    async def run() -> None:
        app = KassistApp(session, sources=FIXED)
        async with app.run_test(size=(140, 45)) as pilot:
            await _refused(app, pilot)
            await _approved(app, pilot, netns, before, doubled)
            await _rolled_back(app, pilot, netns, before, doubled)
            # the export is a record of what happened
            await pilot.press(app.cfg.key_export)
            [exported] = list(tmp_path.glob("kassist-chat-*.md"))
            md = exported.read_text()
            assert md.count("**Outcome:**") == 3
            assert "refused (rejected)" in md and ": verified (done)" in md
            assert ": rolled_back (done)" in md

    asyncio.run(run())


def _snap_app(store: Path) -> KassistApp:
    return KassistApp(ChatSession(None, Context(store=str(store))), sources=FIXED)


def test_snapshot_main_screen(snap_compare: object, store: Path) -> None:
    async def before(pilot: object) -> None:
        app = pilot.app  # type: ignore[attr-defined]
        app.query_one("#prompt").cursor_blink = False  # a blink's phase is timing, not layout
        await _ask(app, pilot, "hello")

    assert snap_compare(_snap_app(store), terminal_size=(120, 36), run_before=before)  # type: ignore[operator]


def test_snapshot_help_screen(snap_compare: object, store: Path) -> None:
    async def before(pilot: object) -> None:
        pilot.app.query_one("#prompt").cursor_blink = False  # type: ignore[attr-defined]

    assert snap_compare(_snap_app(store), press=["f1"], terminal_size=(120, 36), run_before=before)  # type: ignore[operator]


def test_end_to_end_in_a_real_terminal(tmp_path: Path) -> None:
    require(shutil.which("tmux") is not None, "needs tmux")
    name = f"kassist-chat-e2e-{os.getpid()}"
    env = f"PYTHONPATH={ROOT} XDG_STATE_HOME={tmp_path} TERM=xterm-256color"
    cmd = f"cd {ROOT} && env {env} {sys.executable} -m assistant chat --no-llm --no-history"
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", name, "-x", "140", "-y", "40", cmd], check=True
    )
    try:

        def screen() -> str:
            return subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", name],
                capture_output=True,
                text=True,
                check=False,
            ).stdout

        deadline = hang_deadline()
        while "pending changes" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.2)
        subprocess.run(["tmux", "send-keys", "-t", name, "/stats", "Enter"], check=True)
        while "memory     total" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.2)
        subprocess.run(["tmux", "send-keys", "-t", name, "C-q"], check=True)
        while (
            subprocess.run(
                ["tmux", "has-session", "-t", name], capture_output=True, check=False
            ).returncode
            == 0
        ):
            assert time.monotonic() < deadline, "the chat did not quit on ctrl+q"
            time.sleep(0.2)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], capture_output=True, check=False)
