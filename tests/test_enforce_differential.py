"""Issue 27: the kernel's validator and the Python validator agree, on 10,000+ cases.

Hypothesis draws policies (allow and deny globs, ``deny_except``, ``[keys]`` specs,
baseline keys and overrides) and, for each, a hundred recommendations (key, value,
current value). Each policy is compiled into the BPF map and swapped in; every case
goes through the real BPF queues (``kassist_validate`` in the kernel) and through the
Python rules that the kernel implements too (``actions.validate``: baseline, policy,
type, range, in that order). The first rule each refuses by must be the same.

The one known difference, over a rule both implement, is pinned by its own test below:
values beyond a 64-bit integer.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actions.enforce.maps import compile_rules
from actions.enforce.queues import Queues, Submission
from actions.enforce.service import spec_lookup
from actions.errors import ActionError, Rejected
from actions.knobs import Knob, glob_match
from actions.limits import Machine
from actions.policy import Policy, policy_from_dict
from actions.validate import canonical_value, check_baseline, check_policy, check_range, check_type
from tests.enforce_support import (  # noqa: F401 (the fixture bpf_cache)
    bpf_cache_fixture,
    remove_pins,
    require_enforcement,
)

MACHINE = Machine(ram=8 << 30, cpus=2, page_size=4096)
INT64 = (-(1 << 63), (1 << 63) - 1)

#: Keys of kassist's own table (their specs come from it) and of made-up trees (globs).
REAL = ["net.core.somaxconn", "net.ipv4.tcp_rmem", "net.ipv4.tcp_congestion_control",
        "net.ipv4.tcp_syncookies", "vm.swappiness", "kernel.kptr_restrict",
        "kernel.unprivileged_bpf_disabled"]  # fmt: skip
EXACT = ["net.kq.a", "net.kq.b", "net.kq.c"]
#: (allow glob, keys the kernel has now, keys that appear later)
GLOBS = [
    ("net.kq.g1.*", ["net.kq.g1.x", "net.kq.g1.y"], ["net.kq.g1.late"]),
    ("net.kq.g2.**", ["net.kq.g2.a.leaf"], ["net.kq.g2.b.c.late"]),
    ("net.kq.g3.*.leaf", ["net.kq.g3.eth0.leaf"], ["net.kq.g3.veth9.leaf"]),
    ("net.kq.p*", ["net.kq.pa", "net.kq.pq"], ["net.kq.pz"]),
]
DENY = ["net.kq.g1.y", "net.kq.g2.**", "net.kq.d.*", "kernel.**", "net.kq.g3.*.leaf"]
UNMANAGED = ["net.kq.none", "net.kq.d.z", "net.kq.g1.deep.er"]
NOW = REAL + EXACT + [k for _g, now, _late in GLOBS for k in now] + ["net.kq.d.z"]
KEYS = sorted({*NOW, *(k for _g, _now, late in GLOBS for k in late), *UNMANAGED})
WORDS = ["cubic", "reno", "bbr", "fq", "htcp", "a_b", "x.y", "w-1", "Q+", "z9"]


def _spec(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["int", "ints", "choice", "none"]))
    if kind == "none":
        return {}
    if kind == "choice":
        words = draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=8, unique=True))
        return {"type": "choice", "values": words}
    lo = draw(st.one_of(st.none(), st.integers(-1000, 1000), st.sampled_from(INT64)))
    hi = draw(st.one_of(st.none(), st.integers(-1000, 100000), st.sampled_from(INT64)))
    spec: dict[str, Any] = {"type": kind}
    if lo is not None:
        spec["min"] = lo
    if hi is not None:
        spec["max"] = hi
    if kind == "ints":
        spec["length"] = draw(st.integers(1, 4))
    return spec


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    """A policy over :data:`KEYS`: what it allows and denies, its specs and baseline."""
    globs = draw(st.lists(st.sampled_from([g for g, _n, _l in GLOBS]), unique=True))
    exact = draw(st.lists(st.sampled_from(EXACT + REAL), unique=True))
    keys: dict[str, Any] = {}
    for pattern in globs + [k for k in exact if k in EXACT]:
        spec = _spec(draw)
        if spec:
            keys[pattern] = spec
    for key in [k for k in exact if k in REAL]:
        if draw(st.booleans()):  # narrow kassist's own range
            keys[key] = {"min": draw(st.integers(0, 300))}
    baseline = draw(st.lists(st.sampled_from([*EXACT, "net.kq.g1.x", "net.kq.pa"]), unique=True))
    return {
        "allow": globs + exact,
        "deny": draw(st.lists(st.sampled_from(DENY), unique=True)),
        "deny_except": draw(st.lists(st.sampled_from(["net.kq.g1.y", "net.kq.d.z"]), unique=True)),
        "keys": keys,
        "baseline": {
            "keys": baseline,
            "override": draw(st.lists(st.sampled_from(baseline or ["net.kq.a"]), unique=True)),
        },
    }


EDGES = [0, 1, -1, 2, 127, 128, 65535, 65536, 99999, *INT64]
ODD = ["-", "Cubic", "1e3", "0x10", "a b", ".x", "12a", "w" * 20, "007", "+5", "-0"]


def _raw_value(rng: random.Random) -> object:
    # an int (an edge, any 64-bit, or a small one), a vector, a word, or words
    def one() -> int:
        pick = rng.random()
        if pick < 0.4:
            return rng.choice(EDGES) + rng.choice([0, 0, -1, 1])
        if pick < 0.6:
            return rng.randint(*INT64)
        return rng.randint(-2000, 200000)

    shape = rng.random()
    if shape < 0.5:
        return one()
    if shape < 0.75:
        return [one() for _ in range(rng.randint(1, 5))]
    if shape < 0.9:
        return rng.choice(WORDS + ODD)
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 3)))


def cases(rng: random.Random, allowed: list[str], count: int = 100) -> list[tuple[str, str, str]]:
    """``count`` (key, new value, current value), canonical as the agent makes them.

    :param allowed: keys the policy allows (two in three cases are among them).
    """
    out = []
    for _ in range(count):
        key = rng.choice(allowed if allowed and rng.random() < 0.67 else KEYS)
        try:
            new = canonical_value(_raw_value(rng), key)
            current = canonical_value(_raw_value(rng), key)
        except Rejected:
            continue  # the value rule (user space only) answers it before any other
        out.append((key, new, current))
    return out


def python_rule(policy: Policy, key: str, new: str, current: str) -> str:
    """The first rule the Python validator refuses by, among those the kernel implements."""
    knob = Knob("sysctl", key, Path("/proc/sys", *key.split(".")), key)
    try:
        check_baseline(knob, current, new, policy)
        check_policy(knob, policy)
        spec = policy.spec(key, ".")
        if spec is None:
            raise Rejected("type", key, "no type or range")
        check_type(new, spec, key)
        check_range(new, spec, key, ())
    except Rejected as exc:
        return exc.rule
    return ""


def _in_int64(text: str) -> bool:
    # False for a value with a 64-bit overflow the validator reads as an int (<= 19 digits)
    ints = [w for w in text.split() if w.lstrip("-").isdigit() and len(w.lstrip("-")) <= 19]
    return all(INT64[0] <= int(w) <= INT64[1] for w in ints)


@pytest.fixture(scope="module")
def queues(bpf_cache: Path) -> Iterator[Queues]:
    require_enforcement()
    pin_root = Path(f"/sys/fs/bpf/kassist-enforce-diff-{os.getpid()}")
    q = Queues(pin_root, bpf_cache, per_second=0)
    try:
        q.start()
        yield q
    finally:
        q.stop()
        remove_pins(pin_root)


def _judge(queues: Queues, doc: dict[str, Any], batch: list[tuple[str, str, str]]) -> list[Any]:
    try:
        policy = policy_from_dict(doc, "hypothesis", MACHINE)
    except ActionError:
        return []  # not a policy the agent would load
    compiled = compile_rules(
        policy.table(), lambda: [k.replace(".", "/") for k in NOW], spec_lookup(policy)
    )
    try:
        compiled.require_fit()
    except ActionError:
        return []  # the agent refuses such a policy: nothing to compare
    queues.publish(compiled)
    subs = [Submission(i, k.replace(".", "/"), v, c) for i, (k, v, c) in enumerate(batch)]
    verdicts = queues.validate(subs)
    return [
        (key, new, current, python_rule(policy, key, new, current), v.rule)
        for (key, new, current), v in zip(batch, verdicts, strict=True)
    ]


def test_the_kernel_and_python_validators_agree_on_ten_thousand_cases(queues: Queues) -> None:
    tally: Counter[str] = Counter()
    mismatches: list[Any] = []

    @settings(
        max_examples=130, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                              HealthCheck.large_base_example],
    )  # fmt: skip
    @given(policies(), st.randoms(use_true_random=False))
    def check(doc: dict[str, Any], rng: random.Random) -> None:
        # the policy from hypothesis, its hundred cases from hypothesis' own random source
        allowed = [k for k in KEYS if any(glob_match(g, k, ".") for g in doc["allow"])]
        batch = [c for c in cases(rng, allowed) if _in_int64(c[1]) and _in_int64(c[2])]
        for key, new, current, python, kernel in _judge(queues, doc, batch):
            tally[python or "accepted"] += 1
            if python != kernel:
                mismatches.append((doc, key, new, current, python, kernel))

    check()
    report = "; ".join(f"{r} {n}" for r, n in tally.most_common())
    print(f"\ndifferential: {sum(tally.values())} cases ({report}); mismatches {len(mismatches)}")
    assert not mismatches, mismatches[:3]
    assert sum(tally.values()) >= 10_000, tally
    # every rule both implement was exercised, both ways
    assert {"accepted", "baseline", "policy", "type", "range"} <= set(tally), tally


def test_the_one_known_difference_is_values_beyond_64_bits(queues: Queues) -> None:
    # The kernel's program reads 64-bit ints: 2**63 is out of range there, while the
    # Python validator accepts it for a key with no ceiling (and the kernel's own sysctl
    # handler would refuse the write with EINVAL).
    doc = {"allow": ["net.kq.a"], "keys": {"net.kq.a": {"type": "int", "min": 0}}}
    huge = str(1 << 63)
    [(_k, _n, _c, python, kernel)] = _judge(queues, doc, [("net.kq.a", huge, "1")])
    assert (python, kernel) == ("", "range")
    [(_k, _n, _c, python, kernel)] = _judge(queues, doc, [("net.kq.a", str((1 << 63) - 1), "1")])
    assert (python, kernel) == ("", "")


def test_a_late_key_under_a_glob_is_judged_by_the_globs_rule() -> None:
    # What the differential relies on: keys that are not in the kernel's list now are
    # covered by the glob the program matches (no exact rule was made for them).
    policy = policy_from_dict(
        {"allow": ["net.kq.g1.*"], "keys": {"net.kq.g1.*": {"type": "int", "max": 5}}},
        "t", MACHINE,
    )  # fmt: skip
    compiled = compile_rules(policy.table(), lambda: [], spec_lookup(policy))
    assert "net.kq.g1.late" not in compiled.rules
    [glob] = [g for g in compiled.globs if g.pattern == "net.kq.g1.*"]
    assert glob.matches("net/kq/g1/late") and glob.rule.max == 5
