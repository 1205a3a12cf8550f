"""The default policy's tuning keys (what ``kassist tune`` recommends), ``deny_except``,
the neighbour-threshold invariant and the dirty_*_bytes floors, against fake trees."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from actions.errors import ActionError, Rejected
from actions.knobs import Roots
from actions.limits import Machine
from actions.model import parse_recommendations
from actions.policy import load_policy, policy_from_dict
from actions.validate import validate
from tests.agent_support import fake_roots, rec

GiB = 1 << 30
DEFAULT = Path(__file__).parent.parent / "actions" / "default_policy.toml"
#: Stock values of the keys tune recommends that the shared fake tree does not hold.
TUNING_TREE = {
    "kernel/pid_max": "32768",
    "kernel/threads-max": "192730",
    "kernel/sched_autogroup_enabled": "1",
    "net/ipv4/neigh/default/gc_thresh1": "128",
    "net/ipv4/neigh/default/gc_thresh2": "512",
    "net/ipv4/neigh/default/gc_thresh3": "1024",
    "net/netfilter/nf_conntrack_max": "262144",
    "net/core/netdev_budget_usecs": "8000",
    "vm/dirty_bytes": "0",
    "vm/dirty_background_bytes": "0",
}


@pytest.fixture
def roots(tmp_path: Path) -> Roots:
    proc_sys, sys_root = fake_roots(tmp_path)
    for rel, text in TUNING_TREE.items():
        path = proc_sys / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return Roots(proc_sys, sys_root)


def _rules(doc: object, roots: Roots) -> list[str]:
    recs, errors = parse_recommendations(doc)
    assert errors == []
    return [e.rule for e in validate(recs, load_policy(), roots)[1]]


def _errors(doc: object, roots: Roots) -> list[Rejected]:
    recs, _ = parse_recommendations(doc)
    return validate(recs, load_policy(), roots)[1]


def test_pid_max_and_threads_max_are_allowed_by_name_only(roots: Roots) -> None:
    assert _rules(rec("kernel.pid_max", 65536), roots) == []
    assert _rules(rec("kernel.threads-max", 385460), roots) == []
    # kernel.** still denies every other kernel key, even one with a known range.
    errors = _errors(rec("kernel.sched_autogroup_enabled", 0), roots)
    assert [(e.rule, "kernel.**" in e.why) for e in errors] == [("policy", True)]
    table = load_policy().table()
    assert {"pattern": "kernel.**", "action": "deny"} in table
    assert {"pattern": "kernel.pid_max", "action": "except"} in table


@pytest.mark.parametrize(
    ("entry", "why"),
    [("kernel.*_max", "is a glob"), ("kernel.kptr_restrict", "security-baseline key")],
)
def test_deny_except_takes_no_glob_and_no_baseline_key(entry: str, why: str) -> None:
    doc = {"allow": ["kernel.**"], "deny": ["kernel.**"], "deny_except": [entry]}
    with pytest.raises(ActionError, match=why):
        policy_from_dict(doc, "test")


def test_the_baseline_is_untouched_by_the_tuning_keys(roots: Roots) -> None:
    assert _rules(rec("net.ipv4.tcp_syncookies", 2), roots) == []  # on -> always: allowed
    assert _rules(rec("net.ipv4.tcp_syncookies", 0), roots) == ["baseline"]
    assert _rules(rec("kernel.kptr_restrict", 0), roots) == ["baseline"]
    assert _rules(rec("kernel.kptr_restrict", 2), roots) == ["policy"]  # raising: still denied


def test_neighbour_thresholds_stay_in_order(roots: Roots) -> None:
    assert _rules(rec("net.ipv4.neigh.default.gc_thresh2", 2048), roots) == ["invariant"]
    both = [
        rec("net.ipv4.neigh.default.gc_thresh3", 4096),
        rec("net.ipv4.neigh.default.gc_thresh2", 2048, id="r2"),
    ]
    assert _rules(both, roots) == []


def test_dirty_bytes_cannot_switch_from_the_ratio_in_a_changeset(roots: Roots) -> None:
    # 0 means "the ratio is in use" and cannot be written back, so rollback could not
    # undo a switch: a tiny value is below the floor, a real one a step from 0 (as 1).
    assert _rules(rec("vm.dirty_bytes", 4), roots) == ["range"]
    assert _rules(rec("vm.dirty_bytes", 64 << 20), roots) == ["step"]
    (roots.proc_sys / "vm/dirty_bytes").write_text(f"{256 << 20}\n")
    (roots.proc_sys / "vm/dirty_background_bytes").write_text(f"{64 << 20}\n")
    lower = [rec("vm.dirty_bytes", 128 << 20), rec("vm.dirty_background_bytes", 32 << 20, id="r2")]
    assert _rules(lower, roots) == []


@pytest.mark.parametrize(
    ("key", "small", "big"),
    [
        ("kernel.threads-max", 2 * GiB // (64 << 10), 1 << 22),
        ("kernel.pid_max", 2 * (1 << 20), 4194304),
        ("net.netfilter.nf_conntrack_max", 2 * GiB // 2048, 1 << 24),
        ("net.ipv6.neigh.default.gc_thresh3", 2 * GiB // 4096, 1 << 20),
        ("net.ipv4.tcp_max_tw_buckets", 2 * GiB // 4096, 4 << 20),
        ("vm.min_free_kbytes", 2 * GiB // 1024 // 20, 256 * GiB // 1024 // 20),
    ],
)
def test_tuning_caps_scale_with_ram_and_cpus(key: str, small: int, big: int) -> None:
    doc = tomllib.loads(DEFAULT.read_text())
    for m, want in (
        (Machine(ram=2 * GiB, cpus=2, page_size=4096), small),
        (Machine(ram=256 * GiB, cpus=64, page_size=4096), big),
    ):
        spec = policy_from_dict(doc, "default", m).spec(key, ".")
        assert spec is not None and spec.max == want, (key, m, spec)
