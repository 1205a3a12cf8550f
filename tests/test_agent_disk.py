"""Fault injection, full disks: the journal's or the audit log's file system (or both) fills
up at every step of an apply and of a rollback, with the agent's disk reserve and
without it.

The journal and the audit log live on small tmpfs mounts; the fault hook of the test
entry point (``tests/agent_entry.py``, ``fill:<step>``) fills one of them at the step,
until the kernel says ``ENOSPC`` (the audit log padded to a page boundary first, so
that its very next line meets it). After the operation, then after the disk is freed and
the agent has settled, then after a SIGKILL and a restart, every check holds:

- one completion for the entry, and what it says is what the kernel holds;
- kernel = journal: every key holds what the journal says (nothing left in flight once
  the disk has room again);
- no key regressed: what the completion said stays true through recovery;
- the audit log is complete: replaying its writes and restores gives the kernel's values.

Real sysctl writes, in a private network namespace (``net.*`` keys only).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actions.agent import Agent, Paths, Storage
from actions.errors import StorageError
from actions.knobs import Roots
from actions.policy import load_policy
from tests.agent_support import (
    AgentProcess,
    NetNS,
    RawConnection,
    Tmpfs,
    fake_roots,
    in_netns,
    netns_held,
    rec,
)
from tests.conftest import HANG_S, require

netns = pytest.fixture(netns_held, name="netns")

POLICY = """
version = 1
max_changes_per_hour = 1000
allow = ["net.core.somaxconn", "net.ipv4.tcp_fin_timeout"]
"""
KEYS = ("net.core.somaxconn", "net.ipv4.tcp_fin_timeout")
APPLY_STEPS = ("validated", "applying", "write:0", "write:1", "applied", "verified")
ROLLBACK_STEPS = ("rolling_back", "undo:0", "undo:1", "rolled_back")
FINAL = ("verified", "rolled_back", "failed")


def _one_completion(agent: AgentProcess, entry: dict[str, Any]) -> dict[str, Any]:
    conn = RawConnection(agent.socket)
    try:
        conn.send({**entry, "user_data": "the-one"})
        reply = conn.read()
        assert reply is not None and reply["user_data"] == "the-one", reply
        conn.sock.shutdown(1)
        assert conn.read() is None  # no second completion
        return reply
    finally:
        conn.close()


def _journal_says(db: Path) -> tuple[dict[str, str], list[str]]:
    # Key -> what the journal says it holds (the change managing it, else the snapshot of
    # the change restored last), and the changesets still in flight.
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=HANG_S)
    rows = conn.execute(
        "SELECT changes.target, changes.old, changes.new, changes.state, changesets.id,"
        " changesets.state FROM changes JOIN changesets ON changesets.id = changeset_id"
        " ORDER BY changesets.id"
    ).fetchall()
    conn.close()
    says: dict[str, str] = {}
    for target, old, _, state, _, _ in rows:
        if state == "rolled_back":
            says[target] = old
    for target, _, new, state, _, _ in rows:
        if state == "verified":
            says[target] = new
    inflight = sorted({f"{cs} {cs_state}" for *_, cs, cs_state in rows if cs_state not in FINAL})
    return says, inflight


def _replayed(agent: AgentProcess, start: dict[str, str]) -> dict[str, str]:
    value = dict(start)
    for e in agent.audit_events():
        if e.get("target") not in value:
            continue
        if e["event"] == "write" and e.get("ok"):
            value[e["target"]] = str(e["new"])
        elif e["event"] == "restore":
            value[e["target"]] = str(e["got"])
    return value


def _check(
    agent: AgentProcess, netns: NetNS, expect: dict[str, str], start: dict[str, str], when: str
) -> None:
    kernel = {k: netns.read(k) for k in KEYS}
    assert kernel == expect, f"{when}: the kernel holds {kernel}, the completion said {expect}"
    says, inflight = _journal_says(agent.state / "journal.db")
    assert inflight == [], f"{when}: still in flight: {inflight}"
    assert {k: says.get(k, start[k]) for k in KEYS} == kernel, f"{when}: journal {says}"


@pytest.mark.parametrize(
    ("full", "reserve"),
    [
        ("journal", "reserve"),
        ("journal", "no-reserve"),
        ("audit", "reserve"),
        ("audit", "no-reserve"),
        ("both", "no-reserve"),
    ],
)
@pytest.mark.parametrize("step", [*APPLY_STEPS, *ROLLBACK_STEPS])
def test_a_disk_full_at_any_step_loses_nothing(
    tmp_path: Path, netns: NetNS, step: str, full: str, reserve: str
) -> None:
    state = Tmpfs(tmp_path / "state", "2m")
    auditfs = Tmpfs(tmp_path / "auditfs", "1m")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    args = () if reserve == "reserve" else ("--disk-reserve", "0")
    agent = AgentProcess(tmp_path, netns, policy=policy, args=args)
    agent.audit = auditfs.path / "audit.jsonl"
    filled = {"journal": [state], "audit": [auditfs], "both": [state, auditfs]}[full]
    try:
        start = {k: netns.read(k) for k in KEYS}
        new = {KEYS[0]: str(2 * int(start[KEYS[0]])), KEYS[1]: str(int(start[KEYS[1]]) // 2)}
        recs = [rec(k, int(v), id=f"r{i}") for i, (k, v) in enumerate(new.items())]
        fill = ":".join(str(fs.path) for fs in filled)
        agent.start(env={"KASSIST_AGENT_FAULT": f"fill:{step}", "KASSIST_AGENT_FILL": fill})
        if step in ROLLBACK_STEPS:
            assert _one_completion(agent, {"op": "apply", "recommendations": recs})["ok"]
            before = new
            done = _one_completion(agent, {"op": "rollback", "id": 1})
            said = start if done["verdict"] == "rolled_back" else new
            assert done["verdict"] in ("rolled_back", "refused", "failed"), done
        else:
            before = start
            done = _one_completion(agent, {"op": "apply", "recommendations": recs})
            said = new if done["verdict"] == "verified" else start
            assert done["verdict"] in ("verified", "refused", "failed"), done
        assert any(e["event"] == "fault-injection" for e in agent.audit_events())
        kernel = {k: netns.read(k) for k in KEYS}
        assert kernel == said, f"the completion {done['verdict']} but the kernel holds {kernel}"
        assert said in (before, start, new)
        if reserve == "reserve":  # the reserve took the operation's records: all recorded
            _check(agent, netns, said, start, f"right after a full {full} at {step}")
        for fs in filled:
            fs.free()
        status = _one_completion(agent, {"op": "status"})  # the agent settles first
        assert status["ok"], status
        _check(agent, netns, said, start, f"settled after a full {full} at {step}")
        assert _replayed(agent, start) == said, "a kernel write the audit log does not have"
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGKILL)
        agent.wait_dead()
        agent.start()
        _check(agent, netns, said, start, f"restarted after a full {full} at {step}")
        assert _replayed(agent, start) == said
        assert "Traceback" not in agent.log.read_text()
    finally:
        agent.stop()
        state.close()
        auditfs.close()


def test_a_rollback_undone_while_the_journal_is_full_stays_undone(tmp_path: Path) -> None:
    # The kernel refuses one restore (an immutable file), so the rollback puts back what it
    # wrote; the journal, full since the rollback began, cannot record that: once it can,
    # the changeset is verified again, never rolled back behind the operator's back.
    require(shutil.which("chattr") is not None, "needs chattr (e2fsprogs)")
    proc_sys, sys_root = fake_roots(tmp_path)
    state = Tmpfs(tmp_path / "state", "1m")
    paths = Paths(state.path / "journal.db", tmp_path / "audit.jsonl", tmp_path / "c.conf")
    agent = Agent(load_policy(), paths, Roots(proc_sys, sys_root), storage=Storage(reserve=0))
    som, fin = proc_sys / "net/core/somaxconn", proc_sys / "net/ipv4/tcp_fin_timeout"
    who = {"uid": 0, "gid": 0, "pid": 1, "user": "root"}
    try:
        recs = [rec("net.core.somaxconn", 8192), rec("net.ipv4.tcp_fin_timeout", 30, id="r2")]
        assert agent.apply(recs, who).verdict == "verified"

        def fill_on_rollback(step: str, _: int) -> None:
            if step == "rolling_back":
                state.fill()

        agent.on_step = fill_on_rollback
        locked = subprocess.run(["chattr", "+i", str(som)], capture_output=True, check=False)
        require(locked.returncode == 0, f"chattr +i not supported here: {locked.stderr!r}")
        try:
            back = agent.rollback(who, 1)
        finally:
            subprocess.run(["chattr", "-i", str(som)], check=True)
        assert back.verdict == "failed" and "the rollback was undone" in back.errors[0].message
        assert (som.read_text().strip(), fin.read_text().strip()) == ("8192", "30")
        _, inflight = _journal_says(paths.journal)
        assert inflight == ["1 rolling_back"]  # the journal could not record the undo
        state.free()
        assert agent.status().ok  # settles: the journal can record again
        cs = agent.history(1).changeset
        assert cs is not None and cs.state == "verified", cs
        agent.close()
        agent = Agent(load_policy(), paths, Roots(proc_sys, sys_root))
        assert agent.recover() == []  # nothing left in flight
        assert (som.read_text().strip(), fin.read_text().strip()) == ("8192", "30")
    finally:
        agent.close()
        state.close()


def test_its_own_change_left_in_flight_is_no_override_while_the_audit_disk_is_full(
    tmp_path: Path, netns: NetNS
) -> None:
    # Changeset 1 sets a key (verified); changeset 2 on the same key is killed after its
    # write; the agent restarts with the audit log's disk full, so recovery must wait. The
    # key holds changeset 2's value: the agent's own, not someone else's change, so
    # changeset 1 must not be marked overridden meanwhile (a soak found it was).
    auditfs = Tmpfs(tmp_path / "auditfs", "1m")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    agent = AgentProcess(tmp_path, netns, policy=policy, args=("--disk-reserve", "0"))
    agent.audit = auditfs.path / "audit.jsonl"
    key = KEYS[0]
    try:
        start = {k: netns.read(k) for k in KEYS}
        first, second = 2 * int(start[key]), 4 * int(start[key])
        agent.start()
        done = _one_completion(agent, {"op": "apply", "recommendations": [rec(key, first)]})
        assert done["verdict"] == "verified", done
        agent.stop()
        agent.start(env={"KASSIST_AGENT_FAULT": "write:0"})
        conn = RawConnection(agent.socket)
        conn.send({"op": "apply", "user_data": 2, "recommendations": [rec(key, second)]})
        assert conn.read() is None  # killed after its write
        conn.close()
        agent.wait_dead()
        assert netns.read(key) == str(second)
        auditfs.fill()
        agent.start()
        _one_completion(agent, {"op": "status"})  # overrides are checked between operations
        db = sqlite3.connect(f"file:{agent.state / 'journal.db'}?mode=ro", uri=True, timeout=HANG_S)
        states = dict(db.execute("SELECT changeset_id, state FROM changes").fetchall())
        db.close()
        assert states[1] != "overridden", states
        auditfs.free()
        assert _one_completion(agent, {"op": "status"})["ok"]  # settles: recovery runs
        _check(agent, netns, {**start, key: str(first)}, start, "recovered")
    finally:
        agent.stop()
        auditfs.close()


class _Killed(BaseException):
    """The agent's process dies here (nothing after this step runs, nothing is caught)."""


