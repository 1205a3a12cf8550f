"""Issue 27: recommendations through BPF submission and completion queues, judged in the kernel.

The real agent (``--bpf-queues``, in a private network namespace) writes each
recommendation into a BPF_MAP_TYPE_USER_RINGBUF, kassist_validate (a
BPF_PROG_TYPE_SYSCALL program run with BPF_PROG_RUN) checks it against the policy map
and answers through a BPF_MAP_TYPE_RINGBUF; the agent applies only what the kernel
accepted. Each test pins under its own bpffs directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.enforce.maps import compile_rules
from actions.enforce.queues import Queues, Submission, cgroup_of
from actions.policy import load_policy
from tests.agent_support import AgentProcess, NetNS, RawConnection, rec
from tests.conftest import HANG_S, ROOT, run_kassist, wait_until
from tests.enforce_support import (  # noqa: F401 (the fixtures bpf_cache, cgroup, pin_root)
    bpf_cache_fixture,
    cgroup_fixture,
    pin_root_fixture,
    require_enforcement,
)


@pytest.fixture
def netns() -> Iterator[NetNS]:
    require_enforcement()
    ns = NetNS()
    yield ns
    ns.close()


def _agent(tmp: Path, netns: NetNS, pin_root: Path, *more: str) -> AgentProcess:
    args = ("--bpf-queues", "--enforce-pin-root", str(pin_root), "--enforce-state",
            str(tmp / "enforce.json"), "--group", "", *more)  # fmt: skip
    return AgentProcess(tmp, netns, args=args)


def _submit(agent: AgentProcess, op: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    # one submission on the wire, as an extension sends it
    conn = RawConnection(agent.socket)
    try:
        conn.send({"op": op, "user_data": 1, "recommendations": recs})
        doc = conn.read()
    finally:
        conn.close()
    assert doc is not None
    return doc


def _events(agent: AgentProcess, name: str) -> list[dict[str, Any]]:
    return [e for e in agent.audit_events() if e["event"] == name]


def _queues_status(agent: AgentProcess) -> dict[str, Any]:
    done = run_kassist(["agent", "status", "--socket", str(agent.socket), "--format", "json"])
    assert done.returncode == 0, done.stderr
    queues: dict[str, Any] = json.loads(done.stdout)["status"]["enforce"]["queues"]
    return queues


def test_an_apply_is_judged_in_the_kernel_and_accounted_to_its_extension(
    tmp_path: Path, netns: NetNS, pin_root: Path
) -> None:
    agent = _agent(tmp_path, netns, pin_root).start()
    try:
        done = _submit(agent, "apply", [rec("net.core.somaxconn", 8192)])
        assert done["ok"] and done["verdict"] == "verified", done
        assert netns.read("net.core.somaxconn") == "8192"
        bad = _submit(agent, "validate", [rec("net.core.somaxconn", 999999)])
        # the kernel refused it by the same rule as user space: user space's words stand
        assert [e["rule"] for e in bad["errors"]] == ["range"]
        assert "above the limit 65535" in bad["errors"][0]["message"]
        verdicts = _events(agent, "kernel-verdict")  # one answer per entry, numbered
        assert [(v["seq"], v["accepted"], v["reason"]) for v in verdicts] == [
            (1, True, ""), (2, False, "out of range")
        ]  # fmt: skip
        queues = _queues_status(agent)
        assert queues["unrecorded"] == 0  # every verdict reached the audit log
        [mine] = [x for x in queues["extensions"] if x["uid"] == os.getuid()]
        assert (mine["submitted"], mine["accepted"], mine["refused"], mine["applied"]) == (
            2,
            1,
            1,
            1,
        )
        assert mine["refused_by_reason"] == {"out of range": 1}
        assert (
            mine["cgroup_id"] == cgroup_of(os.getpid()) > 0
        )  # the client's, as the kernel sees it
        text = run_kassist(["agent", "status", "--socket", str(agent.socket)]).stdout
        assert f"uid {os.getuid()} cgroup {mine['cgroup_id']}: submitted 2, accepted 1" in text
        # readable with bpftool, field by field (the maps carry their BTF)
        dump = subprocess.run(
            ["bpftool", "-j", "map", "dump", "pinned", str(pin_root / "queues" / "accounting")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        rows = [r["formatted"] for r in json.loads(dump.stdout)]
        assert {(r["key"]["uid"], r["value"]["applied"]) for r in rows} == {(os.getuid(), 1)}
    finally:
        agent.stop()
    assert agent.wait_dead() == 0
    assert not (pin_root / "queues").exists()  # a clean stop unpins everything


def test_the_agent_applies_nothing_the_kernel_refused(
    tmp_path: Path, netns: NetNS, pin_root: Path
) -> None:
    # The kernel's rate for each extension is a rule user space does not have: past it,
    # user space says yes and the kernel says no, and nothing is written.
    agent = _agent(tmp_path, netns, pin_root, "--bpf-queue-rate", "1", "--bpf-queue-burst", "2")
    agent.start()
    try:
        before = netns.read("net.core.somaxconn")
        answers = [_submit(agent, "validate", [rec("net.core.somaxconn", 2048)]) for _ in range(2)]
        assert all(a["ok"] for a in answers)  # the burst
        over = _submit(agent, "apply", [rec("net.core.somaxconn", 2048)])
        assert not over["ok"] and over["verdict"] == "rejected", over
        assert [e["rule"] for e in over["errors"]] == ["rate"]
        assert (
            "refused by the kernel's validator: over the extension's rate"
            in over["errors"][0]["message"]
        )
        assert netns.read("net.core.somaxconn") == before
        assert _events(agent, "kernel-disagreement") == []  # a kernel-only rule, not a split
    finally:
        agent.stop()


def test_without_the_pieces_the_queues_say_so_in_one_line_and_user_space_validates(
    tmp_path: Path, netns: NetNS
) -> None:
    pins = tmp_path / "pins"  # not a BPF file system, and not where the agent mounts one
    agent = _agent(tmp_path, netns, pins).start()
    try:
        lines = [ln for ln in agent.log.read_text().splitlines() if "BPF queues" in ln]
        assert lines == [
            f"kassist agent: BPF queues off: no BPF file system to pin to at {pins} (mount -t "
            "bpf bpf /sys/fs/bpf); validating in user space as before"
        ]
        done = _submit(agent, "validate", [rec("net.core.somaxconn", 999999)])
        assert [e["rule"] for e in done["errors"]] == ["range"]
        assert _events(agent, "kernel-verdict") == []
    finally:
        agent.stop()


#: Leave entries in a set of pinned queues as a killed agent would: some answered into
#: the completion queue and never read, some never run at all; then wait to be killed.
LEFTOVERS = r"""
import json, os, sys
from pathlib import Path
from actions.enforce import libbpf
from actions.enforce.maps import compile_rules
from actions.enforce.queues import Queues, RunCtx
from actions.enforce.ring import entry
from actions.policy import load_policy
q = Queues(Path(sys.argv[1]), Path(sys.argv[2]), per_second=0)
q.start()
q.publish(compile_rules(load_policy().table()))
loaded = q._loaded
def put(n, value):
    for i in range(n):
        assert loaded.sq.put(entry(1000 + i, "net/core/somaxconn", value, "4096"))
