"""The shared draft checker: every planted fault is caught, sound drafts pass."""

from __future__ import annotations

from dataclasses import replace

import pytest

from assistant.drafters.checker import (
    SUMMARY_WORDS,
    Evidence,
    check_draft,
    cut_to_sentence,
    kinds_named,
    stated_defaults,
    unsupported_names,
)
from assistant.triage import triage_path
from tests.conftest import DATA

KASAN_LOG = DATA / "kasan-uaf-ip6_send_skb.log"


@pytest.fixture(scope="module")
def evidence() -> Evidence:
    crash = triage_path(str(KASAN_LOG)).crashes[0]
    prompt = [
        "Facts:",
        f"Crash: {crash.title}",
        "Function: ip6_send_skb",
        "Called from: ip6_push_pending_frames",
        "Task: syz-executor0",
        "Write the summary.",
    ]
    return Evidence(
        text="\n".join([crash.title, crash.report, *prompt]),
        severity="high",
        kind=crash.title,
        function=crash.frame,
        kernel=crash.kernel.release,
        functions=[f.function for f in crash.call_trace],
        prompt_lines=prompt,
        allow_causes=False,
        max_sentences=2,
        plain_words=SUMMARY_WORDS,
    )


GOOD = [
    "The kernel detected a use-after-free read in ip6_send_skb, called from "
    "ip6_push_pending_frames, in task syz-executor0.",
    "KASAN reported a use-after-free read of 8 bytes in ip6_send_skb on kernel 4.12.0-rc3+.",
    "Task syz-executor0 hit a use-after-free read in ip6_send_skb (net/ipv6/ip6_output.c), "
    "called from rawv6_sendmsg.",
    # "kernel crashed" names no function (nor does its tail "ernel crashed")
    "The kernel crashed on address ffff88004fab1858 in task syz-executor0.",
]


@pytest.mark.parametrize("draft", GOOD)
def test_sound_drafts_pass(draft: str, evidence: Evidence) -> None:
    verdict = check_draft(draft, evidence)
    assert verdict.ok, verdict.problems
    assert verdict.unsupported == []


BASE = (
    "The kernel detected a use-after-free read in ip6_send_skb, called from ip6_push_pending_frames"
)

#: (planted fault, draft, a word the problem must contain)
PLANTED = [
    (
        "repetition",
        "The kernel detected a use-after-free read in ip6_send_skb, which is a socket that "
        "is a socket that is a socket in task syz-executor0.",
        "repeats",
    ),
    ("repeated sentence", f"{BASE}. {BASE}.", "repeat"),
    (
        "echo of a prompt line",
        f"Crash: KASAN: use-after-free Read in ip6_send_skb. {BASE}.",
        "echo",
    ),
    ("echo of a label", f"{BASE}.\nTask: syz-executor0", "echo"),
    ("no sentence end", f"{BASE} while the task was", "sentence"),
    ("too short", "It crashed.", "short"),
    (
        "too many sentences",
        f"{BASE}. The task was syz-executor0. The read was of 8 bytes.",
        "sentences",
    ),
    ("severity word", f"{BASE}; this is a low severity bug.", "severity"),
    ("benign claim", f"{BASE}, which is harmless.", "harmless"),
    (
        "another crash kind",
        "The kernel detected a null pointer dereference in ip6_send_skb in task syz-executor0.",
        "kind",
    ),
    (
        "another detector",
        "KMSAN detected a use-after-free read in ip6_send_skb in task syz-executor0.",
        "kind",
    ),
    (
        "another crashing function",
        "The kernel crashed in rawv6_sendmsg after a use-after-free read in task syz-executor0.",
        "crashing function",
    ),
    (
        "another caller",
        "The kernel detected a use-after-free read in ip6_send_skb, called from tcp_sendmsg, "
        "in task syz-executor0.",
        "caller",
    ),
    ("another kernel version", f"{BASE} on kernel 4.14.0-rc1.", "kernel"),
    ("invented symbol", f"{BASE} after skb_release_data freed it.", "skb_release_data"),
    (
        "invented file",
        "The kernel detected a use-after-free read in ip6_send_skb in net/ipv6/route.c.",
        "route.c",
    ),
    ("invented number", f"{BASE} after 37 seconds.", "37"),
    ("invented sysctl", f"{BASE}; raising net.core.rmem_max helps.", "net.core.rmem_max"),
    ("invented commit", f"{BASE}, a regression of commit 3f2a9b1c7d.", "3f2a9b1c7d"),
    ("guessed cause", f"{BASE} because the socket was closed twice.", "cause"),
    (
        "words beyond the facts",
        f"{BASE}, which lets malware escape the sandbox.",
        "more than the facts",
    ),
]


