"""In-kernel enforcement, proved in the running kernel (root): BPF cgroup-sysctl programs.

Each test makes its own ``kassist-enforce-*`` cgroup under the cgroup2 mount and pins
under its own bpffs directory; writers run in private network namespaces.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from actions.audit import Audit
from actions.enforce import Enforcer, Refusal, problems
from actions.enforce.libbpf import map_id
from actions.enforce.service import (
    EnforceSettings,
    KernelSide,
    audit_refusal,
    start_guard,
    stop_for_agent,
)
from actions.errors import ActionError
from actions.policy import load_policy
from actions.text import printable
from tests.agent_support import NetNS, rec
from tests.conftest import HANG_S, ROOT, wait_until
from tests.enforce_support import (  # noqa: F401 (the fixtures bpf_cache, cgroup, pin_root)
    all_gone,
    bpf_cache_fixture,
    bpftool_exists,
    by_key_value,
    cgroup2_mount,
    cgroup_fixture,
    cgroup_programs,
    make_cgroup,
    pin_root_fixture,
    remove_cgroup,
    run_writer,
)

EPERM = errno.EPERM


@pytest.fixture
def enforcer(pin_root: Path, bpf_cache: Path, tmp_path: Path) -> Iterator[Enforcer]:
    audit = Audit(tmp_path / "audit.jsonl", journald=None)
    e = Enforcer(pin_root, bpf_cache, audit_refusal(audit), tmp_path / "enforce.json")
    yield e
    e.stop()
    audit.close()


def _refusals(e: Enforcer, count: int) -> list[Refusal]:
    # At least ``count`` refusals must come (a hang guard only), then every one that
    # follows them within half a second of quiet: one too many fails the callers' checks.
    got: list[Refusal] = []

    def enough() -> bool:
        got.extend(e.refusals(timeout=0.5))
        return len(got) >= count

    wait_until(enough, f"{count} refusal(s) reported", poll_s=0)
    return got


def _audit(tmp_path: Path) -> list[dict[str, Any]]:
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


REFUSED = [
    ("write", "net.core.somaxconn", "99999"),  # above the range 128..65535
    ("write", "net.core.somaxconn", "0x1000"),  # hex: the kernel reads base 0
    ("write", "net.core.somaxconn", "0200"),  # octal 128 in the kernel, 200 to a naive parser
    ("write", "net.ipv4.tcp_congestion_control", "htcp"),  # not cubic, reno or bbr
    ("write", "net.ipv4.tcp_rmem", "4096 87380"),  # two ints where three are due
    ("write", "net.ipv4.ip_local_port_range", "80 60999"),  # 80 < 1024
    ("write", "net.ipv4.tcp_congestion_control", "reno\x1b[2J"),  # a terminal escape too
]
ALLOWED = [
    ("write", "net.core.somaxconn", "4096"),
    ("write", "net.ipv4.tcp_congestion_control", "reno"),
    ("write", "net.ipv4.tcp_rmem", "4096 87380 6291456"),
    ("write", "net.ipv4.ip_local_port_range", "20000 60999"),
    ("write", "net.ipv4.ip_forward", "1"),  # not managed by the policy: passes untouched
]


def test_guard_refuses_out_of_policy_writes_and_audits_them(
    enforcer: Enforcer, cgroup: Path, tmp_path: Path
) -> None:
    compiled = enforcer.start(load_policy().table(), guard=[cgroup])
    assert "net.core.somaxconn" in compiled.rules
    assert enforcer.agent["tgid"] == os.getpid()  # enrolled: the kernel knows who the agent is
    before = time.time()
    doc = run_writer(cgroup, [*REFUSED, *ALLOWED])
    after = time.time()
    result = by_key_value(doc)
    for _op, key, value in REFUSED:
        assert result[(key, value)] == EPERM, (key, value)
    for _op, key, value in ALLOWED:
        assert result[(key, value)] == 0, (key, value)
    reads = {(r["key"], r["value"]): r.get("read") for r in doc["results"]}
    assert reads[("net.core.somaxconn", "4096")] == "4096"
    assert reads[("net.ipv4.tcp_rmem", "4096 87380 6291456")] == "4096 87380 6291456"

    got = _refusals(enforcer, len(REFUSED))
    assert [(r.key, r.value) for r in got] == [(k, printable(v)) for _o, k, v in REFUSED]
    assert got[-1].value == "reno\\x1b[2J"  # escaped: it is shown on an admin's terminal
    assert {r.pid for r in got} == {doc["pid"]}
    assert {r.mode for r in got} == {"guard"}
    assert {r.cgroup for r in got} == {"/" + cgroup.name}
    assert got[0].reason == "out of range" and got[3].reason == "not an allowed word"
    assert before <= got[0].time <= after  # wall-clock seconds, stamped as the write happened
    audited = [e for e in _audit(tmp_path) if e["event"] == "enforce-refusal"]
    assert [(e["pid"], e["key"], e["value"]) for e in audited] == [
        (doc["pid"], r.key, r.value) for r in got
    ]


def test_lockdown_refuses_every_write_and_every_read_works(
    enforcer: Enforcer, cgroup: Path
) -> None:
    enforcer.start(load_policy().table(), lockdown=[cgroup])
    keys = ["net.core.somaxconn", "net.ipv4.ip_forward", "net.ipv4.tcp_fin_timeout"]
    writes = [("write", k, v) for k, v in zip(keys, ["4096", "1", "30"], strict=True)]
    ops = [("read", k, "") for k in keys] + writes
    doc = run_writer(cgroup, ops)
    reads = [r for r in doc["results"] if r["op"] == "read"]
    assert [r["errno"] for r in reads] == [0, 0, 0] and all(r["read"] for r in reads)
    assert set(by_key_value(doc).values()) == {EPERM}  # in policy or not: refused
    got = _refusals(enforcer, 3)
    assert [(r.pid, r.key, r.mode) for r in got] == [(doc["pid"], k, "lockdown") for k in keys]


def test_stop_leaves_no_program_map_or_link_behind(
    enforcer: Enforcer, cgroup: Path, pin_root: Path
) -> None:
    enforcer.start(load_policy().table(), lockdown=[], guard=[cgroup])
    status = enforcer.status()
    assert status["attachments"][0]["attached"] is True
    compiled = enforcer.compiled
    assert compiled is not None
    assert {r["key"] for r in status["rules"]} == {
        *compiled.rules,
        *(g.pattern for g in compiled.globs),
    }
    link_id = status["attachments"][0]["link_id"]
    loaded = enforcer._loaded
    assert loaded is not None
    maps = [map_id(loaded.rules_fd), map_id(loaded.ring_fd), map_id(loaded.inner_fd)]
    progs = [p["id"] for p in cgroup_programs(cgroup)]
    assert len(progs) == 1 and bpftool_exists("link", link_id)
    assert all(bpftool_exists("map", m) for m in maps)

    enforcer.stop()
    assert cgroup_programs(cgroup) == []
    assert all_gone("link", [link_id]) and all_gone("prog", progs)
    assert all_gone("map", maps)
    assert not pin_root.exists()
    assert by_key_value(run_writer(cgroup, [REFUSED[0]]))[REFUSED[0][1:]] == 0


def _table(lo: int, hi: int, keys: list[str], filler: int) -> list[dict[str, Any]]:
    # The watched keys are spread among filler keys, so that a reload writing rules in
    # place one by one would leave a window (milliseconds) where some are old, some new.
    rows: list[dict[str, Any]] = []
    for i, key in enumerate(keys):
        rows += [{"pattern": f"net.kassist.filler{i}_{j}", "action": "allow", "type": "int",
                  "min": lo, "max": hi} for j in range(filler)]  # fmt: skip
        rows.append({"pattern": key, "action": "allow", "type": "int", "min": lo, "max": hi})
    return rows


LOOPER = r"""
import json, os, sys
cg, keys, flag = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
open(os.path.join(cg, "cgroup.procs"), "w").write(str(os.getpid()))
seq, after = [], None
def write(key, value):
    fd = os.open("/proc/sys/" + key.replace(".", "/"), os.O_WRONLY)
    try:
        os.write(fd, value.encode())
        return 0
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)
for rnd in range(200000):
    for key in keys:
        # 1500 only rule set A allows, 3500 only B: each write tells which one it met
        seq.append(("A" if write(key, "1500") == 0 else "B", key, "1500"))
        seq.append(("B" if write(key, "3500") == 0 else "A", key, "3500"))
    if rnd == 0:
        print("go", flush=True)
    if after is None and os.path.exists(flag):
        after = rnd
    if after is not None and rnd > after + 50:
        break