def _at(at: str, do: Callable[[], object]) -> Callable[[str, int], None]:
    """A step hook that calls ``do`` at step ``at`` (fills or frees a disk there)."""

    def hook(step: str, _: int) -> None:
        if step == at:
            do()

    return hook


def _raise_at(at: str, error: type[BaseException] = _Killed) -> Callable[[str, int], None]:
    """A step hook that raises ``error`` at step ``at`` (by default: the process dies)."""

    def hook(step: str, _: int) -> None:
        if step == at:
            raise error(step)

    return hook


def _rows(journal: Path) -> dict[tuple[int, str], str]:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=HANG_S)
    try:
        rows = db.execute(
            "SELECT changeset_id, target, changes.state, changesets.state FROM changes"
            " JOIN changesets ON changesets.id = changeset_id"
        ).fetchall()
    finally:
        db.close()
    return {(cs, target): f"{cs_state}/{state}" for cs, target, state, cs_state in rows}


def test_a_rollback_recovery_could_not_record_is_no_override(tmp_path: Path, netns: NetNS) -> None:
    # Changeset 1 sets a key, changeset 2 sets it again (1 superseded); the agent dies in
    # the middle of rolling 2 back, after the key got 1's value back. On restart the journal
    # is full: recovery finishes the rollback in the kernel but cannot record it, and the
    # disk is freed right after (another process's file removed), so recovery's next
    # record goes through. The agent must still know that changeset 2 is unsettled: the
    # key holds its own snapshot, not someone else's change (the soak once marked such a
    # key overridden, and the agent stopped managing it).
    state = Tmpfs(tmp_path / "state", "2m")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    paths = Paths(state.path / "journal.db", tmp_path / "audit.jsonl", tmp_path / "c.conf")
    who = {"uid": 0, "gid": 0, "pid": 1, "user": "root"}
    key = KEYS[0]

    def agent() -> Agent:
        return Agent(load_policy(policy), paths, storage=Storage(reserve=0))

    def scenario() -> tuple[str, str, dict[tuple[int, str], str], list[str], str]:
        start = netns.read(key)
        first = agent()
        try:
            assert first.apply([rec(key, 2 * int(start))], who).verdict == "verified"
            assert first.apply([rec(key, 4 * int(start))], who).verdict == "verified"
            first.on_step = _raise_at("undo:0")
            with pytest.raises(_Killed):
                first.rollback(who, 2)
        finally:
            first.close()
        assert netns.read(key) == str(2 * int(start))  # the rollback's write happened
        second = agent()
        try:
            state.fill()
            second.on_step = _at("rolled_back", state.free)
            with contextlib.suppress(StorageError):  # the daemon serves; settles later
                second.recover()
            notices = second.check_overrides()  # the daemon's next check, disk free again
            settled = second.status()  # settles what is left, then checks again
            assert settled.status is not None and settled.status.overridden == [], settled
        finally:
            second.close()
        third = agent()  # and a restart recovers nothing more
        try:
            third.recover()
        finally:
            third.close()
        return start, netns.read(key), _rows(paths.journal), notices, str(2 * int(start))

    try:
        start, kernel, rows, notices, first_value = in_netns(netns, scenario)
    finally:
        state.close()
    assert notices == []
    assert rows == {(1, key): "verified/verified", (2, key): "rolled_back/rolled_back"}, rows
    assert kernel == first_value != start


