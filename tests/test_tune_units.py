"""tune's pure parts on inline text: parsers, value rules, sysctl.d ownership, the CLI's
one-line errors, the JSON contract and the deterministic explanation."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from actions.limits import Machine as LimitsMachine
from actions.model import AgentStatus, OverriddenKey
from actions.policy import load_policy, policy_from_dict
from assistant.sysctl_d import parse_conf
from assistant.tuning.engine import Finding, ProposalRow, find_finding
from assistant.tuning.evidence import counter_deltas, match_log
from assistant.tuning.explain import deterministic_text, explain
from assistant.tuning.managed import (
    agent_overrides,
    sysctl_d_settings,
    sysctl_files,
)
from assistant.tuning.scenarios import KNOWN_KEYS
from assistant.tuning.values import (
    CAPS,
    Machine,
    cap,
    grow,
    keep_at_most,
    ordered_growth,
    shrink,
)
from probes.stats.inotify import parse_fdinfo_watches
from probes.stats.net import parse_neigh_stat, parse_softnet, parse_ss_listeners, softnet_deltas
from tests.conftest import ROOT, run_kassist

SOFTNET = (
    "0000a3f1 00000002 0000001e 00000000 00000000 00000000 00000000 00000000 00000000 "
    "00000000 00000000 00000000 00000000 00000000 00000000\n"
    "00004154 00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 "
    "00000000 00000000 00000000 00000001 00000000 00000000\n"
)
ARP = (
    "entries  allocs   destroys hash_grows lookups  hits     res_failed rcv_probes_mcast "
    "rcv_probes_ucast periodic_gc_runs forced_gc_runs unresolved_discards table_fulls\n"
    "00000401 00000c8a 00000889 00000000 00000000 00000000 00000000 00000000 00000000 "
    "0000001d 00000031 00000000 0000000a\n"
    "00000401 00000000 00000000 00000000 00000009 00000005 00000000 00000000 00000000 "
    "00000000 00000000 00000000 00000005\n"
)
FDINFO = (
    "pos:\t0\nflags:\t00\nmnt_id:\t15\nino:\t1057\n"
    "inotify wd:2 ino:1 sdev:800001 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 "
    "f_handle:0100000000000000\n"
    "inotify wd:1 ino:2 sdev:800001 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 "
    "f_handle:0200000000000000\n"
)


def test_softnet_stat_is_hex_processed_dropped_squeezed() -> None:
    assert parse_softnet(SOFTNET) == [(0xA3F1, 2, 0x1E), (0x4154, 0, 1)]


def test_softnet_deltas_survive_a_32_bit_wrap() -> None:
    assert softnet_deltas([(0xFFFFFFF0, 0, 0)], [(0x10, 1, 0)]) == [(0x20, 1, 0)]


def test_neighbour_table_fulls_are_summed_over_cpus() -> None:
    assert parse_neigh_stat(ARP) == 15
    assert parse_neigh_stat("") == 0


def test_inotify_watches_are_counted_from_fdinfo() -> None:
    assert parse_fdinfo_watches(FDINFO) == 2


def test_ss_listeners_give_queue_and_limit() -> None:
    text = "LISTEN 129    128    127.0.0.1:41235 0.0.0.0:*\nLISTEN 0 4096 [::]:22 [::]:*\n"
    assert parse_ss_listeners(text) == [("127.0.0.1:41235", 129, 128), ("[::]:22", 0, 4096)]


def test_log_lines_are_grouped_by_pattern_and_capped() -> None:
    lines = ["neighbour: arp_cache: neighbor table overflow!"] * 9 + [
        "TCP: request_sock_TCP: Possible SYN flooding on port 0.0.0.0:80. Sending cookies.",
        "an ordinary line",
    ]
    found, counts = match_log(lines)
    assert found["neigh_overflow"] == [lines[0]] and counts["neigh_overflow"] == 9
    assert len(found["syn_flood"]) == 1
    assert set(found) == {"neigh_overflow", "syn_flood"}


def test_counters_that_went_down_are_dropped() -> None:
    assert counter_deltas({"a": 5, "b": 9}, {"a": 7, "b": 3, "c": 1}) == {"a": 2}
    assert counter_deltas(None, {"a": 7}) == {"a": 7}


def test_values_are_bounded_steps_under_caps() -> None:
    assert grow(128, 8, 65535) == 512  # never more than the agent's x4
    assert grow(60000, 2, 65535) == 65535
    assert grow(70000, 2, 65535) == 70000  # above the cap: left alone, never lowered
    assert shrink(20, 2, 5) == 10 and shrink(6, 4, 5) == 5
    assert ordered_growth([4096, 131072, 6291456], 12582912) == [4096, 131072, 12582912]
    assert keep_at_most(64 << 20, 32 << 20, 1 << 20, 212992) == (1 << 20) + (32 << 20) - 212992
    m = Machine(ram=1 << 30, cpus=2, page_size=4096)
    assert cap("net.core.rmem_max", m) == (1 << 30) // 128
    assert cap("kernel.pid_max", m) == 2 << 20


def test_sysctl_d_files_name_who_sets_a_key(tmp_path: Path) -> None:
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    lib.mkdir()
    (lib / "50-pid-max.conf").write_text("# comment\nkernel.pid_max = 4194304\n")
    (etc / "60-net.conf").write_text(
        "net/core/somaxconn=8192\n; other\n-net.ipv4.tcp_fin_timeout = 30\n"
    )
    (etc / "90-kassist.conf").write_text("net.core.rmem_max = 1\n")  # the agent's own file
    (etc / "50-pid-max.conf").write_text("# masks the one in lib\n")
    files = sysctl_files([str(etc), str(lib)], str(tmp_path / "sysctl.conf"))
    owners = sysctl_d_settings(files)
    assert owners == {
        "net.core.somaxconn": str(etc / "60-net.conf"),
        "net.ipv4.tcp_fin_timeout": str(etc / "60-net.conf"),
    }
    assert [(s.key, s.value) for s in parse_conf("kernel.pid_max = 4194304", "f")] == [
        ("kernel.pid_max", "4194304")
    ]


def test_agent_overrides_become_managed_keys() -> None:
    status = AgentStatus(
        pid=1, uptime=1.0, policy="", journal="", audit="", changesets={}, managed=[],
        overridden=[OverriddenKey(4, "sysctl", "net.core.somaxconn", "8192"),
                    OverriddenKey(5, "sysfs", "block/sda/queue/nr_requests", "64")],
    )  # fmt: skip
    why = agent_overrides(status)["net.core.somaxconn"]
    assert "changeset 4" in why and "8192" in why
    assert list(agent_overrides(status)) == ["net.core.somaxconn"]  # sysfs keys are not sysctls


def _finding() -> Finding:
    row = ProposalRow(
        "net.core.somaxconn",
        128,
        512,
        "up",
        "recommended",
        "",
        "listen-overflow:net.core.somaxconn",
    )
    return Finding(
        "listen-overflow", "listen-overflow", "Listen queue overflow",
        ["netstat TcpExt.ListenOverflows +813 in 2.01 s (404/s)",
         "sysctl net.core.somaxconn = 128"],
        [row], ["the accept queue is min(backlog, somaxconn)"],
        ["/proc/net/netstat TcpExt ListenOverflows"],
    )  # fmt: skip


def test_the_deterministic_explanation_quotes_every_evidence_line() -> None:
    text = deterministic_text(_finding(), [])
    for line in _finding().evidence:
        assert line in text
    assert "net.core.somaxconn: 128 -> 512 (up)" in text
    ex = explain(_finding())
    assert ex.text.startswith("Listen queue overflow")
    # Either the knowledge base documents the key, or one notice says it is not there.
    assert ex.docs or len(ex.notices) == 1


def test_a_finding_is_found_by_its_id_or_a_recommendation_id() -> None:
    doc = {"findings": [_finding().to_dict()]}
    assert find_finding(doc, "listen-overflow:net.core.somaxconn") is not None
    assert find_finding(doc, "udp-rcvbuf") is None


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--count", "2"], "--count needs --interval"),
        (["--netns", "kassist-tune-no-such-ns"], "no network namespace"),
        (["--interval", "1", "--count", "2", "--submit"], "act on one window"),
    ],
)
def test_bad_usage_is_one_line(args: list[str], needle: str) -> None:
    proc = run_kassist(["tune", *args])
    assert proc.returncode not in {0, 3}
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_explain_without_a_saved_run_is_one_line(tmp_path: Path) -> None:
    proc = run_kassist(
        ["tune", "--explain", "x", "--no-llm"], env={"XDG_STATE_HOME": str(tmp_path)}
    )
    assert proc.returncode == 1 and "run `kassist tune` first" in proc.stderr


def test_json_contract_and_the_scenario_list(tmp_path: Path) -> None:
    proc = run_kassist(["tune", "--format", "json", "--interval", "0.5"],
                       env={"XDG_STATE_HOME": str(tmp_path)})  # fmt: skip
    assert proc.returncode in (0, 3), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["schema"] == "kassist.tune/1"
    assert {"findings", "recommendations"} <= set(doc)
    assert (proc.returncode == 3) == bool(doc["recommendations"])
    assert (tmp_path / "kassist" / "tune-last.json").exists()
    rows = json.loads(run_kassist(["tune", "--list", "--format", "json"]).stdout)
    assert len(rows) >= 15 and all(r["sources"] and r["keys"] for r in rows)


# --- one policy: the agent's default policy takes every key tune may recommend ---------

MACHINES = (
    Machine(ram=1 << 30, cpus=1, page_size=4096),
    Machine(ram=24 << 30, cpus=2, page_size=4096),
    Machine(ram=512 << 30, cpus=128, page_size=4096),
)


def test_the_agents_default_policy_allows_every_key_tune_recommends() -> None:
    policy = load_policy()
    assert policy.source == "built-in default policy"
    refused = [
        k
        for k in KNOWN_KEYS
        if policy.denied_by(k, ".") or not policy.allowed_by(k, ".") or not policy.spec(k, ".")
    ]
    assert refused == []


@pytest.mark.parametrize("m", MACHINES, ids=lambda m: f"{m.ram >> 30}G-{m.cpus}cpu")
def test_tunes_caps_never_exceed_the_agents(m: Machine) -> None:
    doc = tomllib.loads((ROOT / "actions" / "default_policy.toml").read_text())
    policy = policy_from_dict(doc, "default", LimitsMachine(m.ram, m.cpus, m.page_size))
    for key in CAPS:
        spec = policy.spec(key, ".")
        assert spec is not None and spec.max is not None, key
        assert cap(key, m) <= spec.max, (key, cap(key, m), spec.max)