print(json.dumps(seq))
"""

LOOP_KEYS = [
    "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_notsent_lowat",
]  # fmt: skip


def test_reload_swaps_the_whole_policy_with_no_moment_of_mixed_rules(
    enforcer: Enforcer, cgroup: Path, tmp_path: Path
) -> None:
    enforcer.start(_table(1000, 2000, LOOP_KEYS, 500), guard=[cgroup])
    assert enforcer.generation == 1
    flag = tmp_path / "reloaded"
    proc = subprocess.Popen(
        ["unshare", "-n", sys.executable, "-c", LOOPER, str(cgroup), json.dumps(LOOP_KEYS),
         str(flag)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "go"
    time.sleep(0.2)
    enforcer.reload(_table(3000, 4000, LOOP_KEYS, 500))
    time.sleep(0.2)
    flag.touch()
    out, _ = proc.communicate(timeout=HANG_S)
    seq = json.loads(out)
    gens = "".join(g for g, _k, _v in seq)
    # one switch from A to B, and never back: no write met a mix of old and new rules
    assert gens.startswith("A") and gens.endswith("B"), gens[:40] + "..." + gens[-40:]
    assert gens.count("BA") == 0 and gens.count("AB") == 1
    assert enforcer.generation == 2 and enforcer.status()["kernel_generation"] == 2
    refused = _refusals(enforcer, 1)
    assert refused and all(
        r.generation == (1 if r.value == "3500" else 2) for r in list(enforcer.recent)
    )


def test_agent_writes_outside_the_guarded_cgroups_still_apply_and_verify(
    enforcer: Enforcer, cgroup: Path, tmp_path: Path
) -> None:
    guarded = make_cgroup("g")
    netns = NetNS()
    try:
        enforcer.start(load_policy().table(), lockdown=[cgroup], guard=[guarded])
        before = int(netns.read("net.core.somaxconn"))
        new = str(min(before * 2, 65535))
        script = (
            "import json, sys\nfrom pathlib import Path\n"
            "from actions.agent import Agent, Paths\nfrom actions.policy import load_policy\n"
            "t = Path(sys.argv[1])\n"
            "a = Agent(load_policy(), Paths(t / 'j.db', t / 'a.jsonl', t / 'c.conf'))\n"
            "print(json.dumps(a.apply(json.loads(sys.argv[2]), {'agent': 'test'}).to_wire(None)))\n"
        )
        recs = json.dumps([rec("net.core.somaxconn", new)])
        done = netns.run(sys.executable, "-c", script, str(tmp_path), recs, cwd=ROOT)
        res = json.loads(done.stdout)
        assert res["ok"] and res["changeset"]["state"] == "verified", res
        assert netns.read("net.core.somaxconn") == new
        # the same in-policy value, from the locked-down cgroup in the same namespace: refused
        locked = run_writer(cgroup, [("write", "net.core.somaxconn", str(before))], netns.path)
        assert by_key_value(locked)[("net.core.somaxconn", str(before))] == EPERM
        assert netns.read("net.core.somaxconn") == new
    finally:
        netns.close()
        enforcer.stop()
        remove_cgroup(guarded)


HOLDER = r"""
import sys, time
from pathlib import Path
from actions.enforce import Enforcer
from actions.policy import load_policy
e = Enforcer(Path(sys.argv[1]), Path(sys.argv[2]), state_file=None)
e.start(load_policy().table(), guard=[Path(sys.argv[3])])
print(e.attachments()[0].link_id, flush=True)
time.sleep(600)
"""


def test_a_killed_agent_leaves_the_kernel_enforcing_until_the_next_one_replaces_it(
    enforcer: Enforcer, cgroup: Path, pin_root: Path, bpf_cache: Path
) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(pin_root), str(bpf_cache), str(cgroup)],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    assert holder.stdout is not None
    old_link = int(holder.stdout.readline())
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    [old_run] = list(pin_root.iterdir())
    bad = ("write", "net.core.somaxconn", "99999")
    assert by_key_value(run_writer(cgroup, [bad]))[bad[1:]] == EPERM  # pinned: still enforced

    enforcer.start(load_policy().table(), guard=[cgroup])
    assert enforcer.notices == [
        f"replaced the pinned enforcement of an earlier agent (pid {holder.pid}, "
        f"{old_run.name}: guard {cgroup})"
    ]
    assert not old_run.exists() and all_gone("link", [old_link])
    assert len(cgroup_programs(cgroup)) == 1
    assert by_key_value(run_writer(cgroup, [bad]))[bad[1:]] == EPERM
    enforcer.stop()
    assert cgroup_programs(cgroup) == [] and not pin_root.exists()


def test_missing_capabilities_are_one_line_each_and_stop_the_agent_unless_best_effort(
    cgroup: Path, tmp_path: Path, pin_root: Path, bpf_cache: Path
) -> None:
    as_nobody = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
         "from actions.enforce import problems; print(problems())"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    assert as_nobody.stdout.startswith("['not root: ")
    assert problems([tmp_path]) == [
        f"{tmp_path} is not a directory of the cgroup v2 hierarchy at {cgroup2_mount()}"
    ]
    lines: list[str] = []
    audit = Audit(tmp_path / "audit.jsonl", journald=None)
    settings = EnforceSettings(guard=(tmp_path,), pin_root=pin_root, cache_dir=bpf_cache,
                               state_file=tmp_path / "e.json")  # fmt: skip
    with pytest.raises(ActionError) as refused:
        start_guard(load_policy(), audit, settings, lines.append)
    assert refused.value.one_line() == (
        f"in-kernel enforcement was requested and cannot run: --enforce-guard {tmp_path}: is not "
        f"a directory of the cgroup v2 hierarchy at {cgroup2_mount()}: fix it, or serve with "
        "--enforce-best-effort to run without it"
    )
    assert lines == [] and _audit(tmp_path)[-1]["event"] == "enforce-unavailable"
    best = replace(settings, best_effort=True, guard=(tmp_path, cgroup))
    enforcer = start_guard(load_policy(), audit, best, lines.append)
    try:
        assert enforcer is not None and enforcer.running
        assert lines[0] == (
            f"in-kernel enforcement (best effort): --enforce-guard {tmp_path} is NOT enforced: is "
            f"not a directory of the cgroup v2 hierarchy at {cgroup2_mount()}"
        )
        assert [u.cgroup for u in enforcer.unguarded] == [str(tmp_path)]
        assert [a.cgroup for a in enforcer.attachments()] == [cgroup]
    finally:
        stop_for_agent(audit, KernelSide(enforcer, None))
    with pytest.raises(ActionError, match="holds the agent itself"):
        Enforcer(pin_root, bpf_cache, state_file=None).start([], lockdown=[cgroup2_mount()])
    assert not pin_root.exists()


AGENT_IN_GUARD = r"""
import json, os, sys
from pathlib import Path
guarded, tmp, recs, pin_root, cache = sys.argv[1:6]
(Path(guarded) / "agent" / "cgroup.procs").write_text(str(os.getpid()))
from actions.agent import Agent, Paths
from actions.enforce import Enforcer
from actions.policy import load_policy
policy, t = load_policy(), Path(tmp)
e = Enforcer(Path(pin_root), Path(cache), state_file=None)
e.start(policy.table(), guard=[Path(guarded)])
a = Agent(policy, Paths(t / "j.db", t / "a.jsonl", t / "c.conf"))
key = "/proc/sys/net/core/somaxconn"
applied = a.apply(json.loads(recs), {"agent": "test"}).to_wire(None)
after_apply = open(key).read().strip()
rolled = a.rollback({"agent": "test"}, applied["changeset"]["id"], None).to_wire(None)
print(json.dumps({"applied": applied, "after_apply": after_apply, "rolled": rolled,
                  "after_rollback": open(key).read().strip(), "agent_cgroup": e.agent_cgroup}),
      flush=True)
