"""Facts before prose: per-family facts, the severity table, next steps, the report."""

from __future__ import annotations

import doctest
import importlib.util
import json
import re
from dataclasses import replace

import pytest

from assistant.config import LLMConfig
from assistant.drafters import pipeline, summary
from assistant.drafters.assessment import (
    NEXT_STEPS,
    SEVERITY,
    crash_knowledge,
    next_steps,
    severity_of,
)
from assistant.drafters.bug_report import MODEL_MARK, draft_report
from assistant.drafters.checker import check_draft, reader_problems
from assistant.drafters.summary import (
    happened_evidence,
    happened_facts,
    happened_prompt,
    number_claims,
    role_claims,
    stack_claims,
    work_claims,
)
from assistant.triage import triage_path
from assistant.triage.engine import triage_lines
from assistant.triage.events import EVENT_RULES
from assistant.triage.facts import FAMILIES, extract_facts, is_syscall_wrapper, syscall_of
from assistant.triage.model import Crash, Frame
from assistant.triage.rules import TITLE_TO_TYPE, UNKNOWN_TYPE
from tests.conftest import CORPUS_DIR, DATA, require, require_default_model

REPORTS = CORPUS_DIR / "syzkaller-linux-reports.dev.jsonl"
#: The corpus's reports by id, each a JSON row.
Corpus = dict[str, dict[str, object]]


def _corpus() -> Corpus:
    require(REPORTS.exists(), f"the shared corpus is missing ({CORPUS_DIR})")
    rows = (json.loads(line) for line in REPORTS.read_text(encoding="utf-8").splitlines())
    return {str(r["id"]): r for r in rows}


def _first_crash(log: object) -> Crash:
    crashes = triage_lines(str(log).splitlines(), "corpus").crashes
    assert crashes
    return crashes[0]


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return _corpus()


# --- per-family facts, on real reports of the corpus ---


def test_kasan_facts_name_the_access_the_object_and_both_stacks(corpus: Corpus) -> None:
    f = _first_crash(corpus["130"]["log"]).crash_facts()  # use-after-free in aead_recvmsg
    assert (f.family, f.access, f.access_size) == ("memory-safety", "read", 4)
    assert (f.object_cache, f.object_size) == ("kmalloc-128", 128)
    assert f.allocated_by is not None and f.freed_by is not None
    assert f.freed_by.pid == 3568 and f.freed_by.frames[:2] == ["kfree", "kzfree"]
    assert "aead_bind" in f.allocated_by.frames
    assert not any(name.startswith(("kasan", "save_stack")) for name in f.freed_by.frames)


def test_kfence_and_kmsan_facts(corpus: Corpus) -> None:
    kfence = _first_crash(corpus["590"]["log"]).crash_facts()
    assert kfence.access == "read" and kfence.address == "0xffff88823bc8cf68"
    assert kfence.freed_by is not None and kfence.freed_by.frames[0] == "put_uprobe"
    kmsan = _first_crash(corpus["690"]["log"]).crash_facts()
    assert kmsan.uninit_bytes == "252-311 of 2224"
    assert kmsan.uninit_origin[0] == "nla_put"


def test_lockdep_facts_name_both_lock_classes_and_the_chain(corpus: Corpus) -> None:
    f = _first_crash(corpus["188"]["log"]).crash_facts()  # possible deadlock in rtnl_lock
    assert f.family == "lockdep"
    assert f.locks == ["rtnl_mutex", "&xt[i].mutex"]
    assert f.lock_chain == ["&xt[i].mutex", "sk_lock-AF_INET6", "rtnl_mutex"]
    irq = _first_crash(corpus["559"]["log"]).crash_facts()  # the irq-safe -> unsafe form
    assert irq.locks == ["&(&info->lock)->rlock", "&(&mapping->tree_lock)->rlock"]


def test_hang_stall_and_warning_facts(corpus: Corpus) -> None:
    hung = _first_crash(corpus["349"]["log"]).crash_facts()
    assert (hung.family, hung.hung_task, hung.hung_seconds) == ("hang", "jbd2/sda-8:3563", 140)
    held = _first_crash(corpus["365"]["log"]).crash_facts()
    assert held.held_locks and held.held_locks[0] == "rsyslogd/7655: &f->f_pos_lock"
    assert not any(h.startswith("khungtaskd/") for h in held.held_locks)
    warning = _first_crash(corpus["23"]["log"]).crash_facts()
    assert warning.warning_location == "net/sched/sch_generic.c:316"


