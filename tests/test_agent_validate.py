"""The validator's parts: names, values, policy, limits, steps, rates, and the real trees
read-only (this machine's /proc/sys and /sys are read, never written, here)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actions.errors import ActionError, Rejected
from actions.knobs import (
    Roots,
    bracket_options,
    glob_match,
    parse_ints,
    parse_kernel_text,
    resolve,
)
from actions.limits import LIMITS, Machine
from actions.model import parse_recommendations
from actions.policy import load_policy, policy_from_dict
from actions.validate import validate, values_equal
from tests.agent_support import fake_roots, rec

GiB = 1 << 30


@pytest.fixture
def roots(tmp_path: Path) -> Roots:
    proc_sys, sys_root = fake_roots(tmp_path)
    return Roots(proc_sys, sys_root)


def _check(
    doc: object,
    roots: Roots,
    policy_doc: dict[str, Any] | None = None,
    recent: int | None = None,
) -> list[Rejected]:
    recs, errors = parse_recommendations(doc)
    if errors:
        return errors
    policy = load_policy() if policy_doc is None else policy_from_dict(policy_doc, "test")
    counter = None if recent is None else (lambda kind, key: recent)
    return validate(recs, policy, roots, counter)[1]


# --- reading is apart from parsing ------------------------------------------------------


def test_kernel_text_is_parsed_to_canonical_values() -> None:
    assert parse_kernel_text("4096\t131072\t6291456\n") == "4096 131072 6291456"
    assert parse_kernel_text("none [mq-deadline] kyber bfq\n") == "mq-deadline"
    assert parse_kernel_text("schedutil\n") == "schedutil"
    assert bracket_options("always [madvise] never") == ("always", "madvise", "never")
    assert bracket_options("performance schedutil") == ()
    assert parse_ints("1 -2 3") == (1, -2, 3) and parse_ints("1 x") is None
    assert values_equal("0010", "10") and not values_equal("10", "11")


@pytest.mark.parametrize(
    ("pattern", "name", "sep", "hit"),
    [
        ("net.ipv4.tcp_*", "net.ipv4.tcp_rmem", ".", True),
        ("net.ipv4.tcp_*", "net.ipv4.conf.all.rp_filter", ".", False),
        ("kernel.**", "kernel.yama.ptrace_scope", ".", True),
        ("kernel.**", "net.core.somaxconn", ".", False),
        ("block/*/queue/scheduler", "block/vda/queue/scheduler", "/", True),
        ("block/*/queue/scheduler", "block/vda/x/queue/scheduler", "/", False),
    ],
)
def test_globs_match_one_component_per_star(pattern: str, name: str, sep: str, hit: bool) -> None:
    assert glob_match(pattern, name, sep) is hit


# --- the real trees, read-only ------------------------------------------------------------


def test_real_sysctl_is_read_and_diffed_without_writing() -> None:
    before = Path("/proc/sys/net/core/somaxconn").read_text()
    current = int(before)
    target = max(128, min(65535, current * 2 if current < 16384 else current // 2))
    recs, _ = parse_recommendations(rec("net.core.somaxconn", target))
    planned, errors = validate(recs, load_policy(), Roots())
    assert errors == []
    assert (planned[0].old, planned[0].new) == (str(current), str(target))
    assert Path("/proc/sys/net/core/somaxconn").read_text() == before


def test_real_vm_keys_are_validated_only() -> None:
    swappiness = int(Path("/proc/sys/vm/swappiness").read_text())
    recs, _ = parse_recommendations(rec("vm.swappiness", 1000))
    _, errors = validate(recs, load_policy(), Roots())
    assert [e.rule for e in errors] == ["range"]
    assert int(Path("/proc/sys/vm/swappiness").read_text()) == swappiness


def test_real_sysfs_knobs_are_read_through_the_catalogue() -> None:
    queue = next(Path("/sys/block").glob("*/queue/scheduler"), None)
    if queue is None:
        pytest.skip("no block device with a scheduler here")
    dev = queue.parent.parent.name
    raw = queue.read_text()
    offered = bracket_options(raw)
    knob = resolve("sysfs", f"block/{dev}/queue/scheduler", Roots())
    assert knob.read() == parse_kernel_text(raw)
    other = next(
        (
            o
            for o in offered
            if o != knob.read() and o in LIMITS["block/*/queue/scheduler"]["values"]
        ),
        None,
    )
    if other is not None:
        recs, _ = parse_recommendations(rec(f"block/{dev}/queue/scheduler", other, kind="sysfs"))
        planned, errors = validate(recs, load_policy(), Roots())
        assert errors == [] and planned[0].old == knob.read()
    recs, _ = parse_recommendations(rec(f"block/{dev}/queue/scheduler", "cfq", kind="sysfs"))
    assert validate(recs, load_policy(), Roots())[1][0].rule == "range"
    assert queue.read_text() == raw
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists():
        knob = resolve("sysfs", "kernel/mm/transparent_hugepage/enabled", Roots())
        assert knob.read() in ("always", "madvise", "never")


# --- limits relative to this machine -------------------------------------------------------


def test_caps_scale_with_ram_and_cpus() -> None:
    small = Machine(ram=2 * GiB, cpus=2, page_size=4096)
    big = Machine(ram=256 * GiB, cpus=64, page_size=4096)
    doc = tomllib.loads((Path(__file__).parent.parent / "actions/default_policy.toml").read_text())
    for m, rmem_cap in ((small, 2 * GiB // 64), (big, GiB)):
        spec = policy_from_dict(doc, "default", m).spec("net.ipv4.tcp_rmem", ".")
        assert spec is not None and spec.max == rmem_cap
    tcp_mem = policy_from_dict(doc, "d", small).spec("net.ipv4.tcp_mem", ".")
    assert tcp_mem is not None and tcp_mem.max == 2 * GiB // 4096 // 4  # pages
    rps = policy_from_dict(doc, "d", small).spec("net.core.rps_sock_flow_entries", ".")
    assert rps is not None and rps.max == 2 * 32768


def test_ram_cap_rejects_what_the_kernel_would_take(roots: Roots) -> None:
    doc = {"allow": ["net.core.wmem_max"]}
    recs, _ = parse_recommendations(rec("net.core.wmem_max", 800000))  # the kernel takes it
    roomy = policy_from_dict(doc, "t", Machine(ram=4 * GiB, cpus=2, page_size=4096))
    assert validate(recs, roomy, roots)[1] == []
    tiny = policy_from_dict(doc, "t", Machine(ram=32 << 20, cpus=2, page_size=4096))
    errors = validate(recs, tiny, roots)[1]
    assert errors[0].rule == "range" and f"limit {(32 << 20) // 64}" in str(errors[0])


# --- the policy ------------------------------------------------------------------------


def test_policy_table_is_plain_data_for_a_bpf_map() -> None:
    table = load_policy().table()
    for row in table:
        assert set(row) <= {
            "pattern",
            "action",
            "type",
            "min",
            "max",
            "length",
            "values",
            "risk",
            "max_step",
            "override",
            "order",
        }
        assert all(isinstance(v, str | int | float | bool | list | None) for v in row.values())
    baseline = {r["pattern"]: r for r in table if r["action"] == "baseline"}
    # The security order the kernel map compiles too (least strict first; None: numeric).
    assert baseline["kernel.unprivileged_bpf_disabled"]["order"] == [0, 2, 1]
    assert baseline["kernel.kptr_restrict"]["order"] is None
    rows = {r["pattern"]: r for r in table if r["action"] == "allow"}
    assert rows["net.core.somaxconn"]["max"] == 65535
    assert rows["net.ipv4.tcp_congestion_control"]["values"] == ["cubic", "reno", "bbr"]
    assert {"pattern": "kernel.**", "action": "deny"} in table


def test_baseline_override_must_be_explicit(roots: Roots) -> None:
    allow = {
        "allow": ["kernel.kptr_restrict"],
        "keys": {"kernel.kptr_restrict": {"type": "int", "min": 0, "max": 2}},
    }
    assert _check(rec("kernel.kptr_restrict", 0), roots, allow)[0].rule == "baseline"
    assert _check(rec("kernel.kptr_restrict", 2), roots, allow) == []  # raising is fine
    override = {**allow, "baseline": {"override": ["kernel.kptr_restrict"]}}
    assert _check(rec("kernel.kptr_restrict", 0), roots, override) == []


def test_deny_wins_over_allow(roots: Roots) -> None:
    doc = {"allow": ["net.core.*"], "deny": ["net.core.somaxconn"]}
    errors = _check(rec("net.core.somaxconn", 8192), roots, doc)
    assert errors[0].rule == "policy" and "deny 'net.core.somaxconn'" in str(errors[0])


def test_an_allowed_key_without_a_known_range_is_refused(roots: Roots) -> None:
    doc: dict[str, Any] = {"allow": ["net.ipv4.ip_default_ttl"]}
    assert _check(rec("net.ipv4.ip_default_ttl", 65), roots, doc)[0].rule == "type"
    doc["keys"] = {"net.ipv4.ip_default_ttl": {"type": "int", "min": 32, "max": 128}}
    assert _check(rec("net.ipv4.ip_default_ttl", 65), roots, doc) == []
    assert _check(rec("net.ipv4.ip_default_ttl", 129), roots, doc)[0].rule == "range"


def test_policy_cannot_widen_the_built_in_limits(roots: Roots) -> None:
    doc = {"allow": ["net.core.somaxconn"], "keys": {"net.core.somaxconn": {"max": 10**9}}}
    assert _check(rec("net.core.somaxconn", 16384), roots, doc) == []
    errors = _check(
        rec("net.core.somaxconn", 70000, current=4096), roots, {**doc, "max_step": 100.0}
    )
    assert errors[0].rule == "range" and "65535" in str(errors[0])


def test_a_value_below_the_floor_may_move_to_the_floor_in_one_change(roots: Roots) -> None:
    # 16 -> 128 is x8, but no smaller change could bring somaxconn into policy.
    (roots.proc_sys / "net" / "core" / "somaxconn").write_text("16\n")
    assert _check(rec("net.core.somaxconn", 128), roots) == []
    assert _check(rec("net.core.somaxconn", 129), roots)[0].rule == "step"
    assert _check(rec("net.core.somaxconn", 64), roots)[0].rule == "range"


def test_step_factor_and_rate_come_from_the_policy(roots: Roots) -> None:
    assert _check(rec("net.core.somaxconn", 16384), roots)[0:] == []
    assert _check(rec("net.core.somaxconn", 16385), roots)[0].rule == "step"
    wide = {"allow": ["net.core.somaxconn"], "max_step": 8.0}
    assert _check(rec("net.core.somaxconn", 32768), roots, wide) == []
    assert _check(rec("net.core.somaxconn", 8192), roots, recent=2) == []
    errors = _check(rec("net.core.somaxconn", 8192), roots, recent=3)
    assert errors[0].rule == "rate" and "3 times in the last hour" in str(errors[0])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("allow = 'x'", "allow must be a list"),
        ("colour = 1", "unknown policy field"),
        ("max_step = 0.5", "max_step"),
        ("[keys.'a.b']\nrisk = 'extreme'", "risk"),
        ("[keys.'a.b']\nminimum = 1", "unknown field"),
        ("version = 2", "policy version"),
        ("allow = [", "not valid TOML"),
    ],
)
def test_a_bad_policy_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text + "\n")
    with pytest.raises(ActionError, match=message) as info:
        load_policy(path)
    assert "\n" not in info.value.one_line()


def test_every_rejection_names_its_rule_in_one_line(roots: Roots) -> None:
    errors = _check(
        [
            rec("net.core.somaxconn", 100000),
            rec("vm.drop_caches", 3, id="r2"),
            rec("kernel.kptr_restrict", 0, id="r3"),
        ],
        roots,
    )
    assert [e.rule for e in errors] == ["range", "policy", "baseline"]
    assert all(str(e).count("\n") == 0 and str(e).startswith(e.rule + ": ") for e in errors)
    assert all(e.to_dict()["message"] == str(e) for e in errors)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    target=st.text(alphabet=st.sampled_from("abc./\\-_ \n\x00;$`*[]~é"), max_size=40),
    value=st.one_of(
        st.integers(-(2**63), 2**63),
        st.text(max_size=40),
        st.lists(st.integers(-(2**40), 2**40), max_size=9),
    ),
    kind=st.sampled_from(["sysctl", "sysfs"]),
)
def test_arbitrary_names_and_values_never_slip_through(
    roots: Roots, target: str, value: object, kind: str
) -> None:
    recs, errors = parse_recommendations(rec(target, value, kind=kind))
    if errors:
        return
    planned, errors = validate(recs, load_policy(), roots)
    for p in planned if not errors else []:
        # Whatever passes is a real, allowed key under the tree with a clean value.
        assert p.knob.path.is_relative_to(roots.proc_sys if kind == "sysctl" else roots.sys)
        assert not set(p.new) & set("\n\x00;$`*[]~")
        assert load_policy().allowed_by(p.knob.key, "." if kind == "sysctl" else "/")
    for e in errors:
        assert "\n" not in str(e) and "\x00" not in str(e)