sys.stdin.readline()  # the test checks a sibling writer while the guard is still attached
e.stop()
"""


def test_the_agent_in_its_own_cgroup_below_a_guard_may_roll_back_outside_the_policy(
    cgroup: Path, tmp_path: Path, pin_root: Path, bpf_cache: Path
) -> None:
    (cgroup / "agent").mkdir()
    netns = NetNS()
    try:
        netns.write("net.core.somaxconn", "100")  # below the policy's 128: from before kassist
        recs = json.dumps([rec("net.core.somaxconn", "200")])
        agent = subprocess.Popen(
            ["nsenter", f"--net={netns.path}", sys.executable, "-c", AGENT_IN_GUARD, str(cgroup),
             str(tmp_path), recs, str(pin_root), str(bpf_cache)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert agent.stdout is not None and agent.stdin is not None
        res = json.loads(agent.stdout.readline())
        assert res["agent_cgroup"] == str(cgroup / "agent")
        assert res["applied"]["ok"] and res["after_apply"] == "200"
        assert res["rolled"]["ok"], res["rolled"]
        assert res["after_rollback"] == "100"  # the kernel let the agent's restore through
        # ...but nobody else in the guarded cgroup may write that value
        bad = ("write", "net.core.somaxconn", "100")
        assert by_key_value(run_writer(cgroup, [bad], netns.path))[bad[1:]] == EPERM
        agent.stdin.close()
        assert agent.wait(HANG_S) == 0
    finally:
        netns.close()
        remove_cgroup(cgroup / "agent")
    assert not pin_root.exists()


IN_GUARDED = r"""
import json, os, sys
from pathlib import Path
(Path(sys.argv[1]) / "cgroup.procs").write_text(str(os.getpid()))
from actions.enforce import Enforcer
from actions.policy import load_policy
e = Enforcer(Path(sys.argv[2]), Path(sys.argv[3]), state_file=None)
e.start(load_policy().table(), guard=[Path(sys.argv[1])])
fd = os.open("/proc/sys/net/core/somaxconn", os.O_WRONLY)
try:
    os.write(fd, b"99999")
    err = 0
except OSError as exc:
    err = exc.errno
os.close(fd)
print(json.dumps({"errno": err, "agent": e.agent}), flush=True)
sys.stdin.readline()  # the test checks a sibling in the same cgroup meanwhile
e.stop()
"""


def test_an_agent_inside_the_guarded_cgroup_is_exempt_and_its_neighbours_are_not(
    cgroup: Path, pin_root: Path, bpf_cache: Path
) -> None:
    netns = NetNS()
    try:
        agent = subprocess.Popen(
            ["nsenter", f"--net={netns.path}", sys.executable, "-c", IN_GUARDED, str(cgroup),
             str(pin_root), str(bpf_cache)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert agent.stdout is not None and agent.stdin is not None
        res = json.loads(agent.stdout.readline())
        assert res["errno"] == 0 and res["agent"]["tgid"] == agent.pid
        bad = ("write", "net.core.somaxconn", "99999")
        assert by_key_value(run_writer(cgroup, [bad], netns.path))[bad[1:]] == EPERM
        agent.stdin.close()
        assert agent.wait(HANG_S) == 0
    finally:
        netns.close()
    assert not pin_root.exists()
