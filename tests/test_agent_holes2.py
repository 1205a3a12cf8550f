"""The agent's holes of the second adversarial round (issue 22, items 1-6 and 11), each
reproduced: every test here replays one attack, failed on the agent as it was, and
passes now.

Real sysctl writes happen only in a private network namespace (``net.*`` keys); full
disks are small tmpfs mounts the test fills until the kernel says ``ENOSPC``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from actions.knobs import Roots
from actions.model import parse_recommendations
from actions.policy import policy_from_dict
from actions.validate import validate
from tests.agent_support import (
    AgentProcess,
    NetNS,
    RawConnection,
    Tmpfs,
    fake_roots,
    netns_held,
    policed_agent,
    rec,
)
from tests.conftest import HANG_S, ROOT, hang_deadline, require, wait_until

POLICY = """
version = 1
max_changes_per_hour = 1000
allow = [
    "net.core.somaxconn", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl",
]
"""
INTVL = "net.ipv4.tcp_keepalive_intvl"
KEEPALIVE = "net.ipv4.tcp_keepalive_time"
SOMAXCONN = "net.core.somaxconn"


netns = pytest.fixture(netns_held, name="netns")


def _agent(tmp: Path, netns: NetNS | None, args: tuple[str, ...] = ()) -> AgentProcess:
    return policed_agent(tmp, netns, POLICY, *args)


def _call(agent: AgentProcess, op: str, **fields: Any) -> dict[str, Any]:
    # One submission on its own connection: exactly one completion, then nothing more.
    conn = RawConnection(agent.socket)
    try:
        conn.send({"op": op, "user_data": f"{op}-1", **fields})
        reply = conn.read()
        assert reply is not None, f"no completion for {op}"
        assert reply["user_data"] == f"{op}-1"
        conn.sock.shutdown(1)  # we are done: the agent closes, with no second completion
        assert conn.read() is None
        return reply
    finally:
        conn.close()


def _journal(agent: AgentProcess, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{agent.state / 'journal.db'}?mode=ro", uri=True, timeout=HANG_S)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _replayed(agent: AgentProcess, key: str, start: str) -> str:
    # The value the audit log says the key holds: its start value, then each audited
    # write and restore in order. A kernel write the log missed makes this differ.
    value = start
    for e in agent.audit_events():
        if e.get("target") != key:
            continue
        if e["event"] == "write" and e.get("ok"):
            value = str(e["new"])
        elif e["event"] == "restore":
            value = str(e["got"])
    return value


# --- 1. a full journal disk must not plant a stale undo ------------------------------------


@pytest.mark.parametrize("reserve", ["default", "none"])
def test_a_full_journal_disk_never_plants_a_stale_undo(
    tmp_path: Path, netns: NetNS, reserve: str
) -> None:
    # The journal's disk fills after the changeset's row and before its first write; the
    # next changeset sets the key; a restart must not write the first one's snapshot back.
    state = Tmpfs(tmp_path / "state", "1m")
    agent = _agent(tmp_path, netns, () if reserve == "default" else ("--disk-reserve", "0"))
    try:
        was = netns.read(INTVL)
        agent.start(env={"KASSIST_AGENT_FAULT": "pause:validated", "KASSIST_AGENT_PAUSE": "3"})
        conn = RawConnection(agent.socket)
        conn.send({"op": "apply", "user_data": "first", "recommendations": rec(INTVL, 80)})
        wait_until(
            lambda: _journal(agent, "SELECT id FROM changesets"),
            "the changeset journalled",
            poll_s=0.05,
            context=agent.log.read_text,
        )
        state.fill()  # the row is there; the agent pauses before its first write
        first = conn.read()
        conn.close()
        assert first is not None and first["user_data"] == "first"
        # Its answer says what the kernel holds.
        assert netns.read(INTVL) == ("80" if first["verdict"] == "verified" else was), first
        state.free()
        second = _call(agent, "apply", recommendations=rec(INTVL, 90))
        assert second["verdict"] == "verified", second
        agent.stop()
        agent.start()  # recovery
        assert netns.read(INTVL) == "90"
        status = _call(agent, "status")["status"]
        assert status["overridden"] == [], status
        assert [m["value"] for m in status["managed"]] == ["90"]
        cs = _call(agent, "history", id=1)["changeset"]
        if first["verdict"] != "verified":
            # Nothing had been written: closed as failed, never "rolled back".
            assert cs["state"] == "failed" and cs["changes"][0]["state"] == "failed", cs
        assert not any(e["event"] == "restore" and e["changeset"] == 1
                       for e in agent.audit_events())  # fmt: skip
    finally:
        agent.stop()
        state.close()


# --- 2. a full audit disk: one completion each, nothing written unaudited ---------------


def test_a_full_audit_disk_answers_every_entry_and_writes_nothing_unaudited(
    tmp_path: Path, netns: NetNS
) -> None:
    auditfs = Tmpfs(tmp_path / "auditfs", "1m")
    agent = _agent(tmp_path, netns)
    agent.audit = auditfs.path / "audit.jsonl"
    keys = (SOMAXCONN, KEEPALIVE, "net.ipv4.tcp_fin_timeout")
    try:
        agent.start()
        start = {k: netns.read(k) for k in keys}
        first = _call(agent, "apply", recommendations=rec(SOMAXCONN, 2 * int(start[SOMAXCONN])))
        assert first["verdict"] == "verified", first
        auditfs.fill()
        # Each apply is whole and audited (the last page's slack, then the reserve), or
        # refused before it writes, once the reserve is spent: one completion each.
        applies: list[dict[str, Any]] = []
        expected = start[KEEPALIVE]
        while not applies or applies[-1]["verdict"] == "verified":
            assert len(applies) < 200, "the agent kept applying on a full disk"
            value = (3600, 1800)[len(applies) % 2]
            reply = _call(agent, "apply", recommendations=rec(KEEPALIVE, value))
            applies.append(reply)
            assert reply["verdict"] in ("verified", "refused"), reply
            expected = str(value) if reply["ok"] else expected
            assert netns.read(KEEPALIVE) == expected, reply
        refused = applies[-1]
        assert refused["errors"][0]["rule"] == "storage" and "full" in json.dumps(refused)
        fin = _call(agent, "apply", recommendations=rec("net.ipv4.tcp_fin_timeout", 30))
        assert (
            fin["verdict"] == "refused"
            and netns.read("net.ipv4.tcp_fin_timeout") == start["net.ipv4.tcp_fin_timeout"]
        )
        back = _call(agent, "rollback", id=first["changeset"]["id"])
        assert back["verdict"] == "refused" and back["errors"][0]["rule"] == "storage", back
        assert netns.read(SOMAXCONN) == str(2 * int(start[SOMAXCONN]))
        dry = _call(agent, "validate", recommendations=rec(KEEPALIVE, 7200))
        status = _call(agent, "status")
        assert dry["verdict"] == "valid" and status["ok"], (dry, status)
        assert any("full" in n for n in status["notices"]), status
        auditfs.free()
        again = _call(agent, "rollback", id=first["changeset"]["id"])
        assert again["verdict"] == "rolled_back", again
        assert netns.read(SOMAXCONN) == start[SOMAXCONN]
        # Every kernel write is in the log (the log replays to what the kernel holds).
        for key in keys:
            assert _replayed(agent, key, start[key]) == netns.read(key), key
        assert "Traceback" not in agent.log.read_text()
    finally:
        agent.stop()
        auditfs.close()


# --- 3. refusals cannot fill the disk; the log's growth is bounded ------------------------

_FLOOD = """
import socket, sys
n = int(sys.argv[2])
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.recv(4096)
    s.close()
