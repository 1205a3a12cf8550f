"""The one checked-draft pipeline: sentence by sentence, drop or withhold, log every outcome."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from assistant.config import LLMConfig
from assistant.drafters.checker import Evidence, split_sentences
from assistant.drafters.pipeline import DraftPrompt, check_sentences, checked_draft
from assistant.llm import make_backend
from assistant.llm.base import Message, Sampling
from assistant.llm.models import CATALOGUE, DEFAULT_MODEL, cached_path
from tests.conftest import require

EVIDENCE = Evidence(
    text=(
        "BUG: KASAN: use-after-free in tcp_close+0x1a/0x80 Read of size 8 at addr "
        "ffff888012345678 by task sshd/812. Freed by task 40: kfree tcp_disconnect. "
        "Allocated by task 812: kmem_cache_alloc sk_prot_alloc."
    ),
    kind="KASAN: use-after-free Read in tcp_close",
    function="tcp_close",
    min_words=8,
    max_words=80,
)


def test_a_sentence_that_names_what_the_evidence_lacks_is_dropped_and_the_rest_shown() -> None:
    raw = (
        "Task sshd read 8 bytes of freed memory in tcp_close. "
        "The object was freed by task 40 in kfree, called from tcp_disconnect. "
        "The bug was introduced by commit deadbeef12 in net/ipv4/tcp_output.c."
    )
    draft = check_sentences(raw, EVIDENCE)
    assert draft.text == " ".join(split_sentences(raw)[:2])
    assert len(draft.dropped) == 1 and "deadbeef12" in draft.dropped[0][1]
    assert draft.why.startswith("1 sentence dropped (")
    assert "\n" not in draft.why


def test_with_the_withhold_policy_one_failing_sentence_withholds_the_draft() -> None:
    raw = "Task sshd read 8 bytes of freed memory in tcp_close. It crashed in tcp_sendmsg."
    draft = check_sentences(raw, EVIDENCE, policy="withhold")
    assert draft.text is None and draft.why.startswith("withheld: ")
    assert "tcp_sendmsg" in draft.why


def test_what_is_left_must_still_be_a_draft() -> None:
    raw = "The kernel crashed in tcp_sendmsg. The severity is low."
    draft = check_sentences(raw, EVIDENCE)
    # What passes (4 words) is less than the evidence's 8: withheld, not shown cut.
    assert draft.text is None and draft.why.startswith("withheld: ")
    assert draft.kept == ("The severity is low.",) and len(draft.dropped) == 1


def test_a_cut_sentence_a_repeat_and_too_many_sentences() -> None:
    raw = (
        "Task sshd read 8 bytes of freed memory in tcp_close. "
        "Task sshd read 8 bytes of freed memory in tcp_close. "
        "The object was freed by task 40 in kfree. And then the"
    )
    draft = check_sentences(raw, EVIDENCE)
    assert draft.kept == (
        "Task sshd read 8 bytes of freed memory in tcp_close.",
        "The object was freed by task 40 in kfree.",
    )
    assert [why for _, why in draft.dropped] == ["repeats an earlier sentence"]
    first_only = check_sentences(raw, Evidence(**{**EVIDENCE.__dict__, "max_sentences": 1}))
    assert first_only.kept == ("Task sshd read 8 bytes of freed memory in tcp_close.",)
    assert check_sentences("And then the", EVIDENCE).text is None


def test_the_callers_own_sentence_check_drops_too() -> None:
    raw = "Task sshd read 8 bytes of freed memory in tcp_close. The object was freed by task 40."
    draft = check_sentences(
        raw, EVIDENCE, sentence_check=lambda s: ["says nothing new"] if "object" in s else []
    )
    assert draft.kept == ("Task sshd read 8 bytes of freed memory in tcp_close.",)
    assert draft.dropped[0][1] == "says nothing new"


def test_no_backend_means_no_draft() -> None:
    prompt = DraftPrompt([Message("user", "hi")], 10)
    draft = checked_draft(prompt, EVIDENCE, None)
    assert draft.text is None and draft.why == "no model"


@pytest.mark.real
def test_the_default_model_drafts_and_every_outcome_is_logged(tmp_path: Path) -> None:
    require(cached_path(CATALOGUE[DEFAULT_MODEL]) is not None, "the default model is not installed")
    log = tmp_path / "llm.db"
    backend = make_backend(LLMConfig(temperature=0.0), log=False)
    from assistant.llm.log import LoggedBackend

    logged = LoggedBackend(backend, LLMConfig(), path=log)
    prompt = DraftPrompt(
        [
            Message("system", "Answer in two short sentences, using only the facts given."),
            Message("user", f"Facts: {EVIDENCE.text}\nWhat happened?"),
        ],
        80,
        Sampling(temperature=0.0, stop=("\n\n",)),
        "test@1",
    )
    draft = checked_draft(prompt, EVIDENCE, logged)
    assert draft.raw.strip()
    assert draft.stats.completion_tokens > 0
    row = sqlite3.connect(log).execute("SELECT structured, refusal FROM responses").fetchone()
    if draft.shown:
        assert row[0] is not None and draft.text in row[0]
    else:
        assert row[1] == draft.why


def test_a_caller_may_accept_a_short_true_sentence() -> None:
    # A documentation's "Defaults to 3." is a whole sentence; the docs paragraph keeps it
    # (three words), the pipeline's default still drops it as too short.
    doc = Evidence(
        "ucast_solicit: the maximum number of unicast probes. Defaults to 3.", min_words=3
    )
    raw = "It sets the maximum number of unicast probes. Defaults to 3."
    assert check_sentences(raw, doc, sentence_words=3).kept[-1] == "Defaults to 3."
    assert [s for s, _why in check_sentences(raw, doc).dropped] == ["Defaults to 3."]