def test_each_family_finds_its_key_fact_in_most_of_the_corpus(corpus: Corpus) -> None:
    key = {
        "warning": "warning_location",
        "hang": "hung_task",
        "soft-lockup": "hung_task",
        "memory-safety": "access",
    }
    seen: dict[str, list[bool]] = {family: [] for family in key}
    for row in corpus.values():
        crashes = triage_lines(str(row["log"]).splitlines(), "corpus").crashes
        if not crashes or crashes[0].corrupted:
            continue
        facts = crashes[0].crash_facts()
        if facts.family == "memory-safety" and not crashes[0].title.startswith("KASAN:"):
            continue  # KMSAN, paging faults and list corruption print no access line
        if facts.family in key:
            seen[facts.family].append(bool(getattr(facts, key[facts.family])))
    for family, hits in seen.items():
        assert hits, family
        assert sum(hits) / len(hits) >= 0.8, (family, sum(hits), len(hits))


def test_oom_facts_in_the_kernels_own_format() -> None:
    # mm/oom_kill.c: dump_tasks() rows, then the kill lines (as in production-events.log).
    lines = (DATA / "production-events.log").read_text().splitlines()[:4]
    table = [
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        "[   4121]   106  4121  2161380  1048576  8650752        0             0 postgres",
        "[    812]     0   812    49821    20312   430080        0             0 systemd-journal",
    ]
    f = extract_facts("OOM kill of postgres (pid 4121)", "\n".join(table + lines))
    assert f.family == "oom" and f.oom_constraint == "CONSTRAINT_MEMCG"
    assert f.oom_victim == "postgres (pid 4121)"
    assert f.oom_consumers[0].startswith("postgres (pid 4121): 1048576 pages")
    assert len(f.oom_consumers) == 2


def test_facts_are_in_the_triage_json() -> None:
    crash = triage_path(str(DATA / "kasan-uaf-ip6_send_skb.log")).crashes[0]
    facts = crash.to_dict()["facts"]
    assert facts["family"] == "memory-safety"
    assert (facts["access"], facts["access_size"]) == ("read", 8)


# --- the severity table and the next steps ---


def test_severity_table_covers_every_type_triage_can_give() -> None:
    types = {t for _, t in TITLE_TO_TYPE if t} | {UNKNOWN_TYPE} | {r.type for r in EVENT_RULES}
    missing = sorted(t for t in types if t not in SEVERITY)
    assert not missing


def test_severity_table_covers_every_crash_of_the_corpus(corpus: Corpus) -> None:
    types = set()
    for row in corpus.values():
        types |= {c.type for c in triage_lines(str(row["log"]).splitlines(), "c").crashes}
    assert types and all(t in SEVERITY for t in types), sorted(types - set(SEVERITY))


def test_severity_follows_the_crash_type_and_panics_are_critical() -> None:
    assert severity_of("KASAN-USE-AFTER-FREE-READ").severity == "high"
    assert severity_of("KASAN-USE-AFTER-FREE-WRITE").severity == "critical"
    assert severity_of("WARNING").severity == "medium"
    assert severity_of("LEAK").severity == "low"
    panic = severity_of("WARNING", panicked=True)
    assert panic.severity == "critical" and "panicked" in panic.reason
    assert all(len(reason) > 20 for _, reason in SEVERITY.values())


def test_next_steps_use_the_reports_facts(corpus: Corpus) -> None:
    uaf = _first_crash(corpus["130"]["log"])
    steps = " ".join(next_steps(uaf))
    assert "kfree < kzfree" in steps and "aead_recvmsg" in steps
    assert "slub_debug=FZPU,kmalloc-128" in steps
    lockdep = " ".join(next_steps(_first_crash(corpus["188"]["log"])))
    assert "`&xt[i].mutex` then `rtnl_mutex`" in lockdep
    assert set(NEXT_STEPS) >= {family for _, family in FAMILIES} | {"other"}


def test_no_knowledge_base_is_one_notice_line() -> None:
    crash = triage_path(str(DATA / "kasan-uaf-ip6_send_skb.log")).crashes[0]
    knowledge = crash_knowledge(crash, None)
    assert knowledge.to == [] and knowledge.docs == []
    assert "no knowledge base" in knowledge.notice and "\n" not in knowledge.notice


def test_report_without_a_model_is_facts_only() -> None:
    crash = triage_path(str(DATA / "kasan-uaf-ip6_send_skb.log")).crashes[0]
    drafted = draft_report(crash, None, None, use_kb=False)
    md = drafted.markdown
    assert "| Severity | high: a memory-safety bug" in md
    assert "## What happened" in md and "## Next steps" in md
    assert "- Access: read of 8 bytes" in md
    assert MODEL_MARK not in md and "withheld" not in md
    assert "`ip6_send_skb`" in drafted.summary and "4.12.0-rc3+" in drafted.summary