print(n)
"""


def _reachable_socket(agent: AgentProcess) -> Path:
    # A directory anyone may enter (pytest's own is 0700): the socket's mode decides.
    reachable = Path(tempfile.mkdtemp(prefix="kassist-flood-"))
    reachable.chmod(0o755)
    agent.socket = reachable / "agent.sock"
    return reachable


NOBODY = ("--reuid=nobody", "--regid=nogroup", "--clear-groups")
#: Another user, a member of nogroup by a supplementary group only.
DAEMON = ("--reuid=daemon", "--regid=daemon", "--groups=nogroup")
OUTSIDER = ("--reuid=nobody", "--regid=nogroup", "--clear-groups")


def _as_user(ids: tuple[str, ...], script: str, *args: str, **kw: Any) -> Any:
    require(shutil.which("setpriv") is not None, "needs setpriv (util-linux)")
    argv = ["setpriv", *ids, "/usr/bin/python3", "-c", script, *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, **kw)


def test_a_flood_of_refused_connections_cannot_fill_the_audit_disk(tmp_path: Path) -> None:
    # 5,000 refusals would be ~1.2 MB of lines: more than the audit log's file system.
    auditfs = Tmpfs(tmp_path / "auditfs", "1m")
    agent = _agent(tmp_path, None, ("--socket-mode", "0666", "--group", "kassist-no-group"))
    agent.audit = auditfs.path / "audit.jsonl"
    reachable = _reachable_socket(agent)
    flood = 5000
    try:
        agent.start()
        proc = _as_user(OUTSIDER, _FLOOD, str(agent.socket), str(flood))
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0 and int(out) == flood
        # Every refusal is accounted for (a line, or a count in a "suppressed" line) ...
        assert agent.wait_audited("refused", flood, "auth") == flood
        # ... and the disk keeps room for what must be written.
        st = os.statvfs(auditfs.path)
        assert st.f_bavail * st.f_frsize > 256 << 10, agent.audit.stat().st_size
        done = _call(agent, "apply", recommendations=rec(SOMAXCONN, 8192))
        assert done["verdict"] == "verified", done
        assert any(e["event"] == "write" for e in agent.audit_events())
    finally:
        agent.stop()
        auditfs.close()
        shutil.rmtree(reachable, ignore_errors=True)


def test_the_audit_log_stops_growing_at_its_cap_but_keeps_every_write(tmp_path: Path) -> None:
    cap = 20000
    agent = _agent(tmp_path, None, ("--audit-max-bytes", str(cap)))
    bad = rec(SOMAXCONN, 10**6)  # out of range: rejected, one bounded line each
    try:
        agent.start()
        conn = RawConnection(agent.socket)
        sent = 0

        def burst(n: int) -> None:
            nonlocal sent
            for i in range(n):
                conn.send({"op": "validate", "user_data": sent + i, "recommendations": bad})
            for _ in range(n):
                assert (conn.read() or {}).get("verdict") == "rejected"
            sent += n

        deadline = hang_deadline()
        while agent.audit.stat().st_size <= cap:
            assert time.monotonic() < deadline, agent.audit.stat().st_size
            burst(100)
            time.sleep(0.2)
        size = agent.audit.stat().st_size
        for _ in range(3):  # three more seconds of dry runs, all past the cap
            burst(500)
            time.sleep(1)
        assert agent.audit.stat().st_size - size < 2048  # one summary line at most
        done = _call(agent, "apply", recommendations=rec(SOMAXCONN, 8192))
        assert done["verdict"] == "verified", done
        events = agent.audit_events()
        assert [e["new"] for e in events if e["event"] == "write"] == ["8192"]
        assert any(e["event"] == "readback" for e in events)
        conn.close()
    finally:
        agent.stop()


# --- 4. recovery leaves an admin's value alone ----------------------------------------------


def test_recovery_marks_an_admins_change_overridden_and_leaves_it(
    tmp_path: Path, netns: NetNS
) -> None:
    agent = _agent(tmp_path, netns)
    try:
        was = netns.read(KEEPALIVE)  # 7200
        agent.start(env={"KASSIST_AGENT_FAULT": "write:0"})
        conn = RawConnection(agent.socket)
        conn.send({"op": "apply", "user_data": 1, "recommendations": rec(KEEPALIVE, 1800)})
        assert conn.read() is None  # killed after its write
        conn.close()
        agent.wait_dead()
        assert netns.read(KEEPALIVE) == "1800"
        netns.write(KEEPALIVE, "900")  # the admin's hand
        agent.start()
        assert netns.read(KEEPALIVE) == "900", f"snapshot {was} written over the admin's 900"
        cs = _call(agent, "history", id=1)["changeset"]
        assert cs["changes"][0]["state"] == "overridden", cs
        assert any(e["event"] == "overridden" for e in cs["events"]), cs["events"]
        assert any(e["event"] == "override" and e["found"] == "900" for e in agent.audit_events())
        assert "no longer manages it" in agent.log.read_text()
    finally:
        agent.stop()


# --- 5. blank lines are not activity; root keeps a reserve of connections -----------------

_HOLD = """
import select, socket, sys, time
path, n, blank = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
held, busy = [], 0
for _ in range(n):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    if select.select([s], [], [], 0.05)[0]:
        busy += 1  # a refusal came unasked
        s.close()
    else:
        held.append(s)
