"""The assessment: syzbot's actionable rule, trigger surfaces, impact classes, with reasons."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from assistant.drafters.summary import entry_context
from assistant.rootcause.assess import assess
from assistant.rootcause.fault import analyse_report
from assistant.triage import Crash, triage_lines
from assistant.triage.facts import syscall_of
from tests.conftest import CORPUS_DIR, DATA, ROOT, require


def _crash(text: str) -> Crash:
    return triage_lines(text.splitlines(), source="test").crashes[0]


def test_a_complete_use_after_free_is_actionable_in_one_section() -> None:
    crash = _crash((DATA / "kasan-uaf-strp_check_rcv.log").read_text())
    facts = crash.crash_facts()
    assert facts.allocated_by and facts.freed_by and facts.object_cache
    a = assess(crash, analyse_report(crash.report), sections=["NETWORKING [GENERAL]"])
    assert a.actionable.verdict == "yes"
    assert any(facts.object_cache in r for r in a.actionable.reasons)
    assert assess(crash, None, sections=None).actionable.verdict == "unknown"
    assert assess(crash, None, sections=["THE REST"]).actionable.verdict == "no"
    cut = crash.report[: crash.report.index("Freed by task")]
    crash_cut = _crash(cut)
    assert assess(crash_cut, None, sections=["X"]).actionable.verdict == "no"


def test_every_actionable_in_the_dev_corpus_has_its_three_stacks() -> None:
    seen = 0
    for line in (CORPUS_DIR / "syzkaller-linux-reports.dev.jsonl").read_text().splitlines():
        entry = json.loads(line)
        for crash in triage_lines(entry["log"].splitlines(), source="t").crashes[:1]:
            a = assess(crash, None, sections=["SOME SECTION"])
            if a.actionable.verdict != "yes":
                continue
            seen += 1
            f = crash.crash_facts()
            assert crash.call_trace and f.allocated_by and f.object_cache and not crash.corrupted
            assert f.freed_by or "FREE" not in crash.type
    assert seen > 0


def test_warn_on_in_an_if_is_syzbots_exception() -> None:
    crash = _crash((DATA / "warning-xfrm_state_fini.log").read_text())
    where = crash.crash_facts().warning_location
    assert where is not None
    handled = assess(crash, source=lambda _p, _n: "\tif (WARN_ON(!list_empty(&x)))")
    bare = assess(crash, source=lambda _p, _n: "\tWARN_ON(!list_empty(&net->xfrm.state_all));")
    unseen = assess(crash, source=None)
    assert handled.impact.verdict == "warning" and "guards an if" in handled.impact.reasons[0]
    assert bare.impact.verdict == "unknown" and "bare WARN_ON" in bare.impact.reasons[0]
    assert unseen.impact.verdict == "warning" and "no source" in unseen.impact.reasons[1]


def test_trigger_surfaces_come_from_the_trace() -> None:
    crash = _crash((DATA / "kasan-uaf-ip6_send_skb.log").read_text())
    a = assess(crash)
    # A 4.12 trace names its system call SyS_sendto/SYSC_sendto: the verdict names it,
    # as the report's "What happened" paragraph does (one pattern for both).
    assert a.trigger.verdict == "user syscall (sendto)"
    assert entry_context(crash) == ("Entered from", "the sendto system call")
    assert a.trigger.reasons and a.surfaces[0] == a.trigger.verdict
    hung = _crash((DATA / "hung-rtnl_lock.log").read_text())
    assert assess(hung).impact.verdict == "denial of service"
    assert assess(hung).privileges.verdict == "unknown"


def test_a_system_call_is_named_under_every_prefix_the_kernel_gave_it() -> None:
    names = {
        "__x64_sys_sendto": "sendto",
        "__se_sys_io_uring_enter": "io_uring_enter",
        "__do_sys_bpf.cold": "bpf",
        "SyS_sendto": "sendto",
        "SYSC_sendto": "sendto",
        "compat_SyS_ioctl": "ioctl",
        "__arm64_sys_openat": "openat",
        "ksys_write": "write",
        "__sys_sendmsg": "sendmsg",
        "do_syscall_64": None,
        "entry_SYSCALL_64_fastpath": None,
        "sys_call_table": None,
        "tcp_sendmsg": None,
    }
    assert {name: syscall_of(name) for name in names} == names


def test_triage_json_carries_fault_and_assessment() -> None:
    crash = _crash((DATA / "oops-null-deref-debian-6.1.log").read_text())
    data = crash.to_dict()
    assert data["fault"]["instruction"] == "mov    0x8(%rax),%eax"
    assert data["fault"]["relation"] == "the fault address = RAX + 0x8"
    assert data["assessment"]["impact"]["verdict"] == "denial of service"
    assert data["assessment"]["trigger"]["verdict"] == "user syscall (write)"


def _guilty_uafs() -> list[tuple[str, Crash]]:
    # The dev corpus's reports with file:line (syzkaller's "guilty" tests) that hold the
    # access, allocation and free stacks of one object cache.
    out = []
    for line in (CORPUS_DIR / "syzkaller-linux-guilty.dev.jsonl").read_text().splitlines():
        entry = json.loads(line)
        for crash in triage_lines(entry["log"].splitlines(), source="t").crashes[:1]:
            if crash.guilty_file and assess(crash, None, ["X"]).actionable.verdict == "yes":
                out.append((entry["log"], crash))
    return out


def test_actionable_uses_the_knowledge_bases_maintainers(tmp_path: Path) -> None:
    from assistant.knowledge import try_open

    kb = try_open()
    require(kb is not None, "no knowledge base (assistant.knowledge, built by setup.sh)")
    candidates = _guilty_uafs()
    assert candidates
    yes = 0
    for log, crash in candidates:
        path = tmp_path / "crash.log"
        path.write_text(log)
        proc = subprocess.run(
            [sys.executable, "-m", "assistant", "triage", "--format", "json", str(path)],
            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        actionable = json.loads(proc.stdout)["crashes"][0]["assessment"]["actionable"]
        assert kb is not None
        specific = [s.name for s in kb.maintainers(crash.guilty_file or "")]
        specific = [s for s in specific if s != "THE REST"]
        # The verdict is the knowledge base's: a section names it "yes", none "no".
        assert actionable["verdict"] == ("yes" if specific else "no"), actionable
        assert "MAINTAINERS section not known" not in " ".join(actionable["reasons"])
        if specific:
            yes += 1
            assert f"MAINTAINERS section {specific[0]}" in actionable["reasons"][-1]
    assert yes > 0