put(3, "8192")
libbpf.run_program(loaded.validate_fd, RunCtx(ext_id=0))  # answered, never read
put(2, "99999")  # never run
print(json.dumps({"pid": os.getpid()}), flush=True)
sys.stdin.readline()
"""


def _run_then_kill(script: str, pin_root: Path, bpf_cache: Path) -> None:
    # Run a script that leaves the queues in some state, then SIGKILL it there.
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(pin_root), str(bpf_cache)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert holder.stdout is not None
    json.loads(holder.stdout.readline())
    holder.kill()
    holder.wait()


def test_entries_a_killed_agent_left_are_answered_once_and_never_applied(
    tmp_path: Path, pin_root: Path, bpf_cache: Path
) -> None:
    require_enforcement()
    _run_then_kill(LEFTOVERS, pin_root, bpf_cache)  # the rings stay pinned
    assert (pin_root / "queues" / "cq").exists()
    second = Queues(pin_root, bpf_cache, per_second=0)
    try:
        second.start()
        orphans = second.orphans
        assert [(v.seq, v.accepted) for v in orphans] == [
            (1, True), (2, True), (3, True), (4, False), (5, False)
        ]  # fmt: skip
        assert second.notices == [
            "5 entries an earlier agent left in the queues were answered and not applied "
            "(nobody waits for them any more): seq 1, 2, 3, 4, 5"
        ]
        second.publish(compile_rules(load_policy().table()))
        [fresh] = second.validate([Submission(7, "net/core/somaxconn", "8192", "4096")])
        assert fresh.seq == 6 and fresh.accepted and fresh.user_data == 7  # numbering goes on
        [acct] = second.accounting()
        assert (acct["submitted"], acct["accepted"], acct["refused"]) == (6, 4, 2)
    finally:
        assert second.stop() == []
    assert not (pin_root / "queues").exists()


@pytest.mark.parametrize("step", ["queued", "answered"])
def test_an_agent_killed_inside_the_queues_loses_nothing_and_applies_nothing_twice(
    tmp_path: Path, netns: NetNS, pin_root: Path, step: str
) -> None:
    # Killed with the entry in the submission queue (not run), or with its answer in the
    # completion queue (not read): the next agent answers it, once, and applies nothing.
    agent = _agent(tmp_path, netns, pin_root)
    agent.start(env={"KASSIST_AGENT_FAULT": step})
    before = netns.read("net.core.somaxconn")
    conn = RawConnection(agent.socket)
    conn.send({"op": "apply", "user_data": 1, "recommendations": [rec("net.core.somaxconn", 2048)]})
    assert conn.read() is None  # no answer: the agent died at that step
    conn.close()
    assert agent.wait_dead() == -9
    agent.start()
    try:
        log = agent.log.read_text()
        assert (
            "BPF queues: 1 entries an earlier agent left in the queues were answered and not "
            "applied (nobody waits for them any more): seq 1" in log
        ), log
        [orphan] = _events(agent, "queue-orphan")
        assert (orphan["seq"], orphan["target"]) == (1, "net.core.somaxconn") and orphan["accepted"]
        read = [e["seq"] for e in _events(agent, "kernel-verdict")]
        assert read in ([1], [1, 1])  # "answered" may be read twice: before and after the kill
        assert netns.read("net.core.somaxconn") == before  # the orphan was not applied
        again = _submit(agent, "apply", [rec("net.core.somaxconn", 2048)])
        assert again["verdict"] == "verified" and netns.read("net.core.somaxconn") == "2048"
        assert [e["seq"] for e in _events(agent, "kernel-verdict")][-1] == 2  # numbering goes on
    finally:
        agent.stop()


#: Die half way through writing an entry (reserved in the agent's queue, never submitted).
HALF_WRITTEN = r"""
import ctypes, json, os, sys
from pathlib import Path
from actions.enforce import libbpf
from actions.enforce.maps import compile_rules
from actions.enforce.queues import Queues
from actions.enforce.ring import Entry
from actions.policy import load_policy
q = Queues(Path(sys.argv[1]), Path(sys.argv[2]), per_second=0)
q.start(compile_rules(load_policy().table()))
rb = q._loaded.sq._rb
assert libbpf.lib().user_ring_buffer__reserve(rb, ctypes.sizeof(Entry))
print(json.dumps({"pid": os.getpid()}), flush=True)
sys.stdin.readline()
"""


def test_an_entry_a_killed_agent_was_writing_does_not_block_the_queue(
    pin_root: Path, bpf_cache: Path
) -> None:
    require_enforcement()
    _run_then_kill(HALF_WRITTEN, pin_root, bpf_cache)  # the rings stay pinned
    second = Queues(pin_root, bpf_cache, per_second=0)
    try:
        second.start(compile_rules(load_policy().table()))
        assert second.notices == [
            "1 entries an earlier agent died writing were discarded (never submitted: nobody "
            "was told they were)"
        ]
        [v] = second.validate([Submission(1, "net/core/somaxconn", "8192", "4096")])
        assert v.accepted and v.seq == 1
        rings = second.positions()
        assert rings["sq"]["produced"] == rings["sq"]["consumed"] == 2  # the discarded, then ours
        assert second.status()["discarded"] == 1
    finally:
        second.stop()


#: An extension that is nobody writes entries straight into the queue it was given (fd
#: argv[1]), with only Python's standard library and libbpf: one in policy, one out of
#: range that claims to be root's, and one record of the wrong size.
PRODUCER = r"""
import ctypes, sys
from actions.enforce.ring import SubmissionQueue, entry
q = SubmissionQueue(int(sys.argv[1]))
assert q.put(entry(1, "net/core/somaxconn", "2048", "4096"))
assert q.put(entry(2, "net/core/somaxconn", "999999", "4096", uid=0, cgroup_id=1))
assert q.put((ctypes.c_uint64 * 3)(3, 0, 0))
q.close()
print("written")
"""


def test_an_unprivileged_extension_writes_its_own_queue_and_is_accounted_as_itself(
    pin_root: Path, bpf_cache: Path
) -> None:
    require_enforcement()
    q = Queues(pin_root, bpf_cache, per_second=0)
    try:
        q.start(compile_rules(load_policy().table()))
        nobody = 65534
        mine = cgroup_of(os.getpid())
        ext_id, fd = q.open_extension(nobody, mine)
        try:
            done = subprocess.run(
                ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                 "/usr/bin/python3", "-c", PRODUCER, str(fd)],
                capture_output=True, text=True, check=True, pass_fds=[fd], cwd=ROOT,
                env={"PYTHONPATH": str(ROOT)}, timeout=HANG_S,
            )  # fmt: skip
        finally:
            os.close(fd)  # handed over: the queue lives on in the map
        assert done.stdout.strip() == "written", done.stderr
        verdicts = q.kick(ext_id)
        assert [(v.user_data, v.accepted, v.reason) for v in verdicts] == [
            (1, True, ""), (2, False, "out of range"), (0, False, "not a valid submission entry")
        ]  # fmt: skip
        assert {(v.uid, v.cgroup_id, v.ext_id) for v in verdicts} == {(nobody, mine, ext_id)}
        [acct] = q.accounting()  # the entry that claimed to be root's counts as nobody's
        assert (acct["uid"], acct["submitted"], acct["accepted"], acct["refused"]) == (
            nobody, 3, 1, 2,
        )  # fmt: skip
        assert q.kick(ext_id) == []  # each entry is judged once
        q.close_extension(ext_id)
        with pytest.raises(OSError):
            q.kick(ext_id)
    finally:
        q.stop()


def test_the_pins_are_root_only(tmp_path: Path, pin_root: Path, bpf_cache: Path) -> None:
    require_enforcement()
    q = Queues(pin_root, bpf_cache)
    try:
        q.start()
        assert oct((pin_root / "queues").stat().st_mode)[-3:] == "700"
        probe = (
            "import ctypes, os, sys; lib = ctypes.CDLL('libbpf.so.1', use_errno=True);"
            "fd = lib.bpf_obj_get(sys.argv[1].encode()); print(fd, ctypes.get_errno())"
        )
        done = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3",
             "-c", probe, str(pin_root / "queues" / "sqs")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        fd, err = map(int, done.stdout.split())
        assert fd < 0 and err == 13  # EACCES: extensions reach the queues through the agent
    finally:
        q.stop()


def test_a_group_member_is_accounted_as_itself(
    tmp_path: Path, netns: NetNS, pin_root: Path
) -> None:
    reachable = Path(tempfile.mkdtemp(prefix="kassist-peer-"))  # pytest's own dir is 0700
    reachable.chmod(0o755)
    agent = AgentProcess(
        tmp_path, netns,
        args=("--bpf-queues", "--enforce-pin-root", str(pin_root), "--group", "nogroup"),
    )  # fmt: skip
    agent.socket = reachable / "agent.sock"
    agent.start()
    client = r"""
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
rec = json.loads(sys.argv[2])
s.sendall(json.dumps({"op": "validate", "user_data": 1, "recommendations": [rec]}).encode() + b"\n")
buf = b""
while not buf.endswith(b"\n"):
    buf += s.recv(65536)
