"""The Textual chat: Pilot conversations, approving a real change, snapshots, a real tmux."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assistant.chat.session import ChatSession
from assistant.chat.tools import Context
from tests.agent_support import AgentProcess, NetNS, require_netns
from tests.conftest import DATA, ROOT, require, require_default_model
from tui.app import KassistApp
from tui.sources import Pressure, Sources
from tui.widgets.messages import AssistantMessage, Notice, ToolCall, UserMessage

FIXED = Sources(
    pressure=lambda: Pressure(0.5, {"cpu": 1.0, "memory": 0.0, "io": 2.5}),
    crashes=lambda store: [("8fea0e445bc8c519", "KASAN: use-after-free Read in ip6_send_skb", 3)],
    agent=lambda socket: "up, 0 managed key(s)",
    live=False,
)


async def _wait_idle(app: KassistApp, pilot: object, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    await asyncio.sleep(0.05)
    while app.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
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
    session = ChatSession(backend, Context(store=str(store)))
    # answer from given facts: the model writes, and every token it wrote reaches the screen
    session_facts = "[Documentation/admin-guide/sysctl/vm.rst#swappiness] swappiness: ..."
    from assistant.chat import session as session_mod

    original = session_mod._knowledge_facts
    session_mod._knowledge_facts = lambda q: session_facts  # no knowledge base needed here
    try:

        async def run() -> None:
            app = KassistApp(session, sources=FIXED)
            async with app.run_test(size=(140, 45)) as pilot:
                await _ask(app, pilot, "what is a page cache?")
                assert app.tokens_streamed > 0
                assert app.tokens_shown == app.tokens_streamed
                reply = list(app.query(AssistantMessage))[-1]
                assert reply.source and not reply.has_class("draft")

        asyncio.run(run())
    finally:
        session_mod._knowledge_facts = original


def test_approve_and_reject_a_real_change(tmp_path: Path) -> None:
    require_netns()
    netns = NetNS()
    agent = AgentProcess(tmp_path, netns).start()
    try:
        before = netns.read("net.core.somaxconn")
        doubled = str(int(before) * 2)

        async def run() -> None:
            session = ChatSession(None, Context(socket=str(agent.socket)))
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
                deadline = time.monotonic() + 30
                while app.screen.__class__.__name__ != "ConfirmChange":
                    assert time.monotonic() < deadline
                    await pilot.pause(0.05)
                assert netns.read("net.core.somaxconn") == before  # nothing before "y"
                await pilot.press("y")
                while app.proposals and time.monotonic() < deadline:
                    await pilot.pause(0.05)
                await pilot.pause(0.2)
                assert netns.read("net.core.somaxconn") == doubled
                assert any("verified" in str(n.render()) for n in app.query(Notice))

        asyncio.run(run())
    finally:
        agent.stop()
        netns.close()


def _snap_app(store: Path) -> KassistApp:
    return KassistApp(ChatSession(None, Context(store=str(store))), sources=FIXED)


def test_snapshot_main_screen(snap_compare: object, store: Path) -> None:
    async def before(pilot: object) -> None:
        app = pilot.app  # type: ignore[attr-defined]
        await _ask(app, pilot, "hello")

    assert snap_compare(_snap_app(store), terminal_size=(120, 36), run_before=before)  # type: ignore[operator]


def test_snapshot_help_screen(snap_compare: object, store: Path) -> None:
    assert snap_compare(_snap_app(store), press=["f1"], terminal_size=(120, 36))  # type: ignore[operator]


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

        deadline = time.monotonic() + 60
        while "pending changes" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.2)
        subprocess.run(["tmux", "send-keys", "-t", name, "/stats", "Enter"], check=True)
        while "memory:" not in screen():
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
