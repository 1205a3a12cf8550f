"""A soak: four clients validate, apply and roll back random changesets, valid and not, in a
private network namespace, while the agent is SIGKILLed at random moments and restarted,
its journal's and its audit log's file systems fill up now and then (small tmpfs
mounts, real ``ENOSPC``), and a member of its group floods it with blank lines,
malformed entries, refused submissions and connections it opens and drops.

Afterwards, and after one more SIGKILL and restart: every key holds what the journal
says (the value of the change that manages it, else the snapshot of the change rolled
back last), no changeset is in flight, nothing was overridden, and every refusal a
client received was audited: root's refusals are one line each, written before their
completion; only those received while the audit log's disk was full (and 2 s after)
may have been counted in memory instead, and lost with a kill. The killer restarts the
agent lingering 20 ms at one step of every apply or rollback, so that kills land inside
them. The counts are printed. ``KASSIST_SOAK_SECONDS`` sets how long the clients run
(default 75 s, to keep CI within its budget).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actions.client import AgentClient
from actions.errors import ActionError
from actions.model import AgentStatus
from tests.agent_support import AgentProcess, NetNS, Tmpfs, rec, require_netns
from tests.conftest import HANG_S, require

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
#: The steps of an apply and a rollback (see actions.core's step hook).
STEPS = ("validated", "applying", "write:0", "write:1", "applied", "verified", "rolling_back",
         "undo:0", "undo:1")  # fmt: skip
FINAL = ("verified", "rolled_back", "failed")
#: Seconds after a full disk is freed until the counts kept in memory meanwhile are written.
LOSSY = 2.0


class Soak:
    """The shared counters and the agent the clients, the killer and the filler share."""

    def __init__(self, agent: AgentProcess, netns: NetNS) -> None:
        self.agent = agent
        self.netns = netns
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.refusals: list[float] = []  # when each refusal came
        self.lossy: list[tuple[float, float]] = []  # when a count may be lost

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def refused(self) -> None:
        with self.lock:
            self.counts["refusals"] += 1
            self.refusals.append(time.monotonic())

    def may_lose(self, start: float, end: float) -> None:
        with self.lock:
            self.lossy.append((start, end))

    def lost_at_most(self) -> int:
        """How many refusals came when their count could be lost (a full disk, then a kill)."""
        return sum(any(a <= t <= b for a, b in self.lossy) for t in self.refusals)


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
            with AgentClient(soak.agent.socket, timeout=HANG_S) as client:
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
                        soak.refused()
                    if any(e.rule == "storage" for e in done.errors):
                        soak.count("storage refusals")
                    if done.verdict == "verified":
                        soak.count("applied")
        except ActionError:
            soak.count("interrupted")  # the agent was killed under us: connect again
            time.sleep(0.05)
        except (OSError, ValueError):
            soak.count("interrupted")
            time.sleep(0.05)


def _agent_step(rng: random.Random) -> str:
    return rng.choice(STEPS)


def _killer(soak: Soak, seed: int, step: Callable[[random.Random], str] = _agent_step) -> None:
    # SIGKILL the agent every 1 to 4 s and start the next one at once.
    rng = random.Random(seed)
    while not soak.stop.wait(rng.uniform(1.0, 4.0)):
        proc = soak.agent.proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(HANG_S)
        soak.count("kills")
        # The next agent lingers 20 ms at one step of every apply or rollback, so that
        # the next kill often lands inside one (KASSIST_AGENT_FAULT=pause:<step>).
        soak.agent.start(env={"KASSIST_AGENT_FAULT": f"pause:{step(rng)}",
                              "KASSIST_AGENT_PAUSE": "0.02"})  # fmt: skip


def _filler(soak: Soak, seed: int, disks: dict[str, list[Tmpfs]]) -> None:
    # Now and then the journal's file system, the audit log's or both fill up, for a
    # second or two: applies and rollbacks are refused meanwhile, none is left half done.
    rng = random.Random(seed)
    while not soak.stop.wait(rng.uniform(3.0, 6.0)):
        which = rng.choice(list(disks))
        full = disks[which]
        start = time.monotonic()
        try:
            for fs in full:
                fs.fill()
            soak.count("disk-full events")
            soak.stop.wait(rng.uniform(1.0, 2.5))
        finally:
            for fs in full:
                fs.free()
            if which != "journal":  # refusals are audit lines: counted in memory meanwhile
                soak.may_lose(start, time.monotonic() + LOSSY)


#: A member of the agent's group, flooding: blank lines, malformed and refused entries,
#: connections opened and dropped. Runs until its stdin closes; prints its count.
_FLOOD = r"""
import random, select, socket, sys
import time
path, rng, sent, dropped, failed = sys.argv[1], random.Random(7), 0, 0, 0
ENTRIES = [
    b"\n\n\n",
    b"not json\n",
    b'{"op":"reboot","user_data":1}\n',
    b'{"op":"status","user_data":2,"sudo":true}\n',
    b'{"op":"validate","user_data":3,"recommendations":{"id":"x"}}\n',
    b'{"op":"apply","user_data":4,"recommendations":{"id":"f","kind":"sysctl",'
    b'"target":"net.core.somaxconn","value":999999999,"evidence":["x"],'
    b'"rationale":"a flood of out-of-range values","source":"rules"}}\n',
    b'{"op":"rollback","user_data":5,"id":999999}\n',
    b'{"op":"rollback","user_data":6,"since":1e300}\n',
    b'{"op":"history","user_data":7,"limit":1}\n',
]
while not select.select([sys.stdin], [], [], 0)[0]:
    try:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(path)
        if rng.random() < 0.3:
            s.close()  # connect and drop
            dropped += 1
            continue
        s.sendall(b"".join(rng.choice(ENTRIES) for _ in range(rng.randint(1, 20))))
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        s.close()
        sent += 1
    except OSError:
        failed += 1  # the agent is being restarted
        time.sleep(0.01)
