"""The policy table compiled into the guard map's rules (pure: no kernel needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actions.enforce.capability import parse_mounts
from actions.enforce.maps import (
    INT64_MAX,
    INT64_MIN,
    RefusalEvent,
    Rule,
    compile_rules,
    decode,
)
from actions.errors import ActionError
from actions.limits import SECURITY_BASELINE
from actions.policy import load_policy, policy_from_dict

CURRENT = {"kernel/kptr_restrict": "1\n", "net/ipv4/tcp_syncookies": "1\n", "fs/suid_dumpable": "0"}


def _current(key: str) -> str | None:
    return CURRENT.get(key)


def _no_keys() -> list[str]:
    return []


def test_default_policy_compiles_to_ranges_vectors_and_words() -> None:
    compiled = compile_rules(load_policy().table(), _current, _no_keys)
    rules = compiled.rules
    assert rules["net.core.somaxconn"] == Rule(
        "net.core.somaxconn",
        "int",
        1,
        128,
        65535,
        source="allow net.core.somaxconn",
        kernel_name="net/core/somaxconn",
    )
    rmem = rules["net.ipv4.tcp_rmem"]
    assert (rmem.type, rmem.length, rmem.min) == ("ints", 3, 4096)
    assert rmem.max is not None and 4096 < rmem.max <= 1 << 30  # capped by this machine's RAM
    assert rules["net.ipv4.tcp_congestion_control"].words == ("cubic", "reno", "bbr")
    assert rules["vm.swappiness"].min == 1  # the policy narrows the built-in 0
    assert rules["net.ipv4.tcp_congestion_control"].name == "net/ipv4/tcp_congestion_control"


def test_deny_rows_and_sysfs_patterns_are_not_kernel_rules() -> None:
    compiled = compile_rules(load_policy().table(), _current, _no_keys)
    assert not [k for k in compiled.rules if k.startswith(("kernel.sched", "vm.drop", "dev."))]
    skipped = dict(compiled.skipped)
    assert "sysfs" in skipped["block/*/queue/scheduler"]
    assert all("/" not in k for k in compiled.rules)


def test_baseline_keys_get_a_floor_at_their_current_value_unless_overridden() -> None:
    doc = {
        "allow": ["net.ipv4.tcp_syncookies"],
        "keys": {"net.ipv4.tcp_syncookies": {"type": "int", "min": 0, "max": 2}},
        "baseline": {
            "keys": ["kernel.kptr_restrict", "net.ipv4.tcp_syncookies", "fs.suid_dumpable"],
            "override": ["fs.suid_dumpable"],
        },
    }
    rules = compile_rules(policy_from_dict(doc, "t").table(), _current, _no_keys).rules
    assert (rules["kernel.kptr_restrict"].min, rules["kernel.kptr_restrict"].max) == (1, None)
    assert (rules["net.ipv4.tcp_syncookies"].min, rules["net.ipv4.tcp_syncookies"].max) == (1, 2)
    assert "fs.suid_dumpable" not in rules  # overridden: the policy lets it be lowered


def test_globs_expand_over_the_kernels_keys() -> None:
    doc = {
        "allow": ["net.ipv4.tcp_keepalive_*", "net.ipv4.conf.*.forwarding"],
        "keys": {
            "net.ipv4.tcp_keepalive_*": {"type": "int", "min": 1, "max": 9},
            "net.ipv4.conf.*.forwarding": {"type": "int", "min": 0, "max": 0},
        },
        "baseline": {"keys": []},
    }
    keys = ["net/ipv4/tcp_keepalive_time", "net/ipv4/tcp_keepalive_probes", "net/ipv4/tcp_sack",
            "net/ipv4/conf/eth0/forwarding", "net/ipv4/conf/eth0.5/forwarding"]  # fmt: skip
    rules = compile_rules(policy_from_dict(doc, "t").table(), _current, lambda: keys).rules
    # The built-in security floors always apply (issue 17: a policy may only add to them).
    assert sorted(k for k in rules if k not in SECURITY_BASELINE) == [
        "net.ipv4.conf.eth0.forwarding",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_keepalive_time",
    ]
    assert rules["net.ipv4.conf.eth0.forwarding"].name == "net/ipv4/conf/eth0/forwarding"


def test_a_dot_inside_a_component_keeps_the_kernels_name() -> None:
    doc = {
        "allow": ["net.ipv4.conf.**"],
        "keys": {"net.ipv4.conf.**": {"type": "int", "min": 0, "max": 1}},
        "baseline": {"keys": []},
    }
    keys = ["net/ipv4/conf/eth0.5/forwarding"]
    rules = compile_rules(policy_from_dict(doc, "t").table(), _current, lambda: keys).rules
    ours = [r.name for k, r in rules.items() if k not in SECURITY_BASELINE]
    assert ours == ["net/ipv4/conf/eth0.5/forwarding"]


def test_rules_the_map_cannot_hold_are_refused_in_one_line() -> None:
    words = [f"w{i}" for i in range(9)]
    table = [{"pattern": "net.core.default_qdisc", "action": "allow", "type": "choice",
              "values": words}]  # fmt: skip
    with pytest.raises(ActionError, match="1 to 8 words"):
        compile_rules(table, _current, _no_keys)
    long_key = "net." + "x" * 70
    table = [{"pattern": long_key, "action": "allow", "type": "int", "min": 0, "max": 1}]
    compiled = compile_rules(table, _current, _no_keys)
    assert not compiled.rules and "longer than 63" in dict(compiled.skipped)[long_key]


def test_encode_and_decode_are_inverse_with_open_bounds() -> None:
    rule = Rule("net.ipv4.tcp_rmem", "ints", 3, None, 1 << 40)
    key, value = rule.encode(7)
    assert key.name == b"net/ipv4/tcp_rmem" and value.min == INT64_MIN and value.generation == 7
    back, generation = decode(key, value)
    assert (back.key, back.min, back.max, back.length) == (rule.key, None, 1 << 40, 3)
    assert generation == 7
    word, wv = Rule("net.core.default_qdisc", "choice", words=("fq", "fq_codel")).encode(1)
    assert decode(word, wv)[0].words == ("fq", "fq_codel") and wv.max == INT64_MAX
    assert RefusalEvent().comm == b""


def test_parse_mounts_finds_cgroup2_beside_v1() -> None:
    text = (
        "24 1 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
        "25 24 0:23 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"
        "30 24 0:26 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
        "31 1 0:27 / /sys/fs/bpf rw - bpf bpf rw\n"
    )
    assert parse_mounts(text, "cgroup2") == [Path("/sys/fs/cgroup/unified")]
    assert parse_mounts(text, "bpf") == [Path("/sys/fs/bpf")]
    assert parse_mounts(text, "cgroup")[0] == Path("/sys/fs/cgroup/cpu")


def test_a_flood_of_refusals_is_audited_up_to_a_rate_then_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actions.audit import Audit
    from actions.enforce import Refusal, service

    clock = [100.0]
    monkeypatch.setattr(service.time, "monotonic", lambda: clock[0])
    audit = Audit(tmp_path / "audit.jsonl", journald=None)
    record = service.audit_refusal(audit, per_second=3)
    refusal = Refusal(42, "sh", "/x", "net.core.somaxconn", "99999", 0.0, "guard", "r", 0, 1)
    for _ in range(5):
        record(refusal)
    clock[0] += 1.5
    record(refusal)
    audit.close()
    events = [json.loads(line)["event"] for line in (tmp_path / "audit.jsonl").open()]
    assert events == ["enforce-refusal"] * 3 + ["enforce-refusals-suppressed", "enforce-refusal"]
    last = json.loads((tmp_path / "audit.jsonl").read_text().splitlines()[3])
    assert last["count"] == 2


def test_the_object_is_built_once_per_source_and_never_loaded_from_an_open_cache(
    tmp_path: Path,
) -> None:
    import os
    import shutil

    from actions.enforce.build import object_path
    from tests.conftest import require

    require(shutil.which("clang") is not None, "needs clang (./setup.sh)")
    cache = tmp_path / "cache"
    first = object_path(cache)
    assert first.read_bytes()[:4] == b"\x7fELF" and oct(cache.stat().st_mode)[-3:] == "700"
    built = first.stat().st_mtime_ns
    assert object_path(cache) == first and first.stat().st_mtime_ns == built  # cached
    os.chmod(first, 0o666)  # someone else could have written it: build it again
    again = object_path(cache)
    assert again == first and oct(again.stat().st_mode)[-3:] != "666"
    os.chmod(cache, 0o777)
    with pytest.raises(ActionError, match="writable by someone else"):
        object_path(cache)


def test_each_missing_piece_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # What this machine has cannot be taken away for real: each probe is pointed at an
    # absence instead (the real checks run in test_enforce_kernel.py).
    from actions.enforce import capability

    monkeypatch.setattr(capability.os, "geteuid", lambda: 0)
    monkeypatch.setattr(capability, "_mountinfo", lambda: "24 1 0:22 / /sys rw - sysfs sysfs rw")
    monkeypatch.setattr(capability, "BTF", tmp_path / "no-btf")
    monkeypatch.setattr(capability.shutil, "which", lambda name: None)

    def no_libbpf() -> None:
        raise OSError("libbpf.so.1: cannot open shared object file")

    monkeypatch.setattr(capability.libbpf, "lib", no_libbpf)
    lines = capability.problems()
    assert [line.split(" ", 2)[:2] for line in lines] == [
        ["no", "cgroup"], ["no", "kernel"], ["no", "BPF"], ["no", "clang"], ["no", "libbpf:"],
    ]  # fmt: skip
    assert all("\n" not in line for line in lines), lines