def _in_process(tmp_path: Path, state: Tmpfs) -> tuple[Callable[[], Agent], Paths]:
    # An agent in this process (journal on the small tmpfs, no reserve); in_netns runs it.
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    paths = Paths(state.path / "journal.db", tmp_path / "audit.jsonl", tmp_path / "c.conf")
    return (lambda: Agent(load_policy(policy), paths, storage=Storage(reserve=0))), paths


ROOT_WHO = {"uid": 0, "gid": 0, "pid": 1, "user": "root"}


@pytest.mark.parametrize("op", ["apply", "rollback"])
def test_a_full_journal_after_the_kernel_is_written_never_turns_a_done_change_into_an_error(
    tmp_path: Path, netns: NetNS, op: str
) -> None:
    # A persisted changeset: the journal fills right after it recorded "verified" (or
    # "rolled_back"), when only the note that the sysctl.d file was written is left. The
    # change is done: the answer says so (not an internal error), the file follows the
    # journal, and once the disk has room the journal records it: nothing left behind.
    state = Tmpfs(tmp_path / "state", "2m")
    make, paths = _in_process(tmp_path, state)
    key = KEYS[0]

    def scenario() -> tuple[str, str, list[str], str, list[str]]:
        start = netns.read(key)
        agent = make()
        try:
            full_at = "verified" if op == "apply" else "rolled_back"
            if op == "rollback":
                assert agent.apply([rec(key, 2 * int(start))], ROOT_WHO, True).ok
            agent.on_step = _at(full_at, state.fill)
            if op == "apply":
                done = agent.apply([rec(key, 2 * int(start))], ROOT_WHO, persist=True)
            else:
                done = agent.rollback(ROOT_WHO, 1)
            agent.on_step = None
            file_then = paths.sysctl_conf.read_text() if paths.sysctl_conf.exists() else ""
            state.free()
            assert agent.status().ok  # settles
            events = [e["event"] for e in agent.history(1).changeset.events]  # type: ignore[union-attr]
        finally:
            agent.close()
        return done.verdict, file_then, done.notices, netns.read(key), events

    try:
        verdict, file_then, notices, kernel, events = in_netns(netns, scenario)
    finally:
        state.close()
    if op == "apply":
        assert verdict == "verified", (verdict, notices)
        assert f"{key} = " in file_then and kernel != "" and events.count("persisted") == 1
    else:
        assert verdict == "rolled_back", (verdict, notices)
        assert f"{key} = " not in file_then and events[-1] == "rolled_back"
    assert any("once space is back" in n for n in notices), notices