print(len(held), busy, flush=True)
if not blank:
    sys.stdin.read()  # hold them until the test closes our stdin
    sys.exit(0)
until = time.monotonic() + 6.0
while time.monotonic() < until:
    for s in held:
        try:
            s.sendall(b"\\n")
        except OSError:
            pass
    time.sleep(blank)
alive = 0
for s in held:
    s.setblocking(False)
    try:
        alive += s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        alive += 1  # nothing to read and not closed: still open
    except OSError:
        pass
print(alive, flush=True)
"""


def test_blank_lines_do_not_keep_a_connection_open(tmp_path: Path) -> None:
    agent = _agent(tmp_path, None, ("--group", "nogroup", "--idle-timeout", "2"))
    reachable = _reachable_socket(agent)
    try:
        agent.start()
        proc = _as_user(NOBODY, _HOLD, str(agent.socket), "8", "0.2", stdin=subprocess.DEVNULL)
        out, _ = proc.communicate(timeout=HANG_S)
        (held, busy), (alive,) = (map(int, line.split()) for line in out.splitlines())
        assert (held, busy) == (8, 0), out
        assert alive == 0, f"{alive} of 8 connections kept open by blank lines alone"
    finally:
        agent.stop()
        shutil.rmtree(reachable, ignore_errors=True)


def test_the_connection_cap_keeps_a_reserve_for_root(tmp_path: Path) -> None:
    # Two group members each take all they may; root must still get in.
    args = ("--group", "nogroup", "--max-connections", "16", "--max-per-peer", "8")
    agent = _agent(tmp_path, None, args)
    reachable = _reachable_socket(agent)
    procs: list[subprocess.Popen[str]] = []
    try:
        agent.start()
        for ids in (NOBODY, DAEMON):
            procs.append(_as_user(ids, _HOLD, str(agent.socket), "8", "0", stdin=subprocess.PIPE))
        held = [int(p.stdout.readline().split()[0]) for p in procs if p.stdout]
        assert 0 < sum(held) < 16, held
        reply = _call(agent, "status")  # root, while the members hold theirs
        assert reply["ok"] and reply["verdict"] == "ok", reply
    finally:
        for p in procs:
            if p.stdin:
                p.stdin.close()
            p.wait(HANG_S)
        agent.stop()
        shutil.rmtree(reachable, ignore_errors=True)


# --- 6. rollback since a time that is no time ------------------------------------------------


def test_rollback_since_the_future_infinity_or_nan_rolls_nothing_back(tmp_path: Path) -> None:
    agent = _agent(tmp_path, None)
    try:
        agent.start()
        assert _call(agent, "apply", recommendations=rec(SOMAXCONN, 8192))["ok"]
        future = _call(agent, "rollback", since=time.time() + 3600)
        assert future["verdict"] == "refused" and not future["ok"], future
        assert "nothing to roll back" in future["errors"][0]["message"]
        conn = RawConnection(agent.socket)
        for i, number in enumerate((b"Infinity", b"-Infinity", b"NaN", b"1e400")):
            conn.send(b'{"op":"rollback","user_data":%d,"since":%s}\n' % (i, number))
            reply = conn.read()
            assert reply is not None and reply["user_data"] == i, number
            assert reply["verdict"] == "malformed" and not reply["ok"], (number, reply)
            assert "finite number" in reply["errors"][0]["message"], reply
        conn.close()
        past = _call(agent, "rollback", since=time.time() - 3600)
        assert past["verdict"] == "rolled_back" and past["changesets"], past
        nothing = _call(agent, "rollback", since=time.time() - 3600)
        assert nothing["verdict"] == "nothing_to_roll_back", nothing
        assert nothing["changesets"] == []
        assert "somaxconn" not in json.dumps(nothing)
        assert (tmp_path / "proc_sys/net/core/somaxconn").read_text().strip() == "4096"
    finally:
        agent.stop()


# --- 11. security order is not numeric order ------------------------------------------------


def test_the_baseline_ranks_unprivileged_bpf_disabled_1_above_2(tmp_path: Path) -> None:
    proc_sys, sys_root = fake_roots(tmp_path)
    roots = Roots(proc_sys, sys_root)
    key = "kernel.unprivileged_bpf_disabled"
    policy = policy_from_dict(
        {"allow": [key], "keys": {key: {"type": "int", "min": 0, "max": 2}}}, "test"
    )
    path = proc_sys / "kernel/unprivileged_bpf_disabled"

    def rules(now: int, value: int) -> list[str]:
        path.write_text(f"{now}\n")
        recs, _ = parse_recommendations(rec(key, value))
        return [e.rule for e in validate(recs, policy, roots)[1]]

    assert rules(2, 1) == []  # the stricter, permanent setting
    assert rules(1, 2) == ["baseline"]
    assert rules(2, 0) == ["baseline"]
    assert rules(0, 2) == []
    assert policy.table()[0] != {}
    order = {r["pattern"]: r.get("order") for r in policy.table() if r["action"] == "baseline"}
    assert order[key] == [0, 2, 1]


def test_a_policy_may_order_its_own_baseline_keys_but_not_reorder_kassists(
    tmp_path: Path,
) -> None:
    from actions.errors import ActionError

    doc = {"baseline": {"keys": ["vm.mmap_min_addr"], "order": {"vm.mmap_min_addr": [0, 65536]}}}
    assert policy_from_dict(doc, "t").baseline_order["vm.mmap_min_addr"] == (0, 65536)
    weaker = {"baseline": {"order": {"kernel.unprivileged_bpf_disabled": [1, 2, 0]}}}
    with pytest.raises(ActionError, match="cannot be changed"):
        policy_from_dict(weaker, "t")


# --- issue 23: the daemon has no fault injection of its own ---------------------------------


def test_the_daemon_reads_no_fault_injection_variable(tmp_path: Path) -> None:
    agent = _agent(tmp_path, None)
    agent.env["KASSIST_AGENT_FAULT"] = "applying"  # what used to make the daemon SIGKILL itself
    try:
        agent.start()
        done = _call(agent, "apply", recommendations=rec(SOMAXCONN, 8192))
        assert done["verdict"] == "verified", done
        assert agent.proc is not None and agent.proc.poll() is None
    finally:
        agent.stop()
    for path in (ROOT / "actions").rglob("*.py"):
        text = path.read_text()
        assert "environ" not in text and "getenv" not in text, path
