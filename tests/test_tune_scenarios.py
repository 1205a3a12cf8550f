"""Every scenario of the table, on a real snapshot of this machine with the evidence of
the scenario laid over it (counters, log lines, syscall errors): the right finding, key
and direction, and every recommendation accepted by a real agent's validator.

The scenarios that can be reproduced here run for real in ``test_tune_real.py``; these
cases cover the rest (softnet drops, TCP pruning, file-max, pid_max, dirty writeback,
aio-max-nr...) and every scenario's values against the validator.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.policy import policy_from_dict
from assistant.tuning.engine import TuneReport, analyse
from assistant.tuning.evidence import Observation
from assistant.tuning.scenarios import KNOWN_KEYS, SCENARIOS
from assistant.tuning.values import Machine
from probes.stats import Snapshot, Sysctl, take_snapshot
from tests.agent_support import AgentProcess
from tests.conftest import ROOT, run_kassist

MACHINE = Machine(ram=24 << 30, cpus=2, page_size=4096)
#: Keys the agent's invariants read besides the ones tune proposes.
INVARIANT_KEYS = ("net.core.rmem_max", "net.core.rmem_default", "net.ipv4.tcp_rmem",
                  "vm.dirty_ratio", "vm.dirty_background_ratio")  # fmt: skip
#: Values every case starts from (a stock kernel's), so the cases do not depend on this host.
STOCK: dict[str, Any] = {
    "net.core.somaxconn": 4096, "net.ipv4.tcp_max_syn_backlog": 4096,
    "net.ipv4.tcp_syncookies": 1, "net.core.netdev_max_backlog": 1000,
    "net.core.netdev_budget": 300, "net.core.netdev_budget_usecs": 8000,
    "net.ipv4.tcp_rmem": [4096, 131072, 6291456], "net.core.rmem_max": 212992,
    "net.core.rmem_default": 212992, "net.ipv4.tcp_mem": [287898, 383867, 575796],
    "net.netfilter.nf_conntrack_max": 262144, "net.netfilter.nf_conntrack_count": 12,
    "net.ipv4.neigh.default.gc_thresh1": 128, "net.ipv4.neigh.default.gc_thresh2": 512,
    "net.ipv4.neigh.default.gc_thresh3": 1024, "net.ipv6.neigh.default.gc_thresh1": 128,
    "net.ipv6.neigh.default.gc_thresh2": 512, "net.ipv6.neigh.default.gc_thresh3": 1024,
    "net.ipv4.tcp_max_tw_buckets": 131072, "net.ipv4.ip_local_port_range": [32768, 60999],
    "fs.inotify.max_user_watches": 192536, "fs.inotify.max_user_instances": 128,
    "fs.file-max": 2466170, "fs.file-nr": [912, 0, 2466170], "kernel.pid_max": 32768,
    "kernel.threads-max": 192730, "vm.watermark_scale_factor": 10,
    "vm.min_free_kbytes": 67584, "vm.dirty_ratio": 20, "vm.dirty_background_ratio": 10,
    "vm.dirty_bytes": 0, "vm.dirty_background_bytes": 0, "fs.aio-nr": 0,
    "fs.aio-max-nr": 65536,
}  # fmt: skip
WINDOW = 10.0


@pytest.fixture(scope="module")
def base_snapshot() -> Snapshot:
    return take_snapshot(kconfig=False)


def observation(snap: Snapshot, **sysctls: Any) -> Observation:
    """A quiet 10-second window over a copy of a real snapshot, with stock /proc/sys values."""
    after = copy.deepcopy(snap)
    for key, value in {**STOCK, **{k.replace("__", "."): v for k, v in sysctls.items()}}.items():
        after.sysctls[key] = Sysctl(key, value, True)
    after.proc.setdefault("loadavg", {})["tasks"] = 300
    after.proc["sockstat"] = {"TCP": {"inuse": 5, "tw": 3}}
    return Observation(window_s=WINDOW, uptime_s=3600, counters={}, after=after)


def _set(obs: Observation, key: str, value: Any) -> None:
    obs.after.sysctls[key] = Sysctl(key, value, True)


# Each case: scenario id, what it lays over the quiet window, the key and direction wanted.
Case = tuple[str, Callable[[Observation], None], str, str]


def _listen(o: Observation) -> None:
    o.counters.update({"netstat.TcpExt.ListenOverflows": 5200, "netstat.TcpExt.ListenDrops": 5200})


def _syn(o: Observation) -> None:
    o.counters["netstat.TcpExt.TCPReqQFullDrop"] = 80
    o.log["syn_flood"] = [
        "TCP: request_sock_TCP: Possible SYN flooding on port 0.0.0.0:443. Dropping request."
    ]
    _set(o, "net.ipv4.tcp_syncookies", 0)


def _softnet(o: Observation) -> None:
    o.softnet = [(1_200_000, 350, 4100), (900_000, 0, 2600)]


def _prune(o: Observation) -> None:
    o.counters.update({"netstat.TcpExt.PruneCalled": 120, "netstat.TcpExt.RcvPruned": 40,
                       "netstat.TcpExt.TCPRcvCollapsed": 9000})  # fmt: skip


def _tcp_mem(o: Observation) -> None:
    o.counters["netstat.TcpExt.TCPMemoryPressures"] = 7


def _udp(o: Observation) -> None:
    o.counters["snmp.Udp.RcvbufErrors"] = 48000


def _conntrack(o: Observation) -> None:
    _set(o, "net.netfilter.nf_conntrack_count", 262000)
    o.log["conntrack_full"] = ["nf_conntrack: nf_conntrack: table full, dropping packet"]


def _neigh(o: Observation) -> None:
    o.neigh_table_fulls = {"arp_cache": 31, "ndisc_cache": 0}
    o.log["neigh_overflow"] = ["neighbour: arp_cache: neighbor table overflow!"]


def _tw(o: Observation) -> None:
    o.counters["netstat.TcpExt.TCPTimeWaitOverflow"] = 5400
    _set(o, "net.ipv4.tcp_max_tw_buckets", 16384)
    o.after.proc["sockstat"] = {"TCP": {"inuse": 40, "tw": 16384}}


def _ports(o: Observation) -> None:
    o.syscall_errors[("connect", "EADDRNOTAVAIL")] = 2300
    o.traced = True


def _inotify(o: Observation) -> None:
    o.syscall_errors.update({("inotify_add_watch", "ENOSPC"): 12, ("inotify_init1", "EMFILE"): 3})
    o.inotify = {1000: (128, 192000)}


def _file_max(o: Observation) -> None:
    _set(o, "fs.file-nr", [2400000, 0, 2466170])
    o.log["file_max"] = ["VFS: file-max limit 2466170 reached"]


def _pids(o: Observation) -> None:
    o.after.proc["loadavg"]["tasks"] = 31000
    o.syscall_errors[("clone3", "EAGAIN")] = 40


def _reclaim(o: Observation) -> None:
    o.counters.update({"vmstat.allocstall_normal": 4200, "vmstat.allocstall_movable": 900,
                       "psi_memory.some.total": 2_300_000})  # fmt: skip
    o.log["alloc_failure"] = [
        "kworker/u4:2: page allocation failure: order:2, mode:0x820(GFP_ATOMIC)"
    ]


def _dirty(o: Observation) -> None:
    o.counters["psi_io.some.total"] = 3_500_000
    o.after.proc["vmstat"].update(
        nr_dirty=900_000, nr_writeback=80_000, nr_dirty_threshold=1_000_000
    )


def _aio(o: Observation) -> None:
    o.syscall_errors[("io_setup", "EAGAIN")] = 9
    _set(o, "fs.aio-nr", 65536)


CASES: list[Case] = [
    ("listen-overflow", _listen, "net.core.somaxconn", "up"),
    ("syn-flood", _syn, "net.ipv4.tcp_syncookies", "up"),
    ("softnet-backlog", _softnet, "net.core.netdev_max_backlog", "up"),
    ("softnet-backlog", _softnet, "net.core.netdev_budget", "up"),
    ("tcp-rcvbuf", _prune, "net.ipv4.tcp_rmem", "up"),
    ("tcp-rcvbuf", _tcp_mem, "net.ipv4.tcp_mem", "up"),
    ("udp-rcvbuf", _udp, "net.core.rmem_max", "up"),
    ("conntrack-full", _conntrack, "net.netfilter.nf_conntrack_max", "up"),
    ("neigh-overflow", _neigh, "net.ipv4.neigh.default.gc_thresh3", "up"),
    ("tw-overflow", _tw, "net.ipv4.tcp_max_tw_buckets", "up"),
    ("ephemeral-ports", _ports, "net.ipv4.ip_local_port_range", "up"),
    ("inotify", _inotify, "fs.inotify.max_user_watches", "up"),
    ("inotify", _inotify, "fs.inotify.max_user_instances", "up"),
    ("file-max", _file_max, "fs.file-max", "up"),
    ("pid-exhaustion", _pids, "kernel.pid_max", "up"),
    ("reclaim-stalls", _reclaim, "vm.watermark_scale_factor", "up"),
    ("reclaim-stalls", _reclaim, "vm.min_free_kbytes", "up"),
    ("dirty-writeback", _dirty, "vm.dirty_ratio", "down"),
    ("dirty-writeback", _dirty, "vm.dirty_background_ratio", "down"),
    ("aio-max-nr", _aio, "fs.aio-max-nr", "up"),
]


def test_every_scenario_has_a_case() -> None:
    assert {c[0] for c in CASES} == {s.id for s in SCENARIOS}
    assert len(SCENARIOS) >= 15


def test_a_quiet_window_finds_nothing(base_snapshot: Snapshot) -> None:
    report = analyse(observation(base_snapshot), machine=MACHINE)
    assert report.findings == [] and report.recommendations == []


@pytest.mark.parametrize(("scenario", "lay", "key", "direction"), CASES,
                         ids=[f"{c[0]}:{c[2]}" for c in CASES])  # fmt: skip
def test_scenario_finds_the_key_and_direction(
    base_snapshot: Snapshot, scenario: str, lay: Callable[[Observation], None], key: str,
    direction: str,
) -> None:  # fmt: skip
    obs = observation(base_snapshot)
    lay(obs)
    report = analyse(obs, machine=MACHINE)
    assert [f.id for f in report.findings] == [scenario]
    rows = {p.key: p for p in report.findings[0].proposals}
    assert rows[key].direction == direction
    assert rows[key].status == "recommended"
    rec = next(r for r in report.recommendations if r.target == key)
    assert rec.source == "rules" and rec.evidence and rec.current == obs.sysctl(key)
    assert all(e in rec.evidence for e in report.findings[0].evidence)


def test_vectors_keep_their_order_and_the_agents_invariants(base_snapshot: Snapshot) -> None:
    obs = observation(base_snapshot)
    _prune(obs)
    recs = {r.target: r.value for r in analyse(obs, machine=MACHINE).recommendations}
    rmem, rmem_max = recs["net.ipv4.tcp_rmem"], recs.get("net.core.rmem_max", 212992)
    assert isinstance(rmem, list) and isinstance(rmem_max, int), (rmem, rmem_max)
    lo, mid, hi = rmem
    assert lo <= mid <= hi
    # tcp_rmem's max may not outgrow rmem_max by more than it already did.
    assert hi - rmem_max <= 6291456 - 212992
    obs = observation(base_snapshot)
    _neigh(obs)
    recs = {r.target: r.value for r in analyse(obs, machine=MACHINE).recommendations}
    t = [
        recs.get(
            f"net.ipv4.neigh.default.gc_thresh{i}", STOCK[f"net.ipv4.neigh.default.gc_thresh{i}"]
        )
        for i in (1, 2, 3)
    ]
    assert t == sorted(t)


def test_a_listen_backlog_below_somaxconn_is_the_programs_limit(base_snapshot: Snapshot) -> None:
    obs = observation(base_snapshot)
    _listen(obs)
    obs.listeners = [("0.0.0.0:8080", 129, 128)]  # listen(128) under somaxconn 4096
    report = analyse(obs, machine=MACHINE)
    assert report.findings[0].id == "listen-overflow" and report.recommendations == []
    assert any("listen() backlog is the limit" in n for n in report.findings[0].notes)
    obs.listeners = [("0.0.0.0:8080", 4097, 4096)]  # bound by somaxconn itself
    report = analyse(obs, machine=MACHINE)
    assert "net.core.somaxconn" in [r.target for r in report.recommendations]


# --- proposals lie within the agent's policy -----------------------------------------------


def _somaxconn_row(report: TuneReport) -> Any:
    return next(p for f in report.findings for p in f.proposals if p.key == "net.core.somaxconn")


def test_a_value_below_the_agents_floor_is_raised_to_the_floor(base_snapshot: Snapshot) -> None:
    # somaxconn 16 and a listener of backlog 1024 under a flood: its queue is somaxconn's
    # 16, so somaxconn is the limit; x4 would give 64, below the default policy's floor.
    obs = observation(base_snapshot, net__core__somaxconn=16, net__ipv4__tcp_max_syn_backlog=128)
    _listen(obs)
    obs.listeners = [("127.0.0.1:8080", 17, 16)]
    report = analyse(obs, machine=MACHINE)
    row = _somaxconn_row(report)
    assert (row.current, row.value, row.status) == (16, 128, "recommended")
    notes = report.findings[0].notes
    assert any("64 is below the agent's floor 128" in n and "proposing 128" in n for n in notes)
    assert {r.target: r.value for r in report.recommendations}["net.core.somaxconn"] == 128


def test_a_policys_ceiling_and_refusals_bound_the_proposals(base_snapshot: Snapshot) -> None:
    doc = tomllib.loads((ROOT / "actions" / "default_policy.toml").read_text())
    narrow = policy_from_dict({**doc, "keys": {"net.core.somaxconn": {"max": 10000}}}, "narrow")
    obs = observation(base_snapshot)
    _listen(obs)  # 4096 -> x4 = 16384, above this policy's ceiling
    row = _somaxconn_row(analyse(obs, machine=MACHINE, policy=narrow))
    assert (row.value, row.status) == (10000, "recommended")
    tight = policy_from_dict({**doc, "keys": {"net.core.somaxconn": {"max": 4096}}}, "tight")
    row = _somaxconn_row(analyse(obs, machine=MACHINE, policy=tight))
    assert row.status == "policy" and row.value == 16384  # no move up is left: reported
    denied = policy_from_dict({**doc, "deny": [*doc["deny"], "net.core.*"]}, "deny")
    report = analyse(obs, machine=MACHINE, policy=denied)
    row = _somaxconn_row(report)
    assert row.status == "policy" and "net.core.*" in row.why
    assert "net.core.somaxconn" not in [r.target for r in report.recommendations]


def test_caps_stop_growth(base_snapshot: Snapshot) -> None:
    # At the cap, tune proposes nothing more (no runaway growth).
    obs = observation(base_snapshot, net__core__somaxconn=65535)
    _listen(obs)
    report = analyse(obs, machine=MACHINE)
    assert not any(r.target == "net.core.somaxconn" for r in report.recommendations)


def test_syncookies_are_never_turned_off(base_snapshot: Snapshot) -> None:
    obs = observation(base_snapshot)
    _syn(obs)
    _set(obs, "net.ipv4.tcp_syncookies", 1)
    report = analyse(obs, machine=MACHINE)
    assert not any(r.target == "net.ipv4.tcp_syncookies" for r in report.recommendations)
    assert any("stays on" in n for n in report.findings[0].notes)


def test_a_managed_key_is_reported_not_recommended(base_snapshot: Snapshot) -> None:
    obs = observation(base_snapshot)
    _pids(obs)
    report = analyse(obs, {"kernel.pid_max": "set by /etc/sysctl.d/50-pid-max.conf"}, MACHINE)
    row = next(p for p in report.findings[0].proposals if p.key == "kernel.pid_max")
    assert row.status == "managed" and "50-pid-max.conf" in row.why
    assert report.recommendations == []


def test_a_key_two_findings_want_is_recommended_once(base_snapshot: Snapshot) -> None:
    obs = observation(base_snapshot, net__ipv4__tcp_max_syn_backlog=1024)
    _listen(obs)
    obs.counters["netstat.TcpExt.TCPReqQFullDrop"] = 80
    report = analyse(obs, machine=MACHINE)
    targets = [r.target for r in report.recommendations]
    assert len(targets) == len(set(targets))
    assert {"listen-overflow", "syn-flood"} <= {f.id for f in report.findings}


# --- the agent's validator accepts every scenario's output -------------------------------


def _fake_tree(root: Path, obs: Observation) -> None:
    for key in {*KNOWN_KEYS, *INVARIANT_KEYS}:
        value = obs.sysctl(key)
        if value is None:
            continue
        path = root.joinpath(*key.split("."))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            ("\t".join(map(str, value)) if isinstance(value, list) else str(value)) + "\n"
        )


@pytest.fixture(scope="module")
def fake_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, Path]]:
    tmp = tmp_path_factory.mktemp("tune-agent")
    proc_sys = tmp / "proc_sys"
    proc_sys.mkdir()
    agent = AgentProcess(tmp, None, policy=None, args=("--proc-sys-root", str(proc_sys)))
    agent.start()
    try:
        yield agent, proc_sys
    finally:
        agent.stop()


@pytest.mark.parametrize(("scenario", "lay", "key", "direction"), CASES,
                         ids=[f"{c[0]}:{c[2]}" for c in CASES])  # fmt: skip
def test_the_agent_accepts_every_scenarios_recommendations(
    base_snapshot: Snapshot, fake_agent: tuple[AgentProcess, Path], tmp_path: Path,
    scenario: str, lay: Callable[[Observation], None], key: str, direction: str,
) -> None:  # fmt: skip
    agent, proc_sys = fake_agent
    obs = observation(base_snapshot)
    lay(obs)
    _fake_tree(proc_sys, obs)
    report = analyse(obs, machine=MACHINE)
    path = tmp_path / "recs.json"
    path.write_text(json.dumps([r.model_dump() for r in report.recommendations]))
    proc = run_kassist(
        ["agent", "validate", str(path), "--socket", str(agent.socket), "--format", "json"]
    )
    done = json.loads(proc.stdout)
    assert done["ok"], done["errors"]
    diff = {c["target"]: c for c in done["changeset"]["changes"]}
    assert key in diff