def test_the_paragraphs_facts_go_beyond_the_title() -> None:
    crash = triage_path(str(DATA / "kasan-uaf-ip6_send_skb.log")).crashes[0]
    facts = dict(happened_facts(crash, severity_of(crash.type)))
    assert facts["Bad access"] == "read of 8 bytes at address ffff88004fab1858, in freed memory"
    # The path runs from the socket layer into the crashing function, outermost first,
    # without the syscall wrappers or the reporting machinery.
    assert facts["Call path"].split(" -> ") == [
        "sock_sendmsg_nosec",
        "inet_sendmsg",
        "rawv6_sendmsg",
        "rawv6_push_pending_frames",
        "ip6_push_pending_frames",
        "ip6_send_skb",
    ]
    # where the path came from: the system call under the socket layer's frames
    assert facts["Entered from"] == "the sendto system call"
    assert facts["Crashing function"] == "ip6_send_skb, in net/ipv6/ip6_output.c"
    assert facts["Taint"] == "none" and facts["Panicked"] == "no"
    assert "Freed by" not in facts  # the report holds no free stack


#: Frames that only enter a system call, of every kernel's naming: the per-arch wrappers
#: since 4.17, SYSCALL_DEFINE's own, the pre-4.17 SyS_/SYSC_ ones and the compat ones.
SYSCALL_WRAPPERS = (
    "SyS_sendto",
    "SYSC_sendto",
    "__x64_sys_sendto",
    "__ia32_sys_sendto",
    "__arm64_sys_sendto",
    "__se_sys_sendto",
    "__do_sys_sendto",
    "__do_sys_sendto.cold",
    "compat_SyS_sendto",
    "C_SYSC_sendto",
    "__ia32_compat_sys_sendto",
    "__do_compat_sys_sendto",
)


@pytest.mark.parametrize("wrapper", SYSCALL_WRAPPERS)
@pytest.mark.parametrize("helper", ["__sys_sendto", "ksys_sendto", None])
def test_the_path_into_the_bug_leaves_out_what_syscall_of_calls_a_wrapper(
    wrapper: str, helper: str | None
) -> None:
    # One reading of a system call's frames: the path drops the wrapper that the entry
    # context names the call from, and keeps the helper that does the call's work.
    inner = ["ip6_send_skb", "rawv6_sendmsg", "inet_sendmsg"]
    names = [*inner, *([helper] if helper else []), wrapper, "do_syscall_64"]
    crash = Crash("t", "T", "", 1, 1, frame=inner[0], call_trace=[Frame(n) for n in names])
    assert syscall_of(wrapper) == "sendto" and is_syscall_wrapper(wrapper)
    assert summary.path_into_bug(crash) == [*([helper] if helper else []), *reversed(inner)]
    assert summary.entry_context(crash) == ("Entered from", "the sendto system call")


def test_a_system_calls_helpers_are_its_frames_but_not_wrappers() -> None:
    for helper in ("__sys_sendto", "ksys_sendto"):
        assert syscall_of(helper) == "sendto" and not is_syscall_wrapper(helper)
    for other in ("tcp_sendmsg", "do_syscall_64", "x64_sys_call", "sys_call_table"):
        assert syscall_of(other) is None and not is_syscall_wrapper(other)


def test_a_sentence_naming_the_workers_loop_as_the_work_is_dropped() -> None:
    crash = triage_path(str(DATA / "warning-xfrm_state_fini.log")).crashes[0]
    facts = crash.crash_facts()
    assert dict(happened_facts(crash, severity_of(crash.type)))["Work item"] == (
        "cleanup_net, on the netns workqueue"
    )
    assert work_claims("The kworker was running process_one_work, on the netns workqueue.", facts)
    assert work_claims("The kworker was running cleanup_net, on the netns workqueue.", facts) == []
    assert work_claims("The call path runs through process_one_work.", facts) == []


