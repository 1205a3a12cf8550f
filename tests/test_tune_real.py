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

from tests.agent_support import AgentProcess
from tests.conftest import hang_deadline, require, run_kassist
from tests.tune_support import (
    CONNTRACK_FLOOD,
    FORK_UNTIL_EAGAIN,
    INOTIFY_INSTANCES,
    LISTEN_FLOOD,
    NEIGH_FLOOD,
    SHORT_CONNECTIONS,
    THRASH,
    UDP_FLOOD,
    UNTIL_STOPPED,
    TuneNetNS,
    finish,
    make_cgroup,
    private_netns,
    proposals,
    remove_cgroup,
    running,
    tune,
)


@pytest.fixture
def netns() -> Iterator[TuneNetNS]:
    with private_netns() as ns:
        yield ns


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # tune keeps its last run for --explain under XDG_STATE_HOME.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path


def _agent(tmp: Path, ns: TuneNetNS | None, policy: Path | None = None) -> AgentProcess:
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


def _tune(ns: TuneNetNS | None, *args: str) -> dict[str, Any]:
    # One window of 2 s (of the namespace, when there is one), checked against its exit code.
    where = ["--netns", str(ns.holder.pid)] if ns is not None else []
    code, doc, _ = tune(*where, "--interval", "2", *args)
    assert code == (3 if doc["recommendations"] else 0)
    return doc


# --- the closed loop ---------------------------------------------------------------------