print(buf.decode())
"""
    try:
        done = subprocess.run(
            ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3",
             "-c", client, str(agent.socket), json.dumps(rec("net.core.somaxconn", 999999))],
            capture_output=True, text=True, check=True, timeout=HANG_S,
        )  # fmt: skip
        answer = json.loads(done.stdout)
        assert [e["rule"] for e in answer["errors"]] == ["range"]
        nobody = 65534
        [theirs] = [x for x in _queues_status(agent)["extensions"] if x["uid"] == nobody]
        assert (theirs["submitted"], theirs["refused"]) == (1, 1)
    finally:
        agent.stop()
        shutil.rmtree(reachable, ignore_errors=True)


def test_sighup_swaps_the_queues_policy_whole(tmp_path: Path, netns: NetNS, pin_root: Path) -> None:
    policy = tmp_path / "policy.toml"
    default = (ROOT / "actions" / "default_policy.toml").read_text()
    policy.write_text(default)
    agent = AgentProcess(
        tmp_path, netns, policy=policy,
        args=("--bpf-queues", "--enforce-pin-root", str(pin_root), "--group", ""),
    ).start()  # fmt: skip
    try:
        assert _submit(agent, "validate", [rec("net.core.somaxconn", 3000)])["ok"]
        policy.write_text(default + '\n[keys."net.core.somaxconn"]\nmax = 2000\n')
        assert agent.proc is not None
        agent.proc.send_signal(1)  # SIGHUP
        [reload] = wait_until(
            lambda: _events(agent, "policy-reload"), "the policy reloaded", poll_s=0.05
        )
        assert reload["generation"] == 2
        after = _submit(agent, "validate", [rec("net.core.somaxconn", 3000)])
        assert [e["rule"] for e in after["errors"]] == ["range"]
        assert not _events(agent, "kernel-verdict")[-1]["accepted"]  # the kernel said no too
    finally:
        agent.stop()
