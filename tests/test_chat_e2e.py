"""A new user's first ten minutes with ``kassist chat``, in a real terminal (tmux).

The chat runs as a user starts it, against a real agent in a private network namespace,
with an empty crash store. The test types what a new operator asks first and checks each
answer's figures against /proc and against the command line.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.agent_support import AgentProcess, NetNS, require_netns
from tests.chat_support import cpus, crashes_by_cli, kernel_dmesg, memory_total_line
from tests.conftest import ROOT, require, run_kassist, wait_until

KEY = "net.core.somaxconn"


class Terminal:
    """A tmux session running one command, on a tmux server of its own (no one else's
    options or clients resize it): type into it, read its screen."""

    def __init__(self, name: str, command: str, width: int = 170, height: int = 110) -> None:
        self.name = name
        self.tmux = ["tmux", "-L", name, "-f", "/dev/null"]
        subprocess.run(
            [*self.tmux, "new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
             command],
            check=True,
        )  # fmt: skip

    def screen(self) -> str:
        """Return what the terminal shows now."""
        return subprocess.run(
            [*self.tmux, "capture-pane", "-p", "-t", self.name],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip

    def keys(self, *keys: str) -> None:
        """Send keys (tmux names: Enter, Escape, C-o, F1...)."""
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, *keys], check=True)

    def type(self, text: str) -> None:
        """Type a line literally and press Enter."""
        subprocess.run([*self.tmux, "send-keys", "-t", self.name, "-l", text], check=True)
        self.keys("Enter")

    def wait(self, done: Callable[[str], bool], what: str) -> str:
        """Wait until the screen satisfies ``done`` and return it (a hang guard only)."""
        # a 1-tuple, so that a screen that satisfies ``done`` while empty still ends the wait
        found = wait_until(lambda: (s,) if done(s := self.screen()) else None,
                           f"never shown: {what}", poll_s=0.2, context=self.screen)  # fmt: skip
        return found[0]

    def alive(self) -> bool:
        """Tell whether the session (the chat) still runs."""
        return (
            subprocess.run(
                [*self.tmux, "has-session", "-t", self.name], capture_output=True, check=False
            ).returncode
            == 0
        )

    def close(self) -> None:
        """Kill the session and its server."""
        subprocess.run([*self.tmux, "kill-server"], capture_output=True, check=False)


def _first_questions(term: Terminal) -> None:
    """Steps 1 to 5: the help, the system's health, the top tasks, crashes, a key."""
    # 1. what can I ask? /help is a command, not a documentation search; and two lines
    # typed at once (Enter inside a burst of keys) stay two messages
    term.keys("-l", "/stats")
    term.keys("Enter")
    term.keys("-l", "/help")
    term.keys("Enter")
    shown = term.wait(lambda s: "/health:" in s and "/rollback:" in s, "the help")
    assert "/stats/help" not in shown and "tool stats {}" in shown

    # 2. how is the system doing? a verdict, with /proc's figures
    term.type("how is the system doing?")
    shown = term.wait(lambda s: "pending    no change waits" in s, "the verdict")
    assert re.search(r"(Healthy|Needs attention)", shown), shown
    assert memory_total_line() in shown
    assert f"({cpus()} CPUs:" in shown
    assert "agent      up (pid" in shown
    cli = run_kassist(["probe", "stats"]).stdout
    assert memory_total_line() in cli  # the same renderer

    # 3. what is using the most CPU?
    term.type("what is using the most CPU?")
    term.wait(lambda s: "processes by CPU over" in s.rsplit("the most CPU?", 1)[-1],
              "the top tasks")  # fmt: skip

    # 4. any kernel crashes recently? the store is empty: the kernel log is read, and said so
    term.type("any kernel crashes recently?")
    shown = term.wait(lambda s: "I read the kernel log now" in s, "the crashes answer")
    found = re.findall(r"kernel log (\d+) crash", shown)
    assert found and int(found[-1]) == crashes_by_cli(kernel_dmesg())

    # 5. should I raise somaxconn? the answer is about that key, with its value now
    term.type("should I raise somaxconn?")
    now = " ".join(Path("/proc/sys/net/core/somaxconn").read_text().split())
    term.wait(lambda s: f"{KEY} is {now} now" in s, "the key's answer")