def _apply(ns: TuneNetNS, agent: AgentProcess, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run ``kassist tune --apply`` over a 2-second window of the namespace."""
    where = ["--netns", str(ns.holder.pid), "--interval", "2", "--socket", str(agent.socket)]
    return run_kassist(["tune", *where, "--apply", *extra])


def _overflows(ns: TuneNetNS, clients: int = 400) -> int:
    before = ns.netstat("ListenOverflows")
    finish(ns.spawn(LISTEN_FLOOD, str(clients), "3"))
    return ns.netstat("ListenOverflows") - before


def test_closed_loop_listen_overflow(netns: TuneNetNS, state: Path) -> None:
    netns.write("net.core.somaxconn", "128")
    agent = _agent(state, netns)  # the built-in default policy
    try:
        before = _overflows(netns)
        with running(LISTEN_FLOOD, "400", UNTIL_STOPPED, "5", ns=netns):  # new clients all along
            doc = _tune(netns)
        somaxconn = proposals(doc, "listen-overflow")["net.core.somaxconn"]
        assert somaxconn["direction"] == "up" and somaxconn["status"] == "recommended"
        assert somaxconn["current"] == 128 and somaxconn["value"] == 512
        assert_agent_accepts(doc, agent)
        # Apply through the agent (tune observes again, under the same workload): without a
        # terminal and without --yes it refuses; with --yes it applies.
        with running(LISTEN_FLOOD, "300", UNTIL_STOPPED, "5", ns=netns):
            asked = _apply(netns, agent)
            assert asked.returncode == 2 and "needs a person's approval" in asked.stderr
            assert netns.read("net.core.somaxconn") == "128"
            proc = _apply(netns, agent, "--yes")
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


def test_closed_loop_from_below_the_agents_floor(netns: TuneNetNS, state: Path) -> None:
    # somaxconn 16 and a listener of backlog 1024 under a connect flood: x4 would be 64,
    # below the default policy's floor; tune proposes the floor, says so, and the agent
    # applies and verifies it (a move up to the floor is one change, whatever max_step).
    netns.write("net.core.somaxconn", "16")
    agent = _agent(state, netns)
    try:
        with running(LISTEN_FLOOD, "300", UNTIL_STOPPED, "5", "1024", ns=netns):
            proc = _apply(netns, agent, "--yes")
        assert proc.returncode == 0, proc.stderr
        assert "net.core.somaxconn 16 -> 128" in proc.stdout
        assert "64 is below the agent's floor 128" in proc.stdout
        assert "verified: changeset" in proc.stdout
        assert netns.read("net.core.somaxconn") == "128"
    finally:
        agent.stop()


# --- one scenario each, reproduced for real ----------------------------------------------


def test_syn_flood_half_open_connections(netns: TuneNetNS, state: Path) -> None:
    # Drop the clients' final ACKs, so every handshake stays half-open in the SYN queue.
    require(shutil.which("nft") is not None, "needs nft (nftables)")
    netns.write("net.core.somaxconn", "128")
    netns.run("nft", "add table inet kassist-tune")
    netns.run("nft", "add chain inet kassist-tune out { type filter hook output priority 0 ; }")
    netns.run("nft", "add rule inet kassist-tune out tcp flags & (syn|ack) == ack drop")
    agent = _agent(state, netns)
    try:
        with running(LISTEN_FLOOD, "300", UNTIL_STOPPED, "20", ns=netns):
            doc = _tune(netns)
        syn = proposals(doc, "syn-flood")
        assert syn["net.ipv4.tcp_max_syn_backlog"]["direction"] == "up"
        finding = next(f for f in doc["findings"] if f["id"] == "syn-flood")
        assert any("TCPReqQFullDoCookies" in e for e in finding["evidence"])
        assert any("tcp_syncookies stays on" in n for n in finding["notes"])
        assert "net.ipv4.tcp_syncookies" not in syn  # kept on, never proposed off
        assert_agent_accepts(doc, agent)
    finally:
        agent.stop()


def test_udp_sink_too_slow_for_its_sender(netns: TuneNetNS, state: Path) -> None:
    with running(UDP_FLOOD, UNTIL_STOPPED, ns=netns):
        doc = _tune(netns)
    udp = proposals(doc, "udp-rcvbuf")
    assert udp["net.core.rmem_max"]["direction"] == "up"
    assert udp["net.core.rmem_default"]["direction"] == "up"
    # rmem_max is global: read-only inside a network namespace, so reported, not recommended.
    assert udp["net.core.rmem_max"]["status"] == "read-only"
    assert not any(r["target"] == "net.core.rmem_max" for r in doc["recommendations"])


def test_time_wait_bucket_overflow(netns: TuneNetNS, state: Path) -> None:
    netns.write("net.ipv4.tcp_max_tw_buckets", "4096")
    agent = _agent(state, netns)
    try:
        with running(SHORT_CONNECTIONS, UNTIL_STOPPED, ns=netns):
            # Start the window once the bucket table is full (however loaded the machine is).
            deadline = hang_deadline()
            while netns.sockstat_tw() < 4096:
                assert time.monotonic() < deadline, "the TIME-WAIT table never filled"
                time.sleep(0.2)
            _, doc, _ = tune("--netns", str(netns.holder.pid), "--interval", "2")
        tw = proposals(doc, "tw-overflow")["net.ipv4.tcp_max_tw_buckets"]
        assert (tw["current"], tw["value"], tw["status"]) == (4096, 8192, "recommended")
        assert_agent_accepts(doc, agent)
    finally:
        agent.stop()


def test_ephemeral_ports_run_out(netns: TuneNetNS, state: Path) -> None:
    netns.write("net.ipv4.ip_local_port_range", "40000 40099")
    agent = _agent(state, netns)
    try:
        with running(SHORT_CONNECTIONS, UNTIL_STOPPED, ns=netns):
            doc = _tune(netns)
        ports = proposals(doc, "ephemeral-ports")["net.ipv4.ip_local_port_range"]
        assert ports["direction"] == "up" and ports["status"] == "recommended"
        low, high = ports["value"]
        assert low >= 1024 and high - low + 1 >= 200
        assert_agent_accepts(doc, agent)
    finally:
        agent.stop()


def test_ephemeral_ports_seen_by_the_syscall_error_probe(netns: TuneNetNS, state: Path) -> None:
    require(shutil.which("bpftrace") is not None, "needs bpftrace")
    netns.write("net.ipv4.ip_local_port_range", "40000 40099")
    with running(SHORT_CONNECTIONS, UNTIL_STOPPED, ns=netns):
        _, doc, err = tune("--netns", str(netns.holder.pid), "--interval", "3", "--trace")
    finding = next(f for f in doc["findings"] if f["id"] == "ephemeral-ports")
    assert any("EADDRNOTAVAIL" in e for e in finding["evidence"]), (finding, err)


def test_inotify_instances_exhausted_by_a_user(state: Path) -> None:
    require(os.geteuid() == 0, "needs root to run a workload as another user")
    limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    # The limit is per user: a user of this run's own, so that a concurrent run's instances
    # are not counted with these (no passwd entry is needed for a uid).
    uid = str(200000 + os.getpid() % 100000)
    with running(INOTIFY_INSTANCES, str(limit + 10), UNTIL_STOPPED, user=uid):
        doc = _tune(None)
    inotify = proposals(doc, "inotify")["fs.inotify.max_user_instances"]
    assert inotify["direction"] == "up" and inotify["current"] == limit
    finding = next(f for f in doc["findings"] if f["id"] == "inotify")
    assert any(f"uid {uid} holds {limit} inotify instances" in e for e in finding["evidence"])
    agent = _agent(state, None)  # host namespace: validate only (a dry run writes nothing)
    try:
        assert_agent_accepts(doc, agent)
    finally:
        agent.stop()


@pytest.fixture
def pids_cgroup() -> Iterator[Path]:
    require(
        os.geteuid() == 0 and Path("/sys/fs/cgroup/pids").is_dir(), "needs root and a pids cgroup"
    )
    path = make_cgroup("pids", f"kassist-tune-pids-{os.getpid()}")
    (path / "pids.max").write_text("20\n")
    try:
        yield path
    finally:
        remove_cgroup(path)


def test_fork_fails_in_a_cgroup_at_its_pids_max(pids_cgroup: Path, state: Path) -> None:
    with running(FORK_UNTIL_EAGAIN, "40", UNTIL_STOPPED, cgroup=pids_cgroup):
        doc = _tune(None, "--cgroup", str(pids_cgroup))
    pids = proposals(doc, "pid-exhaustion")["cgroup:pids.max"]
    assert (pids["current"], pids["direction"], pids["status"]) == (20, "up", "cgroup")
    # The cgroup is the limit, not the system: no kernel.pid_max recommendation.
    assert not any(r["target"].startswith("kernel.") for r in doc["recommendations"])


@pytest.fixture
def memory_cgroup(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    require(os.geteuid() == 0 and Path("/sys/fs/cgroup/memory").is_dir(), "needs a memory cgroup")
    path = make_cgroup("memory", f"kassist-tune-mem-{os.getpid()}")
    (path / "memory.limit_in_bytes").write_text(str(16 << 20))
    data = tmp_path / "kassist-tune-thrash.bin"
    with data.open("wb") as f:
        f.write(os.urandom(1 << 20) * 48)  # 48 MiB, three times the limit
    try:
        yield path, data
    finally:
        remove_cgroup(path)
        data.unlink()


def test_memory_cgroup_under_pressure(memory_cgroup: tuple[Path, Path], state: Path) -> None:
    path, data = memory_cgroup
    with running(THRASH, str(data), UNTIL_STOPPED, cgroup=path):
        doc = _tune(None, "--cgroup", str(path))
    limit = proposals(doc, "reclaim-stalls")["cgroup:memory.limit_in_bytes"]
    assert (limit["current"], limit["direction"]) == (16 << 20, "up")


def _host_sysctl(key: str) -> int:
    return int(Path("/proc/sys", *key.split(".")).read_text())


def test_neighbour_table_overflow_from_a_netns(netns: TuneNetNS, state: Path) -> None:
    # The neighbour table is one for every namespace, and its gc_thresh keys live in the
    # host's: the flood runs in the netns, tune reads the host. Keep the flood short and
    # end it (deleting the veth pair flushes its entries) as soon as tune has seen it.
    veth = [
        "ip",
        "link",
        "add",
        "kassist-tune-v0",
        "type",
        "veth",
        "peer",
        "name",
        "kassist-tune-v1",
    ]
    netns.run(*veth)
    netns.run("ip", "addr", "add", "10.77.0.1/16", "dev", "kassist-tune-v0")
    netns.run("ip", "link", "set", "kassist-tune-v0", "up")
    netns.run("ip", "link", "set", "kassist-tune-v1", "up")
    thresh3 = _host_sysctl("net.ipv4.neigh.default.gc_thresh3")
    try:
        with running(NEIGH_FLOOD, UNTIL_STOPPED, str(thresh3), ns=netns):
            doc = _tune(None)
    finally:
        netns.run("ip", "link", "del", "kassist-tune-v0")
    neigh = proposals(doc, "neigh-overflow")
    assert neigh["net.ipv4.neigh.default.gc_thresh3"]["direction"] == "up"
    t1, t2, t3 = (
        neigh[k]["value"] if k in neigh else _host_sysctl(k)
        for k in (f"net.ipv4.neigh.default.gc_thresh{i}" for i in (1, 2, 3))
    )
    assert t1 <= t2 <= t3
    finding = next(f for f in doc["findings"] if f["id"] == "neigh-overflow")
    assert any("table_fulls" in e for e in finding["evidence"])
    agent = _agent(state, None)
    try:
        assert_agent_accepts(doc, agent)  # a dry run: the host's table is not written
    finally:
        agent.stop()


def test_conntrack_table_fills_in_a_netns(netns: TuneNetNS, state: Path) -> None:
    # nf_conntrack_max is global (read-only in a netns) but the count it bounds is the
    # namespace's own: fill this namespace's table with one-way UDP flows.
    require(shutil.which("nft") is not None, "needs nft (nftables)")
    netns.run("nft", "add table inet kassist-tune")
    netns.run("nft", "add chain inet kassist-tune out { type filter hook output priority 0 ; }")
    netns.run("nft", "add rule inet kassist-tune out ct state new counter")
    limit = _host_sysctl("net.netfilter.nf_conntrack_max")
    # The flows are sent again until tune is done: their entries stay (30 s each otherwise).
    with running(CONNTRACK_FLOOD, str(int(limit * 1.05)), UNTIL_STOPPED, ns=netns):
        _, doc, _ = tune("--netns", str(netns.holder.pid), "--interval", "0.5")
    ct = proposals(doc, "conntrack-full")["net.netfilter.nf_conntrack_max"]
    assert (ct["current"], ct["direction"], ct["status"]) == (limit, "up", "read-only")


def test_a_key_an_admin_overrode_is_reported_not_recommended(netns: TuneNetNS, state: Path) -> None:
    netns.write("net.core.somaxconn", "128")
    agent = _agent(state, netns)
    sock = ["--socket", str(agent.socket)]
    try:
        with running(LISTEN_FLOOD, "400", UNTIL_STOPPED, "5", ns=netns):
            applied = _apply(netns, agent, "--yes")
        assert applied.returncode == 0, applied.stderr
        netns.write("net.core.somaxconn", "200")  # the admin's own hand
        deadline = hang_deadline()
        while not json.loads(run_kassist(["agent", "status", *sock, "--format", "json"]).stdout)[
            "status"
        ]["overridden"]:
            assert time.monotonic() < deadline, "the agent never saw the admin's change"
            time.sleep(0.2)
        with running(LISTEN_FLOOD, "400", UNTIL_STOPPED, "5", ns=netns):
            doc = _tune(netns, *sock)
        row = proposals(doc, "listen-overflow")["net.core.somaxconn"]
        assert row["status"] == "managed" and "overridden" in row["why"], row
        assert not any(r["target"] == "net.core.somaxconn" for r in doc["recommendations"])
    finally:
        agent.stop()