def test_the_paragraphs_own_checks_hold_their_examples() -> None:
    # The examples in the checks' docstrings (taint, panic, lock roles, names) are run.
    for module in (summary, pipeline):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_a_sentence_about_a_stack_the_report_lacks_or_a_misbound_number_is_dropped() -> None:
    crash = triage_path(str(DATA / "kasan-uaf-ip6_send_skb.log")).crashes[0]
    facts = crash.crash_facts()
    assert stack_claims("Task 30168 freed it in rawv6_sendmsg.", facts)
    assert stack_claims("The kernel read 8 bytes after that memory had been freed.", facts) == []
    assert number_claims("Task syz-executor0 ran on CPU 30168.", crash) == [
        "says CPU 30168, not one of the report's"
    ]
    assert number_claims("Task 30168 read 8 bytes on CPU 0.", crash) == []
    # a function called a task; a path out of the report's order, or repeating a frame
    assert role_claims("It ran in task ip6_send_skb.", crash)
    assert role_claims("The path runs from rawv6_sendmsg through inet_sendmsg.", crash)
    assert role_claims("The path runs from ip6_send_skb into ip6_send_skb.", crash)
    assert (
        role_claims(
            "The path runs from inet_sendmsg through rawv6_sendmsg into ip6_send_skb,"
            " in task syz-executor0.",
            crash,
        )
        == []
    )


@pytest.mark.parametrize("log", ["kasan-uaf-ip6_send_skb.log", "warning-xfrm_state_fini.log"])
def test_report_with_the_default_model_shows_only_checked_sentences(log: str) -> None:
    require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    require_default_model()
    from assistant.llm import make_backend

    backend = make_backend(LLMConfig(n_ctx=4096, temperature=0.0), log=False)
    crash = triage_path(str(DATA / log)).crashes[0]
    drafted = draft_report(crash, backend, None, use_kb=False)
    draft = drafted.draft
    assert draft is not None and draft.raw.strip()  # the model really generated text
    assert draft.stats.completion_tokens > 0
    md = drafted.markdown
    rating = severity_of(crash.type)
    prompt = happened_prompt(crash, rating)
    evidence = happened_evidence(crash, rating, prompt)
    if draft.text is not None:
        assert MODEL_MARK in md and draft.text in md
        # every sentence shown passes the checker and the reader's check again
        for sentence in draft.kept:
            one = check_draft(sentence, replace(evidence, min_words=4, max_sentences=1))
            assert one.ok, (sentence, one.problems)
            assert reader_problems(sentence, crash.title, [crash.task.comm or ""]) == []
        assert all(s not in md for s, _ in draft.dropped)
    else:
        assert "withheld" in md and MODEL_MARK not in md
        assert len([line for line in md.splitlines() if "withheld" in line]) == 1
    if log.startswith("kasan"):
        # ./setup.sh demo's crash: at temperature 0 the outcome is fixed, and the model's
        # paragraph is shown, with more than the title in it (the access, the path)
        assert draft.text is not None and len(draft.kept) >= 2, draft
        assert "ffff88004fab1858" in draft.text or "rawv6_sendmsg" in draft.text
    # whatever happened, the paragraph ends a sentence
    assert re.search(r"[.!?]$", drafted.summary), drafted.summary


def test_the_paragraph_prompt_shows_an_example_with_the_crashs_kinds_of_facts() -> None:
    crash = triage_path(str(DATA / "kasan-uaf-ip6_send_skb.log")).crashes[0]
    prompt = happened_prompt(crash, severity_of(crash.type))
    roles = [m.role for m in prompt.messages]
    assert roles == ["system", "user", "assistant", "user"]
    example, answer, user = (m.content for m in prompt.messages[1:])
    assert "Crashing function: ip6_send_skb, in net/ipv6/ip6_output.c" in user
    # no alloc/free stack in this report: none in the example either
    assert "Freed by" not in example and "freed it" not in answer
    assert "Bad access" in example and "read 2 bytes" in answer  # the crash's direction
    assert prompt.sampling is not None and prompt.sampling.grammar is not None
    assert "ip6_send_skb" in prompt.sampling.grammar and "hci_event_packet" not in (
        prompt.sampling.grammar
    )


def test_report_names_maintainers_and_cites_docs_from_the_knowledge_base() -> None:
    from assistant.drafters.assessment import open_knowledge

    kb = open_knowledge()
    require(kb is not None, "no knowledge base (assistant.knowledge, built by setup.sh)")
    crash = triage_path(str(DATA / "kasan-uaf-ip6_send_skb.log")).crashes[0]
    drafted = draft_report(crash, None, None, kb=kb)
    knowledge = drafted.knowledge
    assert knowledge.to and knowledge.subsystems  # net/ipv6/ip6_output.c has maintainers
    assert any("netdev@vger.kernel.org" in cc for cc in knowledge.cc)
    assert 1 <= len(knowledge.docs) <= 3
    assert all(re.match(r"^Documentation/\S+\.(?:rst|txt)", d.cite) for d in knowledge.docs)
    md = drafted.markdown
    assert "## Recipients" in md and "To: " in md and "## Documentation" in md
    assert "no knowledge base" not in md