def test_a_full_journal_in_the_middle_of_a_rollback_leaves_nothing_unsettled(
    tmp_path: Path, netns: NetNS
) -> None:
    # Rolling back two keys: the admin sets one by hand and the journal fills just as the
    # rollback begins, so noting that key as overridden cannot be recorded. The answer
    # still comes, names the key left alone, and the rest is restored; once the disk has
    # room the journal says the same (the override recorded once, nothing in flight).
    state = Tmpfs(tmp_path / "state", "2m")
    make, paths = _in_process(tmp_path, state)

    def scenario() -> tuple[dict[str, str], dict[str, str], Any, dict[tuple[int, str], str], int]:
        start = {k: netns.read(k) for k in KEYS}
        agent = make()
        try:
            recs = [rec(KEYS[0], 2 * int(start[KEYS[0]])), rec(KEYS[1], 30, id="r2")]
            assert agent.apply(recs, ROOT_WHO).verdict == "verified"

            def admin_then_full(step: str, _: int) -> None:
                if step == "rolling_back":
                    netns.write(KEYS[0], "1000")
                    state.fill()

            agent.on_step = admin_then_full
            done = agent.rollback(ROOT_WHO, 1)
            agent.on_step = None
            state.free()
            assert agent.status().ok  # settles
        finally:
            agent.close()
        overrides = sum(e["event"] == "override" for e in _audit(paths.audit))
        return start, {k: netns.read(k) for k in KEYS}, done, _rows(paths.journal), overrides

    try:
        start, kernel, done, rows, overrides = in_netns(netns, scenario)
    finally:
        state.close()
    assert done.verdict == "partly_rolled_back", done
    assert [e.target for e in done.errors] == [KEYS[0]]
    assert kernel == {KEYS[0]: "1000", KEYS[1]: start[KEYS[1]]}
    assert rows == {
        (1, KEYS[0]): "rolled_back/overridden",
        (1, KEYS[1]): "rolled_back/rolled_back",
    }, rows
    assert overrides == 1


