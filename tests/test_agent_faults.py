"""Fault injection: SIGKILL the agent at every step of a three-key changeset, restart it,
and check that every key is consistent (all old, or all new) in the real kernel.

The agent runs in a private network namespace held by another process, so it can die
and come back in the same namespace; ``KASSIST_AGENT_FAULT`` names the step at which the
fault hook of the test entry point (``tests/agent_entry.py``) SIGKILLs it.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from actions.client import AgentClient
from actions.errors import AgentUnavailable
from tests.agent_support import AgentProcess, NetNS, RawConnection, netns_held, plain, rec
from tests.conftest import HANG_S

KEYS = ("net.core.somaxconn", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_time")


netns = pytest.fixture(netns_held, name="netns")


def _changeset(netns: NetNS) -> tuple[dict[str, str], dict[str, str], list[dict[str, object]]]:
    before = {k: netns.read(k) for k in KEYS}
    new = {
        KEYS[0]: str(int(before[KEYS[0]]) * 2),
        KEYS[1]: str(int(before[KEYS[1]]) // 2),
        KEYS[2]: str(int(before[KEYS[2]]) // 2),
    }
    recs = [rec(k, int(v), id=f"r{i}") for i, (k, v) in enumerate(new.items())]
    return before, new, recs


def _killed(agent: AgentProcess, call: object) -> None:
    with pytest.raises(AgentUnavailable), AgentClient(agent.socket, timeout=HANG_S) as client:
        call(client)  # type: ignore[operator]
    assert agent.wait_dead() == -signal.SIGKILL


APPLY_STEPS = {
    # step -> what a restarted agent must leave (the old values or the new ones) and the
    # changeset's state: failed before any write, rolled back after some.
    "validated": ("old", "failed"),
    "applying": ("old", "failed"),
    "write:0": ("old", "rolled_back"),
    "write:1": ("old", "rolled_back"),
    "write:2": ("old", "rolled_back"),
    "applied": ("new", "verified"),
    "verified": ("new", "verified"),
}


@pytest.mark.parametrize("step", list(APPLY_STEPS))
def test_sigkill_during_apply_leaves_every_key_consistent(
    netns: NetNS, tmp_path: Path, step: str
) -> None:
    before, new, recs = _changeset(netns)
    agent = AgentProcess(tmp_path, netns).start(env={"KASSIST_AGENT_FAULT": step})
    _killed(agent, lambda c: c.apply(recs))
    assert any(e["event"] == "fault-injection" and e["step"] == step for e in agent.audit_events())
    if step.startswith("write:"):
        # Really half-applied: the keys up to the fault are new, the rest still old.
        done = int(step.split(":")[1]) + 1
        half = {k: (new if i < done else before)[k] for i, k in enumerate(KEYS)}
        assert {k: netns.read(k) for k in KEYS} == half

    agent.start()  # no fault this time: it recovers before it listens
    try:
        now = {k: netns.read(k) for k in KEYS}
        values, state = APPLY_STEPS[step]
        expected = before if values == "old" else new
        assert now == expected, f"after SIGKILL at {step}: {now}"
        with AgentClient(agent.socket) as client:
            cs = plain(client.history(1))["changeset"]
            assert cs["state"] == state
            if step != "verified":
                assert any(e["event"] == "recovered" for e in cs["events"])
            if values == "new":
                assert plain(client.rollback(1))["ok"]
                assert {k: netns.read(k) for k in KEYS} == before
    finally:
        agent.stop()


@pytest.mark.parametrize("step", ["rolling_back", "undo:0", "undo:1", "undo:2"])
def test_sigkill_during_rollback_is_finished_on_restart(
    netns: NetNS, tmp_path: Path, step: str
) -> None:
    before, new, recs = _changeset(netns)
    agent = AgentProcess(tmp_path, netns).start()
    with AgentClient(agent.socket) as client:
        assert plain(client.apply(recs))["ok"]
    agent.stop()
    assert {k: netns.read(k) for k in KEYS} == new  # stopping the agent rolls nothing back

    agent.start(env={"KASSIST_AGENT_FAULT": step})
    _killed(agent, lambda c: c.rollback(1))
    agent.start()
    try:
        assert {k: netns.read(k) for k in KEYS} == before
        with AgentClient(agent.socket) as client:
            assert plain(client.history(1))["changeset"]["state"] == "rolled_back"
            assert plain(client.status())["status"]["managed"] == []
    finally:
        agent.stop()


def test_sigterm_answers_every_submission_it_read(netns: NetNS, tmp_path: Path) -> None:
    # Three applies pipelined on one connection; SIGTERM comes while the first is writing
    # (it lingers there). The first is finished and answered; the two that had not
    # started are refused, nothing done: one completion each, and each says what the
    # journal and the kernel hold (before, the agent ran all three and answered none).
    before, new, recs = _changeset(netns)
    agent = AgentProcess(tmp_path, netns)
    agent.start(env={"KASSIST_AGENT_FAULT": "pause:write:0", "KASSIST_AGENT_PAUSE": "1"})
    conn = RawConnection(agent.socket)
    try:
        entries = [
            {"op": "apply", "user_data": i, "recommendations": [r]} for i, r in enumerate(recs)
        ]
        conn.send(b"".join(json.dumps(e).encode() + b"\n" for e in entries))
        assert agent.wait_audited("write", 1) >= 1  # the first is under way
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGTERM)
        answers: dict[int, str] = {}
        while (reply := conn.read()) is not None:
            assert reply["user_data"] not in answers, reply  # exactly one each
            answers[reply["user_data"]] = reply["verdict"]
        assert agent.wait_dead() == 0
    finally:
        conn.close()
        agent.stop()
    assert answers == {0: "verified", 1: "refused", 2: "refused"}, answers
    assert {k: netns.read(k) for k in KEYS} == {
        KEYS[0]: new[KEYS[0]],
        KEYS[1]: before[KEYS[1]],
        KEYS[2]: before[KEYS[2]],
    }
    verdicts = [e.get("verdict") for e in agent.audit_events() if e["event"] == "verdict"]
    assert verdicts.count("verified") == 1, verdicts
