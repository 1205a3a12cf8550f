"""The policy table compiled into the guard map's rules (pure: no kernel needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actions.enforce.capability import fstype_at, parse_mounts
from actions.enforce.maps import (
    INT64_MAX,
    INT64_MIN,
    KEY_GLOB,
    RefusalEvent,
    Rule,
    compile_rules,
    decode,
    raw_field,
)
from actions.errors import ActionError
from actions.limits import SECURITY_BASELINE
from actions.policy import load_policy, policy_from_dict


def _no_keys() -> list[str]:
    return []


def test_default_policy_compiles_to_ranges_vectors_and_words() -> None:
    compiled = compile_rules(load_policy().table(), _no_keys)
    rules = compiled.rules
    assert rules["net.core.somaxconn"] == Rule(
        "net.core.somaxconn", "int", 1, 128, 65535, source="allow net.core.somaxconn"
    )
    rmem = rules["net.ipv4.tcp_rmem"]
    assert (rmem.type, rmem.length, rmem.min) == ("ints", 3, 4096)
    assert rmem.max is not None and 4096 < rmem.max <= 1 << 30  # capped by this machine's RAM
    assert rules["net.ipv4.tcp_congestion_control"].words == ("cubic", "reno", "bbr")
    assert rules["vm.swappiness"].min == 1  # the policy narrows the built-in 0
    assert rules["net.ipv4.tcp_congestion_control"].name == "net/ipv4/tcp_congestion_control"
    assert compiled.unfit == ()
    compiled.require_fit()


def test_deny_rows_are_globs_first_and_sysfs_patterns_are_not_kernel_rules() -> None:
    compiled = compile_rules(load_policy().table(), _no_keys)
    assert not [k for k in compiled.rules if k.startswith(("kernel.sched", "vm.drop", "dev."))]
    skipped = dict(compiled.skipped)
    assert "sysfs" in skipped["block/*/queue/scheduler"]
    assert all("/" not in k for k in compiled.rules)
    globs = {g.pattern: g for g in compiled.globs}
    assert globs["kernel.**"].rule.type == "deny" and globs["kernel.**"].prefix == "kernel/"
    assert (globs["vm.overcommit_*"].kind, globs["vm.overcommit_*"].prefix) == (
        "*",
        "vm/overcommit_",
    )


def test_baseline_keys_are_never_lowered_unless_overridden() -> None:
    doc = {
        "allow": ["net.ipv4.tcp_syncookies"],
        "deny": ["kernel.**"],
        "keys": {"net.ipv4.tcp_syncookies": {"type": "int", "min": 0, "max": 2}},
        "baseline": {
            "keys": ["kernel.kptr_restrict", "net.ipv4.tcp_syncookies", "fs.suid_dumpable"],
            "override": ["fs.suid_dumpable"],
        },
    }
    rules = compile_rules(policy_from_dict(doc, "t").table(), _no_keys).rules
    kptr = rules["kernel.kptr_restrict"]
    # the program compares with the value the key holds at each write, as the validator does
    assert (kptr.type, kptr.baseline, kptr.allowed, kptr.denied) == ("none", True, False, True)
    cookies = rules["net.ipv4.tcp_syncookies"]
    assert (cookies.min, cookies.max, cookies.baseline, cookies.allowed) == (0, 2, True, True)
    assert "fs.suid_dumpable" not in rules  # overridden: the policy lets it be lowered


def test_a_baseline_rows_security_order_is_compiled() -> None:
    table = [{"pattern": "kernel.unprivileged_bpf_disabled", "action": "baseline",
              "override": False, "order": [0, 2, 1]}]  # fmt: skip
    rule = compile_rules(table, _no_keys).rules["kernel.unprivileged_bpf_disabled"]
    assert rule.order == (0, 2, 1) and rule.baseline
    value = rule.value(3)
    assert list(value.order[: value.norder]) == [0, 2, 1] and value.flags == 1 | 2 | 8
    table[0]["order"] = list(range(9))
    assert (
        "security order of more than 8"
        in dict(compile_rules(table, _no_keys).unfit)["kernel.unprivileged_bpf_disabled"]
    )


def test_globs_are_matched_in_the_program_and_name_the_keys_there_now() -> None:
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
    compiled = compile_rules(policy_from_dict(doc, "t").table(), lambda: keys)
    # The built-in security floors always apply (issue 17: a policy may only add to them).
    assert sorted(k for k in compiled.rules if k not in SECURITY_BASELINE) == [
        "net.ipv4.conf.eth0.forwarding",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_keepalive_time",
    ]
    conf = next(g for g in compiled.globs if g.pattern == "net.ipv4.conf.*.forwarding")
    assert (conf.kind, conf.prefix, conf.suffix) == ("*", "net/ipv4/conf/", "/forwarding")
    # what the program covers: a later interface, and one whose name holds a dot
    assert conf.matches("net/ipv4/conf/late0/forwarding")
    assert conf.matches("net/ipv4/conf/eth0.5/forwarding")
    assert not conf.matches("net/ipv4/conf/a/b/forwarding") and not conf.matches("net/ipv4/x")
    keep = next(g for g in compiled.globs if g.pattern == "net.ipv4.tcp_keepalive_*")
    assert keep.matches("net/ipv4/tcp_keepalive_new") and not keep.matches("net/ipv4/tcp_sack")


def test_a_glob_entry_carries_its_masks_and_a_right_aligned_suffix() -> None:
    table = [{"pattern": "net.ipv4.neigh.*.base_reachable_time_ms", "action": "allow",
              "type": "int", "min": 1000, "max": 60000}]  # fmt: skip
    [glob] = compile_rules(table, _no_keys).globs
    key, value = glob.encode(5, 7)
    assert bytes(key.name)[:2] == bytes([KEY_GLOB, 5]) and value.generation == 7
    assert value.prefix[: value.prefix_len] == b"net/ipv4/neigh/"
    assert raw_field(value, "suffix").endswith(b"/base_reachable_time_ms")
    assert list(value.prefix_mask).count(0xFF) == len("net/ipv4/neigh/")
    assert list(value.suffix_mask)[-len("/base_reachable_time_ms") :] == [0xFF] * 23
    back, _generation = decode(key, value)
    assert back is not None and back.key == "net.ipv4.neigh.*.base_reachable_time_ms"


def test_globs_the_program_cannot_match_are_unfit() -> None:
    table = [
        {
            "pattern": "net.*.conf.*.forwarding",
            "action": "allow",
            "type": "int",
            "min": 0,
            "max": 1,
        },
        {"pattern": "net.ipv4.tcp_?mem", "action": "allow", "type": "int", "min": 0, "max": 1},
    ]
    unfit = dict(compile_rules(table, _no_keys).unfit)
    assert set(unfit) == {"net.*.conf.*.forwarding", "net.ipv4.tcp_?mem"}
    assert all("one * or **" in why for why in unfit.values())


def test_with_the_validators_specs_a_glob_names_the_known_keys_it_covers() -> None:
    policy = policy_from_dict(
        {"allow": ["net.ipv4.tcp_keepalive_*"], "baseline": {"keys": []}}, "t"
    )
    from actions.enforce.service import spec_lookup

    rules = compile_rules(policy.table(), _no_keys, spec_lookup(policy)).rules
    # kassist's own table gives each its range, as the validator does
    assert (rules["net.ipv4.tcp_keepalive_time"].min, rules["net.ipv4.tcp_keepalive_time"].max) == (
        30, 7200,
    )  # fmt: skip
    assert rules["net.ipv4.tcp_keepalive_probes"].max == 20


def test_a_dot_inside_a_component_keeps_the_kernels_name() -> None:
    doc = {
        "allow": ["net.ipv4.conf.**"],
        "keys": {"net.ipv4.conf.**": {"type": "int", "min": 0, "max": 1}},
        "baseline": {"keys": []},
    }
    keys = ["net/ipv4/conf/eth0.5/forwarding"]
    rules = compile_rules(policy_from_dict(doc, "t").table(), lambda: keys).rules
    ours = [r.name for k, r in rules.items() if k not in SECURITY_BASELINE]
    assert ours == ["net/ipv4/conf/eth0.5/forwarding"]


def test_rules_the_map_cannot_hold_are_refused_in_one_line() -> None:
    words = [f"w{i}" for i in range(9)]
    table: list[dict[str, object]] = [{"pattern": "net.core.default_qdisc", "action": "allow",
                                       "type": "choice", "values": words}]  # fmt: skip
    with pytest.raises(ActionError, match="up to 8 words") as exc:
        compile_rules(table, _no_keys).require_fit()
    assert "\n" not in exc.value.one_line() and "--enforce-best-effort" in exc.value.one_line()
    long_key = "net." + "x" * 70
    table = [{"pattern": long_key, "action": "allow", "type": "int", "min": 0, "max": 1}]
    compiled = compile_rules(table, _no_keys)
    assert not compiled.rules and "longer than 63" in dict(compiled.unfit)[long_key]


def test_encode_and_decode_are_inverse_with_open_bounds() -> None:
    rule = Rule("net.ipv4.tcp_rmem", "ints", 3, None, 1 << 40)
    key, value = rule.encode(7)
    assert key.name == b"net/ipv4/tcp_rmem" and value.min == INT64_MIN and value.generation == 7
    back, generation = decode(key, value)
    assert back is not None and generation == 7
    assert (back.key, back.min, back.max, back.length) == (rule.key, None, 1 << 40, 3)
    word, wv = Rule("net.core.default_qdisc", "choice", words=("fq", "fq_codel")).encode(1)
    again = decode(word, wv)[0]
    assert again is not None and again.words == ("fq", "fq_codel") and wv.max == INT64_MAX
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


def test_the_file_system_at_a_path_is_the_last_mount_on_its_deepest_point() -> None:
    text = (
        "24 1 0:22 / /sys rw - sysfs sysfs rw\n"
        "31 24 0:27 / /sys/fs/bpf rw - bpf bpf rw\n"
        "40 31 0:30 / /sys/fs/bpf rw - tmpfs tmpfs rw\n"  # mounted over the bpffs
    )
    assert fstype_at(text, Path("/sys/fs/bpf/kassist")) == "tmpfs"
    assert fstype_at(text, Path("/sys/kernel")) == "sysfs"
    assert fstype_at(text, Path("/home")) is None


def test_a_flood_of_refusals_is_audited_up_to_a_rate_then_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from actions.audit import Audit
    from actions.enforce import Refusal, service

    clock = [100.0]
    monkeypatch.setattr("actions.enforce.service.time.monotonic", lambda: clock[0])
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

    monkeypatch.setattr("actions.enforce.capability.os.geteuid", lambda: 0)
    monkeypatch.setattr(
        capability, "read_mountinfo", lambda: "24 1 0:22 / /sys rw - sysfs sysfs rw"
    )
    monkeypatch.setattr(capability, "BTF", tmp_path / "no-btf")
    monkeypatch.setattr("actions.enforce.capability.shutil.which", lambda name: None)

    def no_libbpf() -> None:
        raise OSError("libbpf.so.1: cannot open shared object file")

    monkeypatch.setattr("actions.enforce.capability.libbpf.lib", no_libbpf)
    lines = capability.problems(pin_root=Path("/sys/fs/bpf/kassist"))
    assert [line.split(" ", 2)[:2] for line in lines] == [
        ["no", "cgroup"], ["no", "kernel"], ["no", "BPF"], ["no", "clang"], ["no", "libbpf:"],
    ]  # fmt: skip
    assert all("\n" not in line for line in lines), lines


def test_the_policys_security_order_for_unprivileged_bpf_reaches_the_map() -> None:
    # 1 (disabled for good) is stricter than 2 (disabled, may be re-enabled): numeric order
    # would refuse the stricter step 2 -> 1 (issue 22 item 11)
    rule = compile_rules(load_policy().table(), _no_keys).rules["kernel.unprivileged_bpf_disabled"]
    assert (rule.baseline, rule.order) == (True, (0, 2, 1))
    value = rule.value(1)
    assert list(value.order[: value.norder]) == [0, 2, 1]