def _audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("op", ["apply", "rollback"])
def test_an_error_nobody_expected_mid_operation_is_settled_before_anything_else(
    tmp_path: Path, netns: NetNS, op: str
) -> None:
    # Changeset 1 manages a key; an apply (or a rollback) on it dies of an unexpected error
    # just after its write (the daemon answers "error" and serves on). Its changeset is in
    # flight: the next operation must settle it (undo the apply's write, finish the
    # rollback) before it checks overrides, never mark changeset 1 overridden.
    state = Tmpfs(tmp_path / "state", "2m")
    make, paths = _in_process(tmp_path, state)
    key = KEYS[0]

    class Unexpected(Exception):
        pass

    def scenario() -> tuple[str, str, dict[tuple[int, str], str]]:
        start = netns.read(key)
        agent = make()
        try:
            assert agent.apply([rec(key, 2 * int(start))], ROOT_WHO).verdict == "verified"
            if op == "rollback":
                assert agent.apply([rec(key, 4 * int(start))], ROOT_WHO).verdict == "verified"
            agent.on_step = _raise_at("write:0" if op == "apply" else "undo:0", Unexpected)
            with pytest.raises(Unexpected):
                if op == "apply":
                    agent.apply([rec(key, 4 * int(start))], ROOT_WHO)
                else:
                    agent.rollback(ROOT_WHO, 2)
            agent.on_step = None
            agent.check_overrides()  # the daemon's periodic check
            status = agent.status()
            assert status.status is not None and status.status.overridden == [], status
        finally:
            agent.close()
        return start, netns.read(key), _rows(paths.journal)

    try:
        start, kernel, rows = in_netns(netns, scenario)
    finally:
        state.close()
    assert kernel == str(2 * int(start))
    assert rows[(1, key)] == "verified/verified", rows
    assert rows[(2, key)] in ("rolled_back/rolled_back", "failed/failed"), rows