print(sent, dropped, failed, flush=True)
"""


def _audited_refusals(events: list[dict[str, Any]], uid: int = 0) -> int:
    # Refusals audited for one user: lines, and counts in "suppressed" lines.
    n = 0
    for e in events:
        if e["event"] in ("verdict", "refused", "malformed") and e.get("who", {}).get("uid") == uid:
            n += e["event"] != "verdict" or e.get("verdict") in ("rejected", "refused")
        elif e["event"] == "suppressed":
            for event, by in e["counts"].items():
                for key, count in by.items():
                    refusal = event != "verdict" or " rejected " in key or " refused " in key
                    n += count if refusal and key.endswith(f"uid {uid}") else 0
    return n


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
        if r["cs_state"] == "failed" and r["state"] in ("pending", "written"):
            wrong.append(f"changeset {r['changeset_id']}: {r['target']} left {r['state']}")
        if r["state"] == "verified":
            managed.setdefault(r["target"], []).append(r["new"])
        elif r["state"] == "rolled_back" and r["at"] >= undone.get(r["target"], (0.0, ""))[0]:
            undone[r["target"]] = (r["at"], r["old"])
    wrong += [f"{k} managed by {len(v)} changesets" for k, v in managed.items() if len(v) > 1]
    says = {k: old for k, (_, old) in undone.items()} | {k: v[-1] for k, v in managed.items()}
    return says, wrong


def _story(db: Path, mismatches: list[str], capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Print the journal's events of every changeset that touched a key named in
    *mismatches* (what a failing run needs to be explained; the state tmpfs is gone
    afterwards); return the mismatches."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        keys = {
            t
            for (t,) in conn.execute("SELECT DISTINCT target FROM changes")
            if any(t in m for m in mismatches)
        }
        lines: list[str] = []
        for key in sorted(keys):
            for cs_id, old, new, state in conn.execute(
                "SELECT changeset_id, old, new, state FROM changes WHERE target = ?"
                " ORDER BY changeset_id",
                (key,),
            ):
                lines.append(f"{cs_id} {key} {old}->{new} row {state}:")
                lines += [
                    f"  {at:.3f} {event} {detail}"
                    for at, event, detail in conn.execute(
                        "SELECT at, event, detail FROM events WHERE changeset_id = ? ORDER BY id",
                        (cs_id,),
                    )
                ]
    finally:
        conn.close()
    with capsys.disabled():
        print("\n".join(lines[-400:]))
    return mismatches


def _flood(agent: AgentProcess) -> subprocess.Popen[str]:
    require(shutil.which("setpriv") is not None, "needs setpriv (util-linux)")
    ids = ("--reuid=nobody", "--regid=nogroup", "--clear-groups")
    return subprocess.Popen(
        ["setpriv", *ids, "/usr/bin/python3", "-c", _FLOOD, str(agent.socket)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _flood_counts(flood: subprocess.Popen[str]) -> tuple[int, int, int]:
    """Stop the group member's flood: the connections it made with entries, those
    dropped, and those that failed while the agent restarted."""
    assert flood.stdin is not None and flood.stdout is not None
    flood.stdin.close()  # the flood's cue to stop
    flooded, dropped, failed = map(int, flood.stdout.read().split())
    flood.wait(HANG_S)
    return flooded, dropped, failed


def _run(soak: Soak, threads: list[threading.Thread], seconds: float) -> None:
    """Run the soak's threads for *seconds*, then stop them and wait for each."""
    for t in threads:
        t.start()
    time.sleep(seconds)
    soak.stop.set()
    for t in threads:
        t.join(60)


