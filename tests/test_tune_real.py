"""tune on real conditions: each scenario reproduced with real processes in a private
network namespace, a cgroup or as another user, then found by ``kassist tune`` with the
right key and direction; every recommendation validated by a real agent; the closed
loop (listen-queue overflow -> recommend -> apply -> the overflow is gone).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_support import AgentProcess, require_netns
from tests.conftest import ROOT, require, run_kassist
from tests.tune_support import (
    FORK_UNTIL_EAGAIN,
    INOTIFY_INSTANCES,
    LISTEN_FLOOD,
    SHORT_CONNECTIONS,
    THRASH,
    UDP_FLOOD,
    TuneNetNS,
    finish,
    make_cgroup,
    proposals,
    remove_cgroup,
    spawn,
    tune,
    wait_started,
)

TUNE_POLICY = ROOT / "assistant" / "tuning" / "agent_policy.toml"


@pytest.fixture
def netns() -> Iterator[TuneNetNS]:
    require_netns()
    ns = TuneNetNS()
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # tune keeps its last run for --explain under XDG_STATE_HOME.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path


def _agent(tmp: Path, ns: TuneNetNS | None, policy: Path | None = TUNE_POLICY) -> AgentProcess:
    (tmp / "agent").mkdir(exist_ok=True)
    return AgentProcess(tmp / "agent", ns, policy=policy).start()


def assert_agent_accepts(doc: dict[str, Any], agent: AgentProcess) -> dict[str, Any]:
    """Every recommendation tune made passes the agent's validator (a dry run)."""
    path = agent.tmp / "recs.json"
    path.write_text(json.dumps(doc["recommendations"]))
    proc = run_kassist(
        ["agent", "validate", str(path), "--socket", str(agent.socket), "--format", "json"]
    )
    done: dict[str, Any] = json.loads(proc.stdout)
    assert done["ok"], done["errors"]
    return done


def _tune_during(ns: TuneNetNS | None, workload: subprocess.Popen[str], *args: str) -> dict[str, Any]:
    wait_started()
    where = ["--netns", str(ns.holder.pid)] if ns is not None else []
    code, doc, _ = tune(*where, "--interval", "2", *args)
    finish(workload)
    assert code == (3 if doc["recommendations"] else 0)
    return doc


# --- the closed loop ---------------------------------------------------------------------


def _overflows(ns: TuneNetNS, clients: int = 400) -> int:
    before = ns.netstat("ListenOverflows")
    finish(ns.spawn(LISTEN_FLOOD, str(clients), "3"))
    return ns.netstat("ListenOverflows") - before


def test_closed_loop_listen_overflow(netns: TuneNetNS, state: Path) -> None:
    netns.write("net.core.somaxconn", "128")
    agent = _agent(state, netns, policy=None)  # the built-in default policy
    try:
        before = _overflows(netns)
        doc = _tune_during(netns, netns.spawn(LISTEN_FLOOD, "400", "3"))
        somaxconn = proposals(doc, "listen-overflow")["net.core.somaxconn"]
        assert somaxconn["direction"] == "up" and somaxconn["status"] == "recommended"
        assert somaxconn["current"] == 128 and somaxconn["value"] == 512
        assert_agent_accepts(doc, agent)
        # Apply through the agent (tune observes again, under the same workload).
        flood = netns.spawn(LISTEN_FLOOD, "400", "3")
        wait_started()
        proc = run_kassist(
            ["tune", "--netns", str(netns.holder.pid), "--interval", "2", "--apply", "--yes",
             "--socket", str(agent.socket)]
        )  # fmt: skip
        finish(flood)
        assert proc.returncode == 0, proc.stderr
        assert "verified: changeset" in proc.stdout
        assert netns.read("net.core.somaxconn") == "512"
        after = _overflows(netns)
        print(f"\nListenOverflows per run of 400 connections: before {before}, after {after}")
        assert before >= 100
        assert after <= before * 0.1
        # Undoable: the agent rolls it back.
        cs = run_kassist(["agent", "history", "--socket", str(agent.socket), "--format", "json"])
        last = json.loads(cs.stdout)["changesets"][0]["id"]
        back = run_kassist(["agent", "rollback", str(last), "--socket", str(agent.socket)])
        assert back.returncode == 0, back.stderr
        assert netns.read("net.core.somaxconn") == "128"
    finally:
        agent.stop()