def test_a_sysctl_d_file_that_could_not_be_written_follows_the_journal_once_it_can(
    tmp_path: Path, netns: NetNS
) -> None:
    # Of two persisted changesets, the later is rolled back while the sysctl.d directory's
    # disk is full: the file still names its key, so the next boot would set the rolled-back value
    # again (a regression nobody asked for). The rollback says so; once the disk has room
    # the agent rewrites the file by itself (before the next operation, or the daemon's
    # periodic settle), not only on its next start, and no temporary file is left behind.
    confs = Tmpfs(tmp_path / "sysctl.d", "1m")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    paths = Paths(tmp_path / "state" / "journal.db", tmp_path / "audit.jsonl",
                  confs.path / "90-kassist.conf")  # fmt: skip
    key = KEYS[0]

    def scenario() -> tuple[list[str], bool, bool, list[str]]:
        start = netns.read(key)
        agent = Agent(load_policy(policy), paths)
        agent.persist_retry = 0.0  # seconds between tries (the daemon's default: 30)
        try:
            assert agent.apply([rec(KEYS[1], 30)], ROOT_WHO, persist=True).ok
            assert agent.apply([rec(key, 2 * int(start))], ROOT_WHO, persist=True).ok
            assert f"{key} = " in paths.sysctl_conf.read_text()
            confs.fill()
            back = agent.rollback(ROOT_WHO, 2)
            assert back.verdict == "rolled_back", back
            stale = f"{key} = " in paths.sysctl_conf.read_text()
            confs.free()
            agent.settle()
            text = paths.sysctl_conf.read_text()
            now = f"{key} = " in text or f"{KEYS[1]} = 30" not in text
        finally:
            agent.close()
        left = sorted(p.name for p in confs.path.iterdir() if p.name.endswith(".tmp"))
        return back.notices, stale, now, left

    try:
        notices, stale, now, left = in_netns(netns, scenario)
    finally:
        confs.close()
    assert any("could not write" in n for n in notices), notices
    assert stale  # what the full disk left
    assert not now, "the file still sets the rolled-back value after the disk had room"
    assert left == [], left
