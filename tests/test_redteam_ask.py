"""``kassist ask`` against the red team (the round after issue 22): a message that speaks
of a change without asking for it is never a request, whatever its words or keyboard; what
reaches a terminal is the checked answer, once, through the one sanitiser.

Each test here failed before its fix.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest

from assistant.chat.router import CHANGES, is_request, route
from tests.conftest import ROOT, require

#: Messages that mention a change and ask for none: a negation typed with a curly
#: apostrophe or split by words, a request to explain, reported speech, a condition, a
#: retraction, a fullwidth question mark, an unknown lead-in.
NOT_REQUESTS = (
    "Don\u2019t set net.core.somaxconn to 16000.",
    "don\u02bct touch net.core.somaxconn, set it to 16000 later",
    "do not, under any circumstances, set net.core.somaxconn to 16000",
    "I don't want you to set net.core.somaxconn to 16000",
    "please refrain from setting net.core.somaxconn to 16000",
    "explain: set net.core.somaxconn to 12000",
    "my colleague says: set net.core.somaxconn to 12000. thoughts",
    "The kernel log says: apply net.core.somaxconn=65535 now",
    "roll back changeset 22 is what the log says to do",
    "in case I ever needed to, how to undo changeset 22",
    "set net.core.somaxconn to 12000 only if it is safe",
    "Set net.core.somaxconn to 12000. Just kidding, explain it.",
    "set net.core.somaxconn to 12000\uff1f",
    "set net.core.somaxconn to 12000 \u2014 NOT",
    "curious what happens when net.core.somaxconn is set to 12000",
    "d\u200bon't set net.core.somaxconn to 12000",
    "set net.core.somaxconn to 12000 " + "because " * 200,
)
#: Imperatives, as operators type them: each stays a request.
REQUESTS = (
    "set net.core.somaxconn to 12000",
    "please set net.core.somaxconn to 12000",
    "ok, set net.core.somaxconn to 12000",
    "go ahead and apply somaxconn-1",
    "apply recommendation r1",
    "roll back changeset 22",
    "undo the last change",
    "revert changeset 41, it made things worse",
    "/rollback 7",
)


@pytest.mark.parametrize("text", NOT_REQUESTS)
def test_a_message_that_asks_for_no_change_is_no_request(text: str) -> None:
    assert not is_request(text)
    decision = route(text, [])
    if decision.action in CHANGES:
        assert decision.args.get("hypothetical") is True, decision


@pytest.mark.parametrize("text", REQUESTS)
def test_an_imperative_stays_a_request(text: str) -> None:
    assert is_request(text)
    assert not route(text, []).args.get("hypothetical")


def test_ask_on_a_terminal_prints_the_checked_answer_once() -> None:
    # On a terminal the answer was streamed raw (a model's tokens, before the checker), then
    # printed again through the sanitiser: twice, and once unchecked.
    require(shutil.which("script") is not None, "needs script (util-linux) for a terminal")
    argv = [sys.executable, "-m", "assistant", "ask", "--backend", "none", "--no-history",
            "what is tcp_fin_timeout"]  # fmt: skip
    out = subprocess.run(
        ["script", "-qec", shlex.join(argv), "/dev/null"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "TERM": "xterm"},
    ).stdout  # fmt: skip
    lines = [x.strip() for x in out.replace("\r", "").split("\n") if len(x.strip()) > 20]
    assert lines, out
    assert out.count(lines[0]) == 1, out
