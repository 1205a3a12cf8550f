"""A soak: four clients validate, apply and roll back random changesets, valid and not, in a
private network namespace, while the agent is SIGKILLed at random moments and restarted.

Afterwards, and after one more SIGKILL and restart: every key holds what the journal
says (the value of the change that manages it, else the snapshot of the change rolled
back last), no changeset is in flight, nothing was overridden, and every refusal
a client received was audited. The killer restarts the agent lingering 20 ms at one
step of every apply or rollback, so that kills land inside them. The counts are
printed. ``KASSIST_SOAK_SECONDS`` sets how long the clients run (default 75 s, to keep
CI within its budget).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from actions.client import AgentClient
from actions.errors import ActionError
from tests.agent_support import AgentProcess, NetNS, rec, require_netns

SECONDS = float(os.environ.get("KASSIST_SOAK_SECONDS", "75"))
POLICY = """
version = 1
max_changes_per_hour = 1000000
allow = [
    "net.core.somaxconn", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.ipfrag_high_thresh", "net.ipv4.ipfrag_low_thresh",
    "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
]
[keys."net.ipv4.tcp_syncookies"]
type = "int"
min = 0
max = 2
"""
#: Key -> (floor, ceiling) of kassist's built-in table.
RANGES = {
    "net.core.somaxconn": (128, 65535),
    "net.ipv4.tcp_fin_timeout": (5, 120),
    "net.ipv4.tcp_keepalive_time": (30, 7200),
    "net.ipv4.tcp_keepalive_intvl": (5, 300),
    "net.ipv4.ipfrag_high_thresh": (262144, 64 << 20),
    "net.ipv4.ipfrag_low_thresh": (196608, 64 << 20),
}
REFUSALS = ("rejected", "refused", "malformed")
#: The steps of an apply and a rollback (see actions.agent's fault injection).
STEPS = ("validated", "applying", "write:0", "write:1", "applied", "verified", "rolling_back",
         "undo:0", "undo:1")  # fmt: skip
FINAL = ("verified", "rolled_back")


class Soak:
    """The shared counters and the agent the clients and the killer share."""

    def __init__(self, agent: AgentProcess, netns: NetNS) -> None:
        self.agent = agent
        self.netns = netns
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.start = time.time()

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


def _value(rng: random.Random, key: str, current: str) -> object:
    if key == "net.ipv4.ip_local_port_range":
        lo = rng.randint(1024, 40000)
        return [lo, rng.randint(lo + 1, 65535)]
    floor, ceiling = RANGES[key]
    cur = int(current.split(maxsplit=1)[0])
    return max(floor, min(ceiling, int(cur * rng.uniform(0.5, 2.0)) or floor))


def _bad(rng: random.Random, key: str, current: str) -> dict[str, Any]:
    # One of the refusals an attacker or a confused drafter would meet.
    kind = rng.choice(["range", "unknown", "baseline", "type", "step", "evidence"])
    if kind == "range" and key in RANGES:
        return rec(key, RANGES[key][1] + rng.randint(1, 1000))
    if kind == "unknown":
        return rec("net.core.kassist_nope", 1)
    if kind == "baseline":
        return rec("net.ipv4.tcp_syncookies", 0)
    if kind == "type":
        return rec(key, "many")
    if kind == "step" and key in RANGES:
        return rec(key, min(RANGES[key][1], int(current.split(maxsplit=1)[0]) * 16 + 1))
    return rec(key, 1, evidence=[])


def _changeset(rng: random.Random, soak: Soak) -> list[dict[str, Any]]:
    keys = rng.sample([*RANGES, "net.ipv4.ip_local_port_range"], rng.randint(1, 3))
    recs = []
    for i, key in enumerate(keys):
        current = soak.netns.read(key)
        doc = (
            _bad(rng, key, current) if rng.random() < 0.25 else rec(key, _value(rng, key, current))
        )
        doc["id"] = f"s{i}"
        recs.append(doc)
    return recs


def _client(soak: Soak, seed: int) -> None:
    rng = random.Random(seed)
    while not soak.stop.is_set():
        try:
            with AgentClient(soak.agent.socket, timeout=30) as client:
                while not soak.stop.is_set():
                    pick = rng.random()
                    if pick < 0.3:
                        done = client.validate(_changeset(rng, soak))
                    elif pick < 0.65:
                        done = client.apply(_changeset(rng, soak), persist=rng.random() < 0.2)
                    elif pick < 0.85:
                        done = client.rollback(rng.randint(1, max(1, soak.counts["applied"] + 2)))
                    elif pick < 0.9:
                        done = client.rollback(since=time.time() - rng.uniform(0, 5))
                    else:
                        done = client.status() if rng.random() < 0.5 else client.history(limit=5)
                    soak.count("operations")
                    if done.verdict in REFUSALS:
                        soak.count("refusals")
                    if done.verdict == "verified":
                        soak.count("applied")
        except ActionError:
            soak.count("interrupted")  # the agent was killed under us: connect again
            time.sleep(0.05)
        except (OSError, ValueError):
            soak.count("interrupted")
            time.sleep(0.05)


def _killer(soak: Soak, seed: int) -> None:
    rng = random.Random(seed)
    while not soak.stop.wait(rng.uniform(1.0, 4.0)):
        proc = soak.agent.proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        soak.count("kills")
        # The next agent lingers 20 ms at one step of every apply or rollback, so that
        # the next kill often lands inside one (KASSIST_AGENT_FAULT=pause:<step>).
        soak.agent.start(env={"KASSIST_AGENT_FAULT": f"pause:{rng.choice(STEPS)}",
                              "KASSIST_AGENT_PAUSE": "0.02"})  # fmt: skip


def _journal_says(db: Path) -> tuple[dict[str, str], list[str]]:
    # Key -> the value the journal says it holds: the new value of the change that manages
    # it, else the snapshot (old value) of the change rolled back last; and what is wrong
    # in the journal itself.
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    rows = conn.execute(
        "SELECT changes.*, changesets.state AS cs_state, changesets.updated AS at FROM changes"
        " JOIN changesets ON changesets.id = changes.changeset_id ORDER BY changeset_id, seq"
    ).fetchall()
    conn.close()
    wrong: list[str] = []
    managed: dict[str, list[str]] = {}
    undone: dict[str, tuple[float, str]] = {}
    for r in rows:
        if r["cs_state"] not in FINAL:
            wrong.append(f"changeset {r['changeset_id']} left {r['cs_state']}")
        if r["state"] == "overridden":
            wrong.append(f"changeset {r['changeset_id']}: {r['target']} overridden")
        if r["state"] == "verified":
            managed.setdefault(r["target"], []).append(r["new"])
        elif r["cs_state"] == "rolled_back" and r["at"] >= undone.get(r["target"], (0.0, ""))[0]:
            undone[r["target"]] = (r["at"], r["old"])
    wrong += [f"{k} managed by {len(v)} changesets" for k, v in managed.items() if len(v) > 1]
    says = {k: old for k, (_, old) in undone.items()} | {k: v[-1] for k, v in managed.items()}
    return says, wrong


def test_soak_with_random_kills(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_netns()
    netns = NetNS()
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    agent = AgentProcess(tmp_path, netns, policy=policy)
    try:
        agent.start()
        before = {k: netns.read(k) for k in [*RANGES, "net.ipv4.ip_local_port_range"]}
        soak = Soak(agent, netns)
        threads = [threading.Thread(target=_client, args=(soak, i)) for i in range(4)]
        killer = threading.Thread(target=_killer, args=(soak, 99))
        for t in [*threads, killer]:
            t.start()
        time.sleep(SECONDS)
        soak.stop.set()
        for t in [*threads, killer]:
            t.join(60)
        # One more SIGKILL at rest, then the one restart that must leave nothing in flight.
        assert agent.proc is not None
        os.kill(agent.proc.pid, signal.SIGKILL)
        agent.proc.wait(10)
        agent.start()
        with AgentClient(agent.socket, timeout=30) as client:
            status = client.status().status
        assert status is not None
        agent.stop()
        says, wrong = _journal_says(agent.state / "journal.db")
        mismatches = wrong + [
            f"{k}: kernel {netns.read(k)}, journal {v}"
            for k, v in says.items()
            if " ".join(netns.read(k).split()) != " ".join(v.split())
        ]
        audit = [json.loads(line) for line in agent.audit.read_text().splitlines()]
        audited = sum(
            1
            for e in audit
            if (e["event"] == "verdict" and e.get("verdict") in ("rejected", "refused"))
            or e["event"] in ("malformed", "refused")
        )
        c = soak.counts
        with capsys.disabled():
            print(
                f"\nsoak {SECONDS:g} s: operations {c['operations']}, applied {c['applied']}, "
                f"kills {c['kills'] + 1}, refusals {c['refusals']} (audited {audited}), "
                f"interrupted {c['interrupted']}, mismatches {len(mismatches)}"
            )
        assert mismatches == [], mismatches
        assert not set(status.changesets) - set(FINAL), status.changesets
        assert status.overridden == []
        assert c["kills"] >= 3 and c["operations"] >= 100 and c["refusals"] >= 10, c
        assert audited >= c["refusals"]
        assert set(says) <= set(before)
    finally:
        agent.stop()
        netns.close()
