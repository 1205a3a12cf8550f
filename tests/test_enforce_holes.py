"""Issue 22, items 7-11: the in-kernel guard fails closed (real programs in the real kernel).

Each test makes its own ``kassist-enforce-*`` cgroups and bpffs pin root; writers and
agents run in private network namespaces (and, for the missing-bpffs case, a private
mount namespace), so nothing of the host changes.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.enforce import Enforcer
from actions.errors import ActionError
from actions.policy import load_policy
from tests.agent_support import AgentProcess, NetNS
from tests.conftest import HANG_S, run_kassist
from tests.enforce_support import (  # noqa: F401 (the fixtures bpf_cache, cgroup, pin_root)
    Holder,
    agent_errors,
    bpf_cache_fixture,
    by_key_value,
    cgroup2_mount,
    cgroup_fixture,
    cgroup_programs,
    pin_root_fixture,
    require_enforcement,
    run_writer,
    run_writer_at_pid,
    serve_until_exit,
)

EPERM = errno.EPERM


@pytest.fixture
def netns() -> Iterator[NetNS]:
    ns = NetNS()
    yield ns
    ns.close()


def _args(pin_root: Path, tmp: Path, *more: str) -> tuple[str, ...]:
    return ("--enforce-pin-root", str(pin_root), "--enforce-state", str(tmp / "enforce.json"),
            *more)  # fmt: skip


# --- 7: enforcement that was asked for and is not running stops the agent ---------------


def test_a_mistyped_cgroup_stops_the_agent_and_attaches_nothing(
    cgroup: Path, pin_root: Path, tmp_path: Path, netns: NetNS
) -> None:
    typo = Path(str(cgroup) + "-typo")
    agent = AgentProcess(
        tmp_path, netns, args=_args(pin_root, tmp_path, "--enforce-guard", str(cgroup),
                                    "--enforce-guard", str(typo)),
    )  # fmt: skip
    done = serve_until_exit(agent)
    assert done.returncode == 1
    assert agent_errors(done.stderr) == [
        f"kassist-agent: in-kernel enforcement was requested and cannot run: --enforce-guard "
        f"{typo}: is not a directory of the cgroup v2 hierarchy at {cgroup2_mount()}: fix it, "
        "or serve with --enforce-best-effort to run without it"
    ]
    assert cgroup_programs(cgroup) == [] and not pin_root.exists()
    assert not agent.socket.exists()  # it never listened


def test_a_policy_row_the_map_cannot_hold_stops_the_agent(
    cgroup: Path, pin_root: Path, tmp_path: Path, netns: NetNS
) -> None:
    words = ["reno", "cubic", "bbr", "htcp", "dctcp", "vegas", "westwood", "illinois", "hybla"]
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'allow = ["net.core.somaxconn", "net.ipv4.tcp_allowed_congestion_control"]\n'
        '[keys."net.ipv4.tcp_allowed_congestion_control"]\n'
        f'type = "choice"\nvalues = {json.dumps(words)}\n'
    )
    agent = AgentProcess(
        tmp_path, netns, policy=policy,
        args=_args(pin_root, tmp_path, "--enforce-guard", str(cgroup)),
    )  # fmt: skip
    done = serve_until_exit(agent)
    assert done.returncode == 1
    [line] = agent_errors(done.stderr)
    assert line.startswith(
        "kassist-agent: in-kernel enforcement was requested and cannot run: policy rule "
        "net.ipv4.tcp_allowed_congestion_control: the kernel map holds up to 8 words"
    ), line
    assert cgroup_programs(cgroup) == [] and not pin_root.exists()


def test_a_lockdown_over_the_agents_own_cgroup_stops_the_agent(
    pin_root: Path, tmp_path: Path, netns: NetNS
) -> None:
    require_enforcement()
    root = cgroup2_mount()  # an ancestor of the agent's cgroup, wherever it runs
    agent = AgentProcess(
        tmp_path, netns, args=_args(pin_root, tmp_path, "--enforce-lockdown", str(root))
    )
    done = serve_until_exit(agent)
    assert done.returncode == 1
    [line] = agent_errors(done.stderr)
    assert f"--enforce-lockdown {root}: holds the agent itself" in line, line
    assert not pin_root.exists()


def test_pins_where_no_bpffs_is_and_none_can_be_mounted_stop_the_agent(
    cgroup: Path, tmp_path: Path, netns: NetNS
) -> None:
    pins = tmp_path / "pins"  # not under /sys/fs/bpf: the agent mounts bpffs only there
    agent = AgentProcess(
        tmp_path, netns, args=_args(pins, tmp_path, "--enforce-guard", str(cgroup))
    )
    done = serve_until_exit(agent)
    assert done.returncode == 1
    assert agent_errors(done.stderr) == [
        "kassist-agent: in-kernel enforcement was requested and cannot run: no BPF file system "
        f"to pin to at {pins} (mount -t bpf bpf /sys/fs/bpf): fix it, or serve with "
        "--enforce-best-effort to run without it"
    ]
    assert cgroup_programs(cgroup) == []


class _PrivateMounts(AgentProcess):
    """The agent in a private mount namespace where /sys/fs/bpf is not mounted."""

    def command(self, faults: bool = False) -> list[str]:
        unmount = 'while umount /sys/fs/bpf 2>/dev/null; do :; done; exec "$@"'
        return ["unshare", "-m", "--propagation", "private", "sh", "-c", unmount, "sh",
                *super().command(faults)]  # fmt: skip


def test_the_agent_mounts_a_missing_bpffs_and_enforces(
    cgroup: Path, tmp_path: Path, netns: NetNS
) -> None:
    pins = Path(f"/sys/fs/bpf/kassist-enforce-mount-{os.getpid()}")  # in the agent's mounts
    agent = _PrivateMounts(
        tmp_path, netns, args=_args(pins, tmp_path, "--enforce-guard", str(cgroup))
    ).start()
    try:
        log = agent.log.read_text().splitlines()
        assert (
            "kassist agent: in-kernel enforcement: mounted the BPF file system at /sys/fs/bpf "
            "(it was missing; as systemd does at boot)" in log
        ), log
        bad = ("write", "net.core.somaxconn", "99999")
        assert by_key_value(run_writer(cgroup, [bad], netns.path))[bad[1:]] == EPERM
        assert agent.proc is not None
        mounts = Path(f"/proc/{agent.proc.pid}/mountinfo").read_text().splitlines()
        assert len([m for m in mounts if " /sys/fs/bpf " in m and " - bpf " in m]) == 1
    finally:
        agent.stop()
    assert agent.wait_dead() == 0
    assert cgroup_programs(cgroup) == []


def test_best_effort_serves_and_status_names_every_cgroup_not_guarded(
    cgroup: Path, pin_root: Path, tmp_path: Path, netns: NetNS
) -> None:
    typo = Path(str(cgroup) + "-typo")
    agent = AgentProcess(
        tmp_path, netns,
        args=_args(pin_root, tmp_path, "--enforce-best-effort", "--enforce-guard", str(cgroup),
                   "--enforce-guard", str(typo)),
    ).start()  # fmt: skip
    try:
        bad = ("write", "net.core.somaxconn", "99999")
        assert by_key_value(run_writer(cgroup, [bad], netns.path))[bad[1:]] == EPERM
        status = run_kassist(["agent", "status", "--socket", str(agent.socket), "--format", "json"])
        assert status.returncode == 0, status.stderr
        enforce = json.loads(status.stdout)["status"]["enforce"]
        assert enforce["best_effort"] is True
        assert [(u["mode"], u["cgroup"]) for u in enforce["unguarded"]] == [("guard", str(typo))]
        assert [(a["mode"], a["cgroup"]) for a in enforce["attachments"]] == [
            ("guard", str(cgroup))
        ]
        text = run_kassist(["agent", "status", "--socket", str(agent.socket)]).stdout
        assert f"NOT enforced: guard {typo}: is not a directory" in text, text
        log = agent.log.read_text()
        assert f"--enforce-guard {typo} is NOT enforced" in log
    finally:
        agent.stop()
    assert agent.wait_dead() == 0


def test_best_effort_without_any_enforcement_lists_every_cgroup(
    cgroup: Path, tmp_path: Path, netns: NetNS
) -> None:
    pins = tmp_path / "pins"
    agent = AgentProcess(
        tmp_path, netns,
        args=_args(pins, tmp_path, "--enforce-best-effort", "--enforce-guard", str(cgroup)),
    ).start()  # fmt: skip
    try:
        status = run_kassist(["agent", "status", "--socket", str(agent.socket), "--format", "json"])
        enforce = json.loads(status.stdout)["status"]["enforce"]
        assert enforce["enabled"] is False
        assert [(u["mode"], u["cgroup"]) for u in enforce["unguarded"]] == [("guard", str(cgroup))]
        assert "no BPF file system" in enforce["unguarded"][0]["why"]
        text = run_kassist(["agent", "status", "--socket", str(agent.socket)]).stdout
        assert "in-kernel enforcement: OFF (best effort)" in text
        assert f"NOT enforced: guard {cgroup}: no BPF file system" in text
    finally:
        agent.stop()


# --- 8: the agent is exempt by who it is, not by a cgroup anyone can join ---------------

OUT_OF_POLICY = [
    ("write", "net.core.somaxconn", "99999"),
    ("write", "net.ipv4.tcp_syncookies", "0"),
]


def test_joining_the_agents_cgroup_gives_no_exemption_and_a_dead_agent_exempts_nobody(
    cgroup: Path, pin_root: Path, bpf_cache: Path
) -> None:
    home = cgroup / "agent"
    home.mkdir()
    holder = Holder(home, cgroup, pin_root, bpf_cache, load_policy().table())
    try:
        assert holder.started["agent_cgroup"] == str(home)
        assert holder.started["agent"]["tgid"] == holder.pid
        # the agent itself may write outside the policy (a rollback to an older value)
        assert holder.send(op="write", key="net.core.somaxconn", value="99999")["errno"] == 0
        # a guarded root task that joins the agent's cgroup is still guarded
        intruder = run_writer(home, OUT_OF_POLICY)
        assert set(by_key_value(intruder).values()) == {EPERM}
        holder.kill()  # the pins outlive it; its exemption must not
        assert set(by_key_value(run_writer(home, OUT_OF_POLICY)).values()) == {EPERM}
        # not even a process that gets the dead agent's pid
        reborn = run_writer_at_pid(holder.pid, home, OUT_OF_POLICY)
        assert reborn["pid"] == holder.pid
        assert set(by_key_value(reborn).values()) == {EPERM}
    finally:
        holder.kill()


def test_every_reload_enrolls_the_agent_again(
    cgroup: Path, pin_root: Path, bpf_cache: Path
) -> None:
    home, moved = cgroup / "agent", cgroup / "agent2"
    home.mkdir()
    moved.mkdir()
    holder = Holder(home, cgroup, pin_root, bpf_cache, load_policy().table())
    write = {"op": "write", "key": "net.core.somaxconn", "value": "99999"}
    try:
        assert holder.send(**write)["errno"] == 0
        holder.send(op="move", cgroup=str(moved))
        assert holder.send(**write)["errno"] == EPERM  # not where it enrolled: checked
        again = holder.send(op="reload")["agent"]
        assert again["tgid"] == holder.pid and again["cgroup_id"] == moved.stat().st_ino
        assert holder.send(**write)["errno"] == 0
    finally:
        holder.close()
    assert not pin_root.exists()


# --- 9: a glob covers keys that appear after the agent started ---------------------------


def test_a_glob_guards_an_interface_created_after_the_start(
    cgroup: Path, pin_root: Path, bpf_cache: Path, netns: NetNS
) -> None:
    pattern = "net.ipv4.neigh.*.base_reachable_time_ms"
    table = [{"pattern": pattern, "action": "allow", "type": "int", "min": 1000, "max": 60000}]
    enforcer = Enforcer(pin_root, bpf_cache, state_file=None)
    try:
        compiled = enforcer.start(table, guard=[cgroup])
        assert [g.pattern for g in compiled.globs] == [pattern]
        netns.run(
            "ip", "link", "add", "kassist0", "type", "veth", "peer", "name", "kassist1"
        )  # after the start
        key = "net.ipv4.neigh.kassist0.base_reachable_time_ms"
        doc = run_writer(cgroup, [("write", key, "100"), ("write", key, "30000"),
                                  ("write", key, "0x7530")], netns.path)  # fmt: skip
        assert by_key_value(doc) == {(key, "100"): EPERM, (key, "30000"): 0, (key, "0x7530"): EPERM}
        refused = list(itertools.islice(enforcer.refusals(timeout=HANG_S), 1))
        assert [(r.key, r.value, r.reason) for r in refused[:1]] == [(key, "100", "out of range")]
        # a name the glob does not cover passes untouched
        other = "net.ipv4.neigh.kassist0.gc_stale_time"
        assert by_key_value(run_writer(cgroup, [("write", other, "7")], netns.path)) == {
            (other, "7"): 0
        }
    finally:
        enforcer.stop()


# --- 10: a run pinned by an earlier agent is never left enforcing unseen ----------------


def test_an_agent_without_enforcement_removes_a_stale_run_in_one_line(
    cgroup: Path, pin_root: Path, bpf_cache: Path, tmp_path: Path, netns: NetNS
) -> None:
    holder = Holder(cgroup, cgroup, pin_root, bpf_cache, load_policy().table(), netns.path)
    holder.kill()
    [run] = list(pin_root.iterdir())
    assert len(cgroup_programs(cgroup)) == 1  # still enforcing, with nobody to say so
    agent = AgentProcess(tmp_path, netns, args=_args(pin_root, tmp_path)).start()
    try:
        lines = [ln for ln in agent.log.read_text().splitlines() if "pinned enforcement" in ln]
        assert lines == [
            f"kassist agent: in-kernel enforcement: removed the pinned enforcement of an earlier "
            f"agent (pid {holder.pid}, {run.name}: guard {cgroup}): enforcement was not requested"
        ]
        assert cgroup_programs(cgroup) == [] and not pin_root.exists()
        bad = ("write", "net.core.somaxconn", "99999")
        assert by_key_value(run_writer(cgroup, [bad], netns.path))[bad[1:]] == 0
        status = run_kassist(["agent", "status", "--socket", str(agent.socket), "--format", "json"])
        assert json.loads(status.stdout)["status"]["enforce"] is None
    finally:
        agent.stop()


def test_a_live_agents_run_is_never_taken_over(
    cgroup: Path, pin_root: Path, bpf_cache: Path
) -> None:
    holder = Holder(cgroup, cgroup, pin_root, bpf_cache, load_policy().table())
    try:
        second = Enforcer(pin_root, bpf_cache, state_file=None)
        with pytest.raises(ActionError, match=rf"belongs to a running agent \(pid {holder.pid}\)"):
            second.start(load_policy().table(), guard=[cgroup])
        assert len(cgroup_programs(cgroup)) == 1
        assert holder.send(op="write", key="net.core.somaxconn", value="4096")["errno"] == 0
    finally:
        holder.close()


# --- 11: a baseline in its security order, not numeric order ----------------------------


def test_a_baseline_with_a_security_order_is_never_made_less_strict(
    cgroup: Path, pin_root: Path, bpf_cache: Path, netns: NetNS
) -> None:
    # kernel.unprivileged_bpf_disabled's order (0 < 2 < 1) on a namespaced key: the host's
    # own key is never written by a test.
    key = "net.ipv4.tcp_syncookies"
    table: list[dict[str, Any]] = [
        {"pattern": key, "action": "baseline", "override": False, "order": [0, 2, 1]}
    ]
    enforcer = Enforcer(pin_root, bpf_cache, state_file=None)
    try:
        [rule] = enforcer.start(table, guard=[cgroup]).rules.values()
        assert rule.order == (0, 2, 1) and rule.baseline
        netns.write(key, "2")
        doc = run_writer(cgroup, [("write", key, "0"), ("write", key, "1")], netns.path)
        assert by_key_value(doc) == {(key, "0"): EPERM, (key, "1"): 0}  # 1 is the strictest
        doc = run_writer(cgroup, [("write", key, "2"), ("write", key, "0"), ("write", key, "3")],
                         netns.path)  # fmt: skip
        assert set(by_key_value(doc).values()) == {EPERM}  # 2 is less strict than 1
        assert netns.read(key) == "1"
        reasons: dict[str, str] = {}
        for refusal in enforcer.refusals(timeout=HANG_S):  # a hang guard, not a bound
            reasons[refusal.value] = refusal.reason
            if {"2", "3"} <= reasons.keys():
                break
        assert reasons["2"] == reasons["3"] == "lowers a security baseline"
    finally:
        enforcer.stop()
