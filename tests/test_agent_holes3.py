"""The agent's holes of the third adversarial round (after issues 22 and 27), replayed.

The first test failed on the agent as it was merged (one history answer unbounded, every
answer of a pipelined chunk held in memory); the second guards the drop of a peer that
stops reading (without a timed assertion it cannot tell "dropped after the idle timeout"
from "dropped later", so it is a regression guard, not a proof of that fix).

Agents run on fake /proc/sys trees where no kernel write is needed, else in a private network
namespace (``net.*`` keys only).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.agent_support import (
    AgentProcess,
    NetNS,
    RawConnection,
    call,
    netns_held,
    policed_agent,
    rec,
)
from tests.conftest import wait_until

netns = pytest.fixture(netns_held, name="netns")

SOMAXCONN = "net.core.somaxconn"
POLICY = """
version = 1
max_changes_per_hour = 1000
max_step = 1000.0
allow = ["net.core.somaxconn", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_time"]
"""


def _agent(tmp: Path, netns: NetNS | None, *args: str) -> AgentProcess:
    return policed_agent(tmp, netns, POLICY, *args)


def _status(agent: AgentProcess) -> str:
    # The status verdict, or "" when a 1 s idle timeout on a loaded machine dropped the call.
    try:
        return str(call(agent, "status")["verdict"])
    except (AssertionError, OSError):
        return ""


def _try_apply(agent: AgentProcess, recs: dict[str, Any]) -> str:
    # The apply's verdict, or "" when a 1 s idle timeout on a loaded machine closed the
    # connection before the entry was read (nothing applied then).
    try:
        return str(call(agent, "apply", recommendations=recs)["verdict"])
    except (AssertionError, OSError):
        return ""


def _apply(agent: AgentProcess, recs: dict[str, Any]) -> str:
    # An apply, sent again until it is answered.
    return wait_until(lambda: _try_apply(agent, recs), "an apply answered", poll_s=0.5)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _big(i: int) -> dict[str, Any]:
    # A recommendation as large as an entry may be (64 KiB): the journal keeps all of it.
    return rec(
        SOMAXCONN, 4096 if i % 2 else 8192, id=f"r{i}", rationale="r" * 4000,
        evidence=[f"evidence {i}.{j}: " + "e" * 880 for j in range(60)],
    )  # fmt: skip


def test_a_peer_that_does_not_read_cannot_make_the_agent_hold_its_answers(
    tmp_path: Path,
) -> None:
    # A group member pipelines history requests and never reads: every answer of a chunk
    # was built and queued in memory before the first wait, ~1 MB each here.
    agent = _agent(tmp_path, None).start()
    try:
        for i in range(20):
            done = call(agent, "apply", recommendations=_big(i))
            assert done["verdict"] == "verified", done
        # One history answer holds the newest changesets that fit its byte budget, and says so.
        listed = call(agent, "history", limit=1000)
        assert 0 < len(listed["changesets"]) < 20, len(listed["changesets"])
        assert listed["changesets"][0]["id"] > listed["changesets"][-1]["id"]
        assert any("newest" in n for n in listed["notices"]), listed["notices"]
        assert len(json.dumps(listed)) < 2 << 20
        assert agent.proc is not None
        before = _rss_kib(agent.proc.pid)
        hog = RawConnection(agent.socket)
        line = json.dumps({"op": "history", "user_data": 0, "limit": 1000}).encode() + b"\n"
        hog.send(line * 200)
        time.sleep(3)
        grown = _rss_kib(agent.proc.pid) - before
        assert grown < 48 * 1024, f"the agent grew {grown} KiB for one peer"
        # the agent still answers everyone else
        assert call(agent, "status")["verdict"] == "ok"
        hog.close()
    finally:
        agent.stop()


def test_a_peer_that_stops_reading_does_not_keep_its_connection(tmp_path: Path) -> None:
    # The idle timeout counted only entries read: a peer whose answers wait in the agent's
    # buffers (it never reads them) held its connection slots while the agent waited.
    agent = _agent(tmp_path, None, "--max-per-peer", "2", "--idle-timeout", "1").start()
    try:
        for i in range(4):
            assert _apply(agent, _big(i)) == "verified"
        line = json.dumps({"op": "history", "user_data": 0, "limit": 1000}).encode() + b"\n"
        hogs = [RawConnection(agent.socket) for _ in range(2)]
        for hog in hogs:
            with contextlib.suppress(OSError):  # dropped already: so much the better
                hog.send(line * 50)  # ~12 MB of answers each, never read
        # Past the idle timeout the hogs are dropped: status is answered, not refused "busy"
        # (polled, however loaded the machine: on the merged agent it stayed refused).
        wait_until(
            lambda: _status(agent) == "ok", "status answered: the hogs' connections dropped", 0.5
        )
        for hog in hogs:
            hog.close()
    finally:
        agent.stop()
