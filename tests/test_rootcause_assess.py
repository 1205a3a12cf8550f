"""The assessment: syzbot's actionable rule, trigger surfaces, impact classes, with reasons."""

from __future__ import annotations

import json

from assistant.rootcause.assess import assess
from assistant.rootcause.fault import analyse_report
from assistant.triage import Crash, triage_lines
from tests.conftest import CORPUS_DIR, DATA


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
    assert a.trigger.verdict.startswith("user syscall")
    assert a.trigger.reasons and a.surfaces[0] == a.trigger.verdict
    hung = _crash((DATA / "hung-rtnl_lock.log").read_text())
    assert assess(hung).impact.verdict == "denial of service"
    assert assess(hung).privileges.verdict == "unknown"


def test_triage_json_carries_fault_and_assessment() -> None:
    crash = _crash((DATA / "oops-null-deref-debian-6.1.log").read_text())
    data = crash.to_dict()
    assert data["fault"]["instruction"] == "mov    0x8(%rax),%eax"
    assert data["fault"]["relation"] == "the fault address = RAX + 0x8"
    assert data["assessment"]["impact"]["verdict"] == "denial of service"
    assert data["assessment"]["trigger"]["verdict"] == "user syscall (write)"