def _change_and_roll_back(term: Terminal, netns: NetNS, start: str) -> None:
    """Steps 6 and 7: a change proposed, reviewed, approved, verified; then rolled back."""
    # 6. make a change: proposed, reviewed with its dry run, approved, verified
    target = str(int(start) * 2)
    term.type(f"set {KEY} to {target}")
    term.wait(lambda s: f"Proposed: set {KEY} to {target}" in s, "the proposal")
    term.keys("C-o")
    term.wait(lambda s: "Apply this change through the agent?" in s
              and f"{start} -> {target}" in s, "the dry run")  # fmt: skip
    assert netns.read(KEY) == start
    term.keys("y")
    term.wait(lambda s: ": verified (done)" in s, "the agent's verdict")
    assert netns.read(KEY) == target

    # 7. roll back the last change: a concrete changeset, its dry run, and it works
    term.type("roll back the last change")
    term.wait(lambda s: "Proposed: roll back changeset" in s, "the rollback proposal")
    term.keys("C-o")
    term.wait(lambda s: "Roll this back through the agent?" in s
              and f"{target} -> {start}" in s, "the rollback's dry run")  # fmt: skip
    term.keys("y")
    term.wait(lambda s: ": rolled_back (done)" in s, "the rollback's verdict")
    assert netns.read(KEY) == start


def _export_and_quit(term: Terminal, tmp_path: Path) -> None:
    """Step 8: the help closes on Esc; the conversation exports, and the history keeps
    it, outcomes included."""
    # 8. the help closes on Esc, and the conversation exports with its outcomes
    term.keys("F1")
    term.wait(lambda s: "this help (press it again" in s, "the help screen")
    term.keys("Escape")
    term.wait(lambda s: "this help (press it again" not in s, "the help closed")
    term.keys("C-e")
    exported = wait_until(lambda: list(tmp_path.glob("kassist-chat-*.md")),
                          "the conversation exported", poll_s=0.2, context=term.screen)  # fmt: skip
    md = exported[0].read_text()
    assert ": verified (done)" in md and ": rolled_back (done)" in md
    assert memory_total_line() in md

    term.keys("C-q")
    wait_until(lambda: not term.alive(), "the chat quits on ctrl+q", poll_s=0.2)
    # the history kept the same record, outcomes included
    from assistant.chat.history import ChatHistory

    with ChatHistory(tmp_path / "state" / "kassist" / "chat.db") as history:
        [conversation] = history.conversations()
        kept = history.markdown(conversation.id)
    assert ": verified (done)" in kept and ": rolled_back (done)" in kept


def test_a_new_user_s_first_ten_minutes(tmp_path: Path) -> None:
    require(shutil.which("tmux") is not None, "needs tmux")
    require(os.access("/dev/kmsg", os.R_OK), "needs read access to /dev/kmsg")
    require_netns()
    netns = NetNS()
    agent = AgentProcess(tmp_path, netns).start()
    name = f"kassist-chat-first-ten-{os.getpid()}"
    env = f"PYTHONPATH={ROOT} XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color"
    chat = (
        f"{sys.executable} -m assistant chat --no-llm --socket {agent.socket}"
        f" --store {tmp_path / 'crashes.db'}"
    )
    # COLUMNS and LINES (set under pytest) would pin the chat to 80x24 in a larger terminal
    term = Terminal(name, f"cd {tmp_path} && env -u COLUMNS -u LINES {env} {chat}")
    try:
        term.wait(lambda s: "pending changes" in s, "the chat's panels")
        start = netns.read(KEY)

        _first_questions(term)
        _change_and_roll_back(term, netns, start)
        _export_and_quit(term, tmp_path)
    finally:
        term.close()
        agent.stop()
        netns.close()
