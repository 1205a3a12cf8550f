"""The applier in-process against fake /proc/sys and /sys trees: sysfs knobs, vm.* keys
(never written for real in tests), the journal, the audit log and overrides."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.agent import Agent, Paths
from actions.knobs import Roots, resolve
from actions.policy import load_policy, policy_from_dict
from tests.agent_support import fake_roots, plain, rec

WHO = {"uid": 0, "gid": 0, "pid": 1, "user": "root"}


def _agent(tmp: Path, policy_doc: dict[str, Any] | None = None) -> Agent:
    proc_sys, sys_root = fake_roots(tmp)
    policy = load_policy() if policy_doc is None else policy_from_dict(policy_doc, "test")
    paths = Paths(tmp / "state/journal.db", tmp / "log/audit.jsonl", tmp / "90-kassist.conf")
    return Agent(policy, paths, Roots(proc_sys, sys_root), journald="/nonexistent")


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    a = _agent(tmp_path)
    yield a
    a.close()


def _read(agent: Agent, kind: str, target: str) -> str:
    return resolve(kind, target, agent.roots).read()


def test_sysfs_knobs_apply_verify_and_roll_back(agent: Agent) -> None:
    recs = [
        rec("block/vda/queue/scheduler", "bfq", kind="sysfs", id="a"),
        rec("block/vda/queue/read_ahead_kb", 512, kind="sysfs", id="b"),
        rec("block/vda/queue/nr_requests", 128, kind="sysfs", id="c"),
        rec("kernel/mm/transparent_hugepage/enabled", "never", kind="sysfs", id="d"),
        rec("kernel/mm/transparent_hugepage/defrag", "defer", kind="sysfs", id="e"),
        rec(
            "devices/system/cpu/cpu0/cpufreq/scaling_governor", "performance", kind="sysfs", id="f"
        ),
    ]
    before = {r["target"]: _read(agent, "sysfs", r["target"]) for r in recs}
    assert before["block/vda/queue/scheduler"] == "mq-deadline"
    done = plain(agent.apply(recs, WHO, persist=True))
    assert done["ok"] and done["verdict"] == "verified", done
    assert {r["target"]: _read(agent, "sysfs", r["target"]) for r in recs} == {
        r["target"]: str(r["value"]) for r in recs
    }
    assert len(done["notices"]) == len(recs)  # sysfs is never persisted: it says so
    assert not agent.paths.sysctl_conf.exists()
    back = plain(agent.rollback(WHO, done["changeset"]["id"]))
    assert back["ok"], back
    assert {r["target"]: _read(agent, "sysfs", r["target"]) for r in recs} == before


def test_vm_keys_only_in_the_fake_tree(agent: Agent) -> None:
    recs = [rec("vm.dirty_ratio", 30, id="a"), rec("vm.dirty_background_ratio", 5, id="b")]
    done = plain(agent.apply(recs, WHO))
    assert done["ok"], done
    assert (agent.roots.proc_sys / "vm/dirty_ratio").read_text().strip() == "30"
    assert plain(agent.rollback(WHO, done["changeset"]["id"]))["ok"]
    assert (agent.roots.proc_sys / "vm/dirty_ratio").read_text().strip() == "20"
    assert (agent.roots.proc_sys / "vm/dirty_background_ratio").read_text().strip() == "10"


def test_a_rejected_changeset_writes_nothing(agent: Agent) -> None:
    recs = [rec("vm.dirty_ratio", 30, id="a"), rec("vm.swappiness", 1000, id="b")]
    done = plain(agent.apply(recs, WHO))
    assert done["verdict"] == "rejected" and done["changeset"] is None
    assert (agent.roots.proc_sys / "vm/dirty_ratio").read_text().strip() == "20"
    assert (
        plain(agent.history())["changesets"] == []
    )  # rejected submissions are audited, not journaled
    events = [json.loads(x) for x in agent.paths.audit.read_text().splitlines()]
    assert [e["verdict"] for e in events if e["event"] == "verdict"] == ["rejected"]


def test_the_rate_limit_counts_the_journal(tmp_path: Path) -> None:
    doc = {"allow": ["net.core.somaxconn"], "max_changes_per_hour": 2}
    agent = _agent(tmp_path, doc)
    try:
        assert plain(agent.apply(rec("net.core.somaxconn", 5000), WHO))["ok"]
        assert plain(agent.apply(rec("net.core.somaxconn", 6000), WHO))["ok"]
        third = plain(agent.apply(rec("net.core.somaxconn", 7000), WHO))
        assert third["verdict"] == "rejected" and third["errors"][0]["rule"] == "rate"
        assert plain(agent.rollback(WHO, 2))["ok"]  # a rollback is never rate-limited
        assert _read(agent, "sysctl", "net.core.somaxconn") == "5000"
    finally:
        agent.close()
    restarted = Agent(agent.policy, agent.paths, agent.roots, journald="/nonexistent")
    try:  # a restart does not reset the count: it is read back from the journal
        again = plain(restarted.apply(rec("net.core.somaxconn", 7000), WHO))
        assert again["errors"][0]["rule"] == "rate"
    finally:
        restarted.close()


def test_overrides_are_detected_and_never_fought(agent: Agent) -> None:
    done = plain(agent.apply(rec("vm.swappiness", 30), WHO))
    assert done["ok"]
    (agent.roots.proc_sys / "vm/swappiness").write_text("45\n")  # the admin's own change
    notices = agent.check_overrides()
    assert notices == [
        "vm.swappiness was changed to 45 by someone else after changeset 1 set 30; "
        "kassist no longer manages it"
    ]
    assert agent.check_overrides() == []  # reported once, then no longer managed
    status = plain(agent.status())["status"]
    assert status["managed"] == [] and status["overridden"][0]["target"] == "vm.swappiness"
    back = plain(agent.rollback(WHO, 1))  # it says it restored nothing (issue 17)
    assert not back["ok"] and back["verdict"] == "not_restored", back
    assert "vm.swappiness: not restored" in back["errors"][0]["message"]
    assert (agent.roots.proc_sys / "vm/swappiness").read_text() == "45\n"
    audit = [json.loads(x)["event"] for x in agent.paths.audit.read_text().splitlines()]
    assert "override" in audit


def test_the_journal_is_sqlite_in_wal_mode_with_old_and_new_values(agent: Agent) -> None:
    done = plain(
        agent.apply(rec("net.core.somaxconn", 8192, rationale="queue overflows: see nstat"), WHO)
    )
    assert done["ok"]
    db = sqlite3.connect(agent.paths.journal)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = db.execute("SELECT old, new, rationale, evidence FROM changes").fetchone()
    assert row[:3] == ("4096", "8192", "queue overflows: see nstat")
    assert json.loads(row[3]) == rec("x", 1)["evidence"]
    states = [r[0] for r in db.execute("SELECT event FROM events ORDER BY id")]
    assert states == ["validated", "applying", "applied", "verified"]
    who = json.loads(db.execute("SELECT who FROM changesets").fetchone()[0])
    assert who == WHO


def test_a_new_agent_reads_the_same_journal(tmp_path: Path) -> None:
    first = _agent(tmp_path)
    assert plain(first.apply(rec("net.core.somaxconn", 8192), WHO))["ok"]
    first.close()
    policy = load_policy()
    second = Agent(policy, first.paths, first.roots, journald="/nonexistent")
    try:
        assert second.recover() == []  # nothing was left in flight
        assert plain(second.status())["status"]["managed"][0]["target"] == "net.core.somaxconn"
        assert plain(second.rollback(WHO, 1))["ok"]
        assert (first.roots.proc_sys / "net/core/somaxconn").read_text().strip() == "4096"
    finally:
        second.close()


def test_audit_lines_also_go_to_journald_when_it_listens(tmp_path: Path) -> None:
    import socket

    from actions.audit import Audit

    journal = tmp_path / "journal.socket"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(journal))
    server.settimeout(5)
    audit = Audit(tmp_path / "audit.jsonl", journald=str(journal))
    try:
        audit.record("write", target="net.core.somaxconn", new="8192")
        fields = dict(line.split("=", 1) for line in server.recv(65536).decode().splitlines())
    finally:
        audit.close()
        server.close()
    assert fields["SYSLOG_IDENTIFIER"] == "kassist-agent"
    assert fields["KASSIST_EVENT"] == "write"
    assert json.loads(fields["MESSAGE"])["target"] == "net.core.somaxconn"
    line = json.loads((tmp_path / "audit.jsonl").read_text())
    assert line["event"] == "write" and line["new"] == "8192"


def test_the_shipped_unit_is_hardened_and_can_do_its_job() -> None:
    from importlib import resources

    text = resources.files("actions").joinpath("data/kassist-agent.service").read_text()
    settings = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    assert settings["NoNewPrivileges"] == "yes"
    assert settings["ProtectSystem"] == "strict"
    assert set(settings["CapabilityBoundingSet"].split()) == {
        "CAP_SYS_ADMIN",
        "CAP_NET_ADMIN",
        "CAP_CHOWN",
    }
    assert "kassist-agent serve" in settings["ExecStart"]
    assert int(settings["LimitNOFILE"]) >= 1024
    # It must write the host's /proc/sys: no private network, no read-only tunables.
    assert settings.get("PrivateNetwork", "no") == "no"
    assert settings.get("ProtectKernelTunables", "no") == "no"
