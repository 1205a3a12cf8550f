"""The adversarial round after issue 22 and 27: the guard and the BPF queues (real programs in
the real kernel).

Each test makes its own ``kassist-enforce-*`` cgroups and bpffs pin root; writers and agents
run in private network namespaces, so nothing of the host changes.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from actions.enforce import Enforcer
from actions.enforce.maps import compile_rules
from actions.enforce.queues import MAX_CGROUPS_PER_UID, KernelCheck, Queues, Submission, Verdict
from actions.knobs import Roots
from actions.policy import load_policy
from tests.agent_support import AgentProcess, NetNS, RawConnection, netns_held, rec
from tests.conftest import HANG_S, require, wait_until
from tests.enforce_support import (  # noqa: F401 (the fixtures bpf_cache, cgroup, pin_root)
    bpf_cache_fixture,
    by_key_value,
    cgroup_fixture,
    pin_root_fixture,
    require_enforcement,
    run_writer,
)

EPERM = errno.EPERM


netns = pytest.fixture(netns_held, name="netns")


# --- the guard reads values as the kernel does -------------------------------------------

#: Values the kernel's proc_dointvec reads as 0 (base 0: hex, octal) that are no plain decimal.
ZERO_SPELLINGS = ["0x0", "00", "0x00", " 000", "-0x0", "0X0"]


@pytest.mark.parametrize("order", [None, [0, 2, 1]])
def test_a_baseline_key_is_never_lowered_by_a_value_in_hex_or_octal(
    order: list[int] | None, cgroup: Path, pin_root: Path, bpf_cache: Path, netns: NetNS
) -> None:
    # A baseline key the policy does not otherwise type (kernel.kptr_restrict, ...): the
    # guard compared only plain decimal values and let "0x0" through, which the kernel
    # reads as 0. tcp_syncookies stands for them (namespaced: the host's keys stay).
    key = "net.ipv4.tcp_syncookies"
    table: list[dict[str, Any]] = [
        {"pattern": key, "action": "baseline", "override": False, "order": order}
    ]
    enforcer = Enforcer(pin_root, bpf_cache, state_file=None)
    try:
        [rule] = enforcer.start(table, guard=[cgroup]).rules.values()
        assert rule.type == "none" and rule.baseline
        netns.write(key, "1")
        doc = run_writer(cgroup, [("write", key, v) for v in ZERO_SPELLINGS], netns.path)
        assert by_key_value(doc) == {(key, v): EPERM for v in ZERO_SPELLINGS}
        assert netns.read(key) == "1"
        # plain decimal still passes where it keeps the floor
        doc = run_writer(cgroup, [("write", key, "1\n")], netns.path)
        assert by_key_value(doc) == {(key, "1\n"): 0}
    finally:
        enforcer.stop()


# --- a guarded user cannot fill the audit disk with refusals -----------------------------

#: Try argv[1] refused writes (run as nobody in a user and network namespace of its own,
#: where an unprivileged user may write its own net.* keys); print how many were refused.
#: A count, not a time: a loaded machine floods as hard as an idle one.
_REFUSED_LOOP = r"""
import os, sys
n = 0
for _ in range(int(sys.argv[1])):
    fd = os.open("/proc/sys/net/core/somaxconn", os.O_WRONLY)
    try:
        os.write(fd, b"99999")
    except OSError:
        n += 1
    os.close(fd)
