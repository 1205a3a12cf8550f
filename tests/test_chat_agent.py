"""The chat and ``kassist ask`` against a real agent in a private network namespace.

Only ``net.*`` keys are written (they are private to the namespace); every test reads the
kernel's value there before and after.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from actions.client import AgentClient, try_history, try_status
from actions.errors import AgentUnavailable
from assistant.chat.session import ChatSession
from assistant.chat.tools import Context
from tests.agent_support import AgentProcess, NetNS, require_netns
from tests.conftest import HANG_S, run_kassist

KEY = "net.core.somaxconn"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[AgentProcess, NetNS]]:
    require_netns()
    netns = NetNS()
    proc = AgentProcess(tmp_path, netns)
    try:
        proc.start()
        yield proc, netns
    finally:
        proc.stop()
        netns.close()


def _session(agent: AgentProcess) -> ChatSession:
    return ChatSession(None, Context(socket=str(agent.socket), store=str(agent.tmp / "c.db")))


def test_roll_back_the_last_change_names_the_changeset_and_works(
    agent: tuple[AgentProcess, NetNS],
) -> None:
    proc, netns = agent
    session = _session(proc)
    before = netns.read(KEY)
    applied = session.ask(f"set {KEY} to {int(before) * 2}")
    done = session.approve(applied.proposals[0])
    assert done.ok and done.changeset is not None and netns.read(KEY) == str(int(before) * 2)
    back = session.ask("roll back the last change")
    assert back.decision.action == "rollback"
    [proposal] = back.proposals
    assert proposal.changeset == done.changeset.id  # a concrete id the person approves
    assert str(done.changeset.id) in proposal.summary and KEY in proposal.summary
    preview = session.dry_run(proposal)  # what the dialog shows: the value it gets back
    assert preview.ok and preview.changeset is not None
    assert [(c.target, c.new) for c in preview.changeset.changes] == [(KEY, before)]
    assert netns.read(KEY) == str(int(before) * 2)  # a dry run changes nothing
    undone = session.approve(proposal)
    assert undone.ok and undone.verdict == "rolled_back", undone
    assert netns.read(KEY) == before
    assert session.pending == [] and back.outcomes[0].verdict == "rolled_back"
    # nothing is left to roll back: no proposal, and it says so
    again = session.ask("roll back the last change")
    assert again.proposals == [] and "no change that can be rolled back" in again.answer


def _doubled(agent: tuple[AgentProcess, NetNS]) -> tuple[ChatSession, int, str]:
    # A session that had the agent double KEY: the session, the change's changeset id and
    # KEY's value before.
    proc, netns = agent
    session = _session(proc)
    before = netns.read(KEY)
    done = session.approve(session.ask(f"set {KEY} to {int(before) * 2}").proposals[0])
    assert done.changeset is not None
    return session, done.changeset.id, before


def test_a_question_about_undoing_only_shows_the_plan(agent: tuple[AgentProcess, NetNS]) -> None:
    _proc, netns = agent
    session, cs, before = _doubled(agent)
    turn = session.ask(f"how would I undo changeset {cs} if I ever needed to?")
    assert turn.decision.action == "rollback" and turn.proposals == []
    assert "Nothing was changed" in turn.answer and f"roll back changeset {cs}" in turn.answer
    assert netns.read(KEY) == str(int(before) * 2)


def test_apply_of_an_unknown_id_is_refused_and_runs_nothing(
    agent: tuple[AgentProcess, NetNS],
) -> None:
    proc, _netns = agent
    session = _session(proc)
    turn = session.ask("/apply listen-overflow:net.core.somaxconn")
    assert turn.error and "no recommendation" in turn.error and turn.proposals == []
    assert session.memory.tune == {}  # no tune run was started behind the person's back


def test_each_conversation_keeps_its_own_tune_run(agent: tuple[AgentProcess, NetNS]) -> None:
    proc, _netns = agent
    first, second = _session(proc), _session(proc)
    first.memory.tune["scenario:net.core.somaxconn"] = {
        "id": "scenario:net.core.somaxconn", "kind": "sysctl", "target": KEY,
        "value": 8192, "rationale": "x", "evidence": ["y"], "source": "rules",
    }  # fmt: skip
    assert first.ask("/apply scenario:net.core.somaxconn").proposals
    refused = second.ask("/apply scenario:net.core.somaxconn")
    assert refused.proposals == [] and "no recommendation" in refused.error


def test_the_docs_tool_asks_the_session_s_agent(agent: tuple[AgentProcess, NetNS]) -> None:
    session, cs, _before = _doubled(agent)
    page = session.ask(f"/docs {KEY}").answer
    assert f"changeset {cs} (verified" in page, page


def test_readings_are_typed_and_never_raise(
    agent: tuple[AgentProcess, NetNS], tmp_path: Path
) -> None:
    proc, _netns = agent
    up = try_status(proc.socket)
    assert up.reachable and up.status is not None and "up (pid" in up.line()
    assert try_history(proc.socket).changesets == []
    down = try_status(tmp_path / "none.sock")
    assert not down.reachable and "no agent socket" in down.error
    assert try_history(tmp_path / "none.sock").changesets is None


def test_a_broken_pipe_while_sending_is_agent_unavailable(
    agent: tuple[AgentProcess, NetNS],
) -> None:
    proc, _netns = agent
    huge = [{"id": f"r{i}", "kind": "sysctl", "target": KEY, "value": 4096, "source": "rules",
             "rationale": "x" * 4000} for i in range(64)]  # fmt: skip
    with pytest.raises(AgentUnavailable), AgentClient(proc.socket, timeout=HANG_S) as client:
        client.validate(huge)  # far over the agent's 64 KiB: it closes mid-send


def test_a_peer_that_closes_mid_send_is_agent_unavailable(tmp_path: Path) -> None:
    # A listener that reads ten bytes and hangs up: sendall meets EPIPE.
    path = tmp_path / "closing.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(10)
        conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with pytest.raises(AgentUnavailable), AgentClient(path, timeout=HANG_S) as client:
            client.send("validate", recommendations=["x" * (4 << 20)])
    finally:
        thread.join(10)
        server.close()


# -- kassist ask --yes: only an imperative acts (issue 22, item 16) --------------------------


def _ask(agent: AgentProcess, *words: str) -> tuple[int, dict[str, object]]:
    proc = run_kassist(["ask", "--no-llm", "--no-history", "--yes", "--format", "json",
                        "--socket", str(agent.socket), *words])  # fmt: skip
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


NOT_REQUESTS = (
    "what would happen if I set net.core.somaxconn to 12000?",
    "do NOT set net.core.somaxconn to 16000, just tell me what it does",
    "is it safe to change net.ipv4.tcp_fin_timeout to 15? don't apply anything",
    # the red team's round: other keyboards, other words, reported speech, a condition
    "Don\u2019t set net.core.somaxconn to 16000.",
    "I don't want you to set net.core.somaxconn to 16000",
    "explain: set net.core.somaxconn to 12000",
    "my colleague says: set net.core.somaxconn to 12000",
    "Set net.core.somaxconn to 12000. Just kidding, explain it.",
    "set net.ipv4.tcp_fin_timeout to 15 if nothing else needs it",
)


def test_ask_yes_never_acts_on_a_question_or_a_negation(agent: tuple[AgentProcess, NetNS]) -> None:
    proc, netns = agent
    values = {k: netns.read(k) for k in (KEY, "net.ipv4.tcp_fin_timeout")}
    for question in NOT_REQUESTS:
        code, out = _ask(proc, question)
        assert code == 0 and out["proposed"] == [] and out["outcomes"] == [], out
        assert out["args"]["hypothetical"] is True  # type: ignore[index]
        dry = out["data"]["dry_run"]  # type: ignore[index]
        assert dry["completion"] is not None, dry  # it was dry-run by the agent
        assert {k: netns.read(k) for k in values} == values
    assert try_history(proc.socket).changesets == []
    # an imperative is applied; the undo question afterwards only shows the plan
    code, out = _ask(proc, f"set {KEY} to {int(values[KEY]) * 2}")
    assert code == 0 and out["outcomes"][0]["verdict"] == "verified", out  # type: ignore[index]
    cs = out["outcomes"][0]["changeset"]  # type: ignore[index]
    code, out = _ask(proc, f"how would I undo changeset {cs} if I ever needed to?")
    assert code == 0 and out["proposed"] == [] and out["outcomes"] == []
    assert netns.read(KEY) == str(int(values[KEY]) * 2)
    assert [c.state for c in try_history(proc.socket).changesets or []] == ["verified"]


def test_ask_yes_still_refuses_what_policy_refuses(agent: tuple[AgentProcess, NetNS]) -> None:
    proc, _netns = agent
    code, out = _ask(proc, "set kernel.kptr_restrict to 0")
    assert code == 3 and out["outcomes"][0]["ok"] is False  # type: ignore[index]
    text = run_kassist(["ask", "--no-llm", "--no-history", "--yes", "--socket",
                        str(proc.socket), "set kernel.kptr_restrict to 0"])  # fmt: skip
    assert "approve with --yes" not in text.stdout and "approved:" in text.stdout
    assert "agent: set kernel.kptr_restrict to 0: rejected" in text.stdout, text.stdout


def test_a_model_calling_apply_for_a_question_proposes_nothing(
    agent: tuple[AgentProcess, NetNS],
) -> None:
    from assistant.llm.tool_calls import call_text
    from tests.test_chat_native import ScriptedModel

    proc, netns = agent
    call = call_text("apply", {"target": KEY, "value": "8192"})
    ctx = Context(socket=str(proc.socket), store=str(proc.tmp / "c.db"))
    asked = ChatSession(ScriptedModel([call, "Done."]), ctx, native_tools=True)
    turn = asked.ask(f"what would happen if I set {KEY} to 8192?")
    assert turn.decision.via == "native" and turn.proposals == []
    assert "Nothing was applied" in turn.answer
    told = ChatSession(ScriptedModel([call, "Proposed."]), ctx, native_tools=True)
    turn = told.ask(f"set {KEY} to 8192")
    assert [p.op for p in turn.proposals] == ["apply"]  # an imperative: only a proposal
    assert netns.read(KEY) != "8192" and try_history(proc.socket).changesets == []