def _kill_and_restart(agent: AgentProcess) -> AgentStatus:
    """SIGKILL the agent at rest and start it again: the status its recovery leaves."""
    assert agent.proc is not None
    os.kill(agent.proc.pid, signal.SIGKILL)
    agent.proc.wait(HANG_S)
    agent.start()
    with AgentClient(agent.socket, timeout=HANG_S) as client:
        status = client.status().status
    assert status is not None
    return status


def _mismatches(netns: NetNS, says: dict[str, str], wrong: list[str]) -> list[str]:
    """*wrong* (the journal's own faults), then each key the kernel holds otherwise than
    the journal *says* (values compared field by field)."""
    return wrong + [
        f"{k}: kernel {netns.read(k)}, journal {v}"
        for k, v in says.items()
        if " ".join(netns.read(k).split()) != " ".join(v.split())
    ]


def test_soak_with_random_kills_full_disks_and_a_flood(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_netns()
    netns = NetNS()
    state = Tmpfs(tmp_path / "state", "64m")
    auditfs = Tmpfs(tmp_path / "auditfs", "32m")
    reachable = Path(tempfile.mkdtemp(prefix="kassist-soak-"))
    reachable.chmod(0o755)  # the group member reaches the socket; its mode decides
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    agent = AgentProcess(tmp_path, netns, policy=policy, args=("--group", "nogroup"))
    agent.audit = auditfs.path / "audit.jsonl"
    agent.socket = reachable / "agent.sock"
    flood: subprocess.Popen[str] | None = None
    try:
        agent.start()
        before = {k: netns.read(k) for k in [*RANGES, "net.ipv4.ip_local_port_range"]}
        soak = Soak(agent, netns)
        disks = {"journal": [state], "audit": [auditfs], "both": [state, auditfs]}
        threads = [threading.Thread(target=_client, args=(soak, i)) for i in range(4)]
        threads.append(threading.Thread(target=_killer, args=(soak, 99)))
        threads.append(threading.Thread(target=_filler, args=(soak, 98, disks)))
        flood = _flood(agent)
        _run(soak, threads, SECONDS)
        flooded, dropped, failed = _flood_counts(flood)
        # One more SIGKILL at rest, then the one restart that must leave nothing in flight.
        status = _kill_and_restart(agent)
        agent.stop()
        says, wrong = _journal_says(agent.state / "journal.db")
        mismatches = _mismatches(netns, says, wrong)
        audited = _audited_refusals(agent.audit_events())
        c = soak.counts
        lossy = soak.lost_at_most()
        with capsys.disabled():
            print(
                f"\nsoak {SECONDS:g} s: operations {c['operations']}, applied {c['applied']}, "
                f"kills {c['kills'] + 1}, disk-full events {c['disk-full events']} "
                f"(storage refusals {c['storage refusals']}), group-member flood "
                f"{flooded} connections with entries, {dropped} dropped, {failed} while the "
                f"agent restarted; refusals "
                f"{c['refusals']} (audited {audited}; {lossy} came while the audit disk was full), "
                f"interrupted {c['interrupted']}, "
                f"mismatches {len(mismatches)}"
            )
        assert mismatches == [], _story(agent.state / "journal.db", mismatches, capsys)
        assert not set(status.changesets) - set(FINAL), status.changesets
        assert status.overridden == []
        assert c["kills"] >= 3 and c["operations"] >= 100 and c["refusals"] >= 10, c
        assert c["disk-full events"] >= 2 and flooded >= 10, (c, flooded)
        assert audited >= c["refusals"] - lossy, (audited, c["refusals"], lossy)
        assert set(says) <= set(before)
        assert "Traceback" not in agent.log.read_text()
    finally:
        if flood is not None and flood.poll() is None:
            flood.kill()
            flood.wait()
        agent.stop()
        netns.close()
        state.close()
        auditfs.close()
        shutil.rmtree(reachable, ignore_errors=True)
