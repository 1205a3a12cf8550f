"""``kassist agent serve --enforce-guard CGROUP``, end to end, as root.

The real daemon (in a private network namespace) attaches the guard program; a process
in the cgroup is refused by the kernel, the refusal reaches the audit log, ``kassist
agent status`` and ``kassist agent enforce status`` show it, and SIGTERM leaves nothing.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.agent_support import AgentProcess, NetNS
from tests.conftest import ROOT, run_kassist, wait_until
from tests.enforce_support import (
    all_gone,
    by_key_value,
    cgroup2_mount,
    cgroup_programs,
    make_cgroup,
    remove_cgroup,
    remove_pins,
    require_enforcement,
    run_writer,
)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[NetNS, Path, Path]]:
    require_enforcement()
    netns = NetNS()
    cgroup = make_cgroup("agent")
    pin_root = Path(f"/sys/fs/bpf/kassist-enforce-agent-{os.getpid()}")
    try:
        yield netns, cgroup, pin_root
    finally:
        netns.close()
        remove_pins(pin_root)
        remove_cgroup(cgroup)


def _wait_for(agent: AgentProcess, event: str) -> list[dict[str, Any]]:
    return wait_until(
        lambda: [e for e in agent.audit_events() if e["event"] == event],
        f"{event} audited",
        poll_s=0.05,
        context=lambda: str(agent.audit_events()),
    )


def _enforce_status_with(pin_root: Path, state: Path, text: str) -> str:
    # `kassist agent enforce status`'s output once it holds ``text``, else "".
    shown = run_kassist(["agent", "enforce", "status", "--pin-root", str(pin_root),
                         "--state", str(state)])  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return shown.stdout if text in shown.stdout else ""


def test_serve_with_enforce_guard_makes_the_kernel_refuse_and_audits(
    setup: tuple[NetNS, Path, Path], tmp_path: Path
) -> None:
    netns, cgroup, pin_root = setup
    state = tmp_path / "enforce.json"
    args = ("--enforce-guard", str(cgroup), "--enforce-pin-root", str(pin_root),
            "--enforce-state", str(state))  # fmt: skip
    agent = AgentProcess(tmp_path, netns, args=args).start()
    try:
        assert _wait_for(agent, "enforce-start")[0]["guard"] == [str(cgroup)]
        doc = run_writer(
            cgroup,
            [("write", "net.core.somaxconn", "99999"), ("write", "net.core.somaxconn", "4096")],
            netns.path,
        )
        assert by_key_value(doc) == {
            ("net.core.somaxconn", "99999"): errno.EPERM,
            ("net.core.somaxconn", "4096"): 0,
        }
        [refusal] = _wait_for(agent, "enforce-refusal")
        assert (refusal["pid"], refusal["key"], refusal["value"]) == (
            doc["pid"], "net.core.somaxconn", "99999",
        )  # fmt: skip

        status = run_kassist(["agent", "status", "--socket", str(agent.socket), "--format", "json"])
        assert status.returncode == 0, status.stderr
        enforce = json.loads(status.stdout)["status"]["enforce"]
        assert [(a["mode"], a["cgroup"], a["attached"]) for a in enforce["attachments"]] == [
            ("guard", str(cgroup), True)
        ]
        assert enforce["refusals"][0]["pid"] == doc["pid"]
        text = run_kassist(["agent", "status", "--socket", str(agent.socket)])
        assert f"in-kernel enforcement: guard {cgroup}; " in text.stdout
        assert f"pid {doc['pid']} python net.core.somaxconn='99999'" in text.stdout

        # the state file follows refusals within a second (written at most 2/s)
        shown = wait_until(
            lambda: _enforce_status_with(pin_root, state, f"pid {doc['pid']}"),
            "the state file shows the refusal",
            poll_s=0.2,
        )
        assert f"guard    {cgroup}" in shown and "attached" in shown
        assert "net.core.somaxconn" in shown and "128..65535" in shown
        assert f"pid {doc['pid']}" in shown and "'99999'" in shown
        link_id = enforce["attachments"][0]["link_id"]
    finally:
        agent.stop()
    assert agent.wait_dead() == 0
    assert _wait_for(agent, "enforce-stop")
    assert cgroup_programs(cgroup) == [] and all_gone("link", [link_id])
    assert not pin_root.exists() and not state.exists()
    off = run_kassist(["agent", "enforce", "status", "--pin-root", str(pin_root),
                       "--state", str(state)])  # fmt: skip
    assert off.returncode == 0 and "in-kernel enforcement: off" in off.stdout


def test_best_effort_serves_without_a_wrong_cgroup_and_says_so(
    setup: tuple[NetNS, Path, Path], tmp_path: Path
) -> None:
    netns, _cgroup, pin_root = setup
    args = ("--enforce-best-effort", "--enforce-guard", str(tmp_path), "--enforce-pin-root",
            str(pin_root), "--enforce-state", str(tmp_path / "enforce.json"))  # fmt: skip
    agent = AgentProcess(tmp_path, netns, args=args).start()
    try:
        status = run_kassist(["agent", "status", "--socket", str(agent.socket)])
        assert status.returncode == 0, status.stderr
    finally:
        agent.stop()
    off = [ln for ln in agent.log.read_text().splitlines() if "NOT enforced" in ln]
    assert off == [
        f"kassist agent: in-kernel enforcement (best effort): --enforce-guard {tmp_path} is NOT "
        f"enforced: is not a directory of the cgroup v2 hierarchy at {cgroup2_mount()}"
    ]
    assert not pin_root.exists()
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    as_nobody = run_kassist(["agent", "enforce", "status", "--pin-root", str(pin_root)],
                            prefix=nobody)  # fmt: skip
    assert as_nobody.returncode != 0 and as_nobody.stdout == ""
    assert as_nobody.stderr.strip().splitlines() == [
        "kassist: reading the pinned BPF programs needs root: run it with sudo"
    ]


def test_sighup_reloads_the_policy_and_the_kernel_follows(
    setup: tuple[NetNS, Path, Path], tmp_path: Path
) -> None:
    netns, cgroup, pin_root = setup
    policy = tmp_path / "policy.toml"
    default = (ROOT / "actions" / "default_policy.toml").read_text()
    policy.write_text(default)
    args = ("--enforce-guard", str(cgroup), "--enforce-pin-root", str(pin_root),
            "--enforce-state", str(tmp_path / "enforce.json"))  # fmt: skip
    agent = AgentProcess(tmp_path, netns, policy=policy, args=args).start()
    write = ("write", "net.core.somaxconn", "3000")
    try:
        _wait_for(agent, "enforce-start")
        assert by_key_value(run_writer(cgroup, [write], netns.path))[write[1:]] == 0
        policy.write_text(default + '\n[keys."net.core.somaxconn"]\nmax = 2000\n')
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGHUP)
        [reload] = _wait_for(agent, "policy-reload")
        assert reload["generation"] == 2
        doc = run_writer(cgroup, [write], netns.path)
        assert by_key_value(doc)[write[1:]] == errno.EPERM
        [refusal] = _wait_for(agent, "enforce-refusal")
        assert (refusal["pid"], refusal["generation"]) == (doc["pid"], 2)
        policy.write_text("not toml [")  # a broken file: the old policy stays, everywhere
        agent.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: "policy not reloaded" in agent.log.read_text(),
            "the broken policy refused",
            poll_s=0.05,
            context=agent.log.read_text,
        )
        assert by_key_value(run_writer(cgroup, [write], netns.path))[write[1:]] == errno.EPERM
        assert agent.proc.poll() is None
    finally:
        agent.stop()