@pytest.mark.parametrize(("fault", "draft", "word"), PLANTED, ids=[p[0] for p in PLANTED])
def test_each_planted_fault_is_caught(
    fault: str, draft: str, word: str, evidence: Evidence
) -> None:
    verdict = check_draft(draft, evidence)
    assert not verdict.ok, fault
    text = " ".join(verdict.problems)
    assert word in text, (fault, verdict.problems)


def test_a_draft_over_its_length_is_refused(evidence: Evidence) -> None:
    verdict = check_draft(GOOD[0], replace(evidence, max_words=10))
    assert not verdict.ok and "too long" in verdict.problems[0]


def test_an_empty_draft_is_refused(evidence: Evidence) -> None:
    assert check_draft("  ", evidence).problems == ["is empty"]


def test_unsupported_names_finds_each_kind_of_name() -> None:
    evidence = "BUG: KASAN: use-after-free in tcp_close+0x1/0x20 net/ipv4/tcp.c:2190\nsize 8"
    draft = (
        "tcp_close() read 8 bytes in net/ipv4/tcp.c; tcp_v4_rcv at net/ipv4/tcp_ipv4.c "
        "with vm.swappiness and 64 bytes, see commit deadbeef12"
    )
    assert unsupported_names(draft, evidence) == [
        "net/ipv4/tcp_ipv4.c",
        "vm.swappiness",
        "tcp_v4_rcv",
        "deadbeef12",
        "64",
    ]
    assert unsupported_names("tcp_close() read 8 bytes in net/ipv4/tcp.c.", evidence) == []


def test_cut_to_sentence_keeps_whole_sentences_only() -> None:
    assert cut_to_sentence("It crashed in f. Then the task") == "It crashed in f."
    assert cut_to_sentence("It crashed, e.g. in f. Then") == "It crashed, e.g. in f."
    assert cut_to_sentence("A whole sentence.") == "A whole sentence."
    assert cut_to_sentence("no end at all") == "no end at all"  # refused later, not hidden


def test_kinds_are_read_from_titles_and_types() -> None:
    assert kinds_named("KASAN: use-after-free Read in f") == {"use-after-free", "kasan"}
    assert kinds_named("INFO: task hung in f") == {"hang"}
    assert "deadlock" in kinds_named("possible deadlock in f")


def test_a_default_is_checked_against_the_default_not_any_number() -> None:
    # the evidence holds 30 (a value set here, a release, a time), the default is 60
    evidence = Evidence(
        "The default value is 60. Value here: 30. Runs 6.18.30; changed at 12:30 UTC.",
        defaults=("60",),
        min_words=1,
    )
    for wrong in ("The default value is 30.", "It defaults to 30.", "It is 30 by default."):
        verdict = check_draft(wrong, evidence)
        assert verdict.problems == ["gives the default as 30, the default is 60"], wrong
    assert check_draft("The default value is 60.", evidence).ok
    assert check_draft("The value here is 30.", evidence).ok  # not about the default
    # without known defaults, such a sentence is checked like any number
    assert check_draft("The default value is 30.", replace(evidence, defaults=())).ok


def test_stated_defaults_reads_each_way_of_saying_it() -> None:
    text = "The default value is 60. It defaults to 0x10; 5 by default. Default: 7."
    assert stated_defaults(text) == ["60", "0x10", "5", "7"]


def test_another_form_of_an_evidence_word_is_not_more_than_the_facts() -> None:
    # "Accept Router Preference in RA." restated as "... is accepted in RA" was refused
    # as saying more than the documentation; a word the documentation lacks still is.
    doc = Evidence(
        "net.ipv6.conf.lo.accept_ra_rtr_pref\nAccept Router Preference in RA. Generate requests.",
        plain_words=frozenset(["a", "it", "the", "whether", "is", "are", "controls", "in"]),
        min_words=3,
    )
    assert check_draft("It controls whether Router Preference is accepted in RA.", doc).ok
    assert check_draft("It controls whether requests are generated.", doc).ok
    refused = check_draft("It controls whether Router Preference is ignored in RA.", doc)
    assert any("says more than the facts (ignored)" in p for p in refused.problems)