print(n)
"""


def test_an_unprivileged_user_in_a_guarded_cgroup_cannot_fill_the_audit_log(
    cgroup: Path, pin_root: Path, tmp_path: Path, netns: NetNS
) -> None:
    require(shutil.which("setpriv") is not None, "needs setpriv (util-linux)")
    cap = 30000
    agent = AgentProcess(
        tmp_path, netns,
        args=("--enforce-pin-root", str(pin_root), "--enforce-state", str(tmp_path / "e.json"),
              "--enforce-guard", str(cgroup), "--audit-max-bytes", str(cap)),
    ).start()  # fmt: skip
    try:
        loop = subprocess.run(
            ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec setpriv --reuid=nobody '
             f'--regid=nogroup --clear-groups unshare -Urn /usr/bin/python3 -c "$0" 20000',
             _REFUSED_LOOP],
            capture_output=True, text=True, timeout=HANG_S, check=True,
        )  # fmt: skip
        refused = int(loop.stdout)
        assert refused > 1000, refused  # a real flood: far more than the log may take
        wait_until(
            lambda: any(e["event"] == "enforce-refusal" and e["uid"] == 65534
                        for e in agent.audit_events()),
            "nobody's refusals audited",
        )  # fmt: skip
        time.sleep(2.5)  # a quiet period: the rest of the flood is read, and may not pass the cap
        size = agent.audit.stat().st_size
        assert size < cap + 4096, size  # the cap holds: refusals past it are only counted
        # the agent still applies and keeps every write record
        done = RawConnection(agent.socket)
        done.send({"op": "apply", "user_data": 1,
                   "recommendations": rec("net.core.somaxconn", 8192)})  # fmt: skip
        assert (done.read() or {}).get("verdict") == "verified"
        done.close()
        assert [e["new"] for e in agent.audit_events() if e["event"] == "write"] == ["8192"]
    finally:
        agent.stop()


# --- the BPF queues: an extension's rate and its accounts cannot be escaped ---------------


def _judged(q: Queues, uid: int, cgroups: range, each: int) -> list[Verdict]:
    subs = [Submission(0, "net/core/somaxconn", "4096", "4096", uid, cg)
            for cg in cgroups for _ in range(each)]  # fmt: skip
    return q.validate(subs)


def test_an_extension_in_many_cgroups_keeps_one_rate(pin_root: Path, bpf_cache: Path) -> None:
    # A user may make cgroups of its own (systemd delegates user@UID.service's subtree):
    # each one was a new extension with a full bucket, so the rate limit was 50 x the burst.
    require_enforcement()
    q = Queues(pin_root, bpf_cache, per_second=1, burst=5)
    try:
        q.start(compile_rules(load_policy().table()))
        got = _judged(q, 1000, range(1, 51), 2)
        accepted = [v for v in got if v.accepted]
        assert len(accepted) <= 6, len(accepted)  # the burst, and a token that came meanwhile
        assert {v.reason for v in got if not v.accepted} == {"over the extension's rate"}
        # another user has a bucket of its own
        assert sum(v.accepted for v in _judged(q, 1001, range(1, 2), 5)) == 5
    finally:
        q.stop()


def test_a_full_accounting_map_neither_lifts_the_rate_nor_loses_a_count(
    pin_root: Path, bpf_cache: Path
) -> None:
    # The accounting map holds 4096 extensions: past that, new ones were neither counted nor
    # rate-limited at all.
    require_enforcement()
    q = Queues(pin_root, bpf_cache, per_second=1, burst=3)
    try:
        q.start(compile_rules(load_policy().table()))
        filler = _judged(q, 2000, range(1, 4097), 1)  # one entry from each of 4096 cgroups
        assert len(filler) == 4096
        late = _judged(q, 3000, range(5000, 5001), 10)  # a user the map has no room for
        assert {(v.accepted, v.reason) for v in late} == {
            (False, "no room to account for a new extension")
        }  # refused, never judged unaccounted
        assert sum(r["submitted"] for r in q.accounting()) == 4096
    finally:
        q.stop()


def test_the_agent_accounts_one_user_in_a_bounded_number_of_rows(
    cgroup: Path, pin_root: Path, bpf_cache: Path
) -> None:
    # What keeps one user from filling the accounting map: past MAX_CGROUPS_PER_UID of its
    # cgroups, the agent accounts its entries under cgroup 0 (unknown).
    q = Queues(pin_root, bpf_cache)
    check = KernelCheck(q, Roots())
    sleepers = []
    try:
        for i in range(MAX_CGROUPS_PER_UID + 8):
            child = cgroup / f"c{i}"
            child.mkdir()
            p = subprocess.Popen(["sleep", "60"])
            (child / "cgroup.procs").write_text(str(p.pid))
            sleepers.append(p)
        seen = {check._identity({"uid": 1000, "pid": p.pid})[1] for p in sleepers}
        assert len(seen) == MAX_CGROUPS_PER_UID + 1 and 0 in seen
        # another user is not crowded out
        assert check._identity({"uid": 1001, "pid": sleepers[-1].pid})[1] != 0
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
