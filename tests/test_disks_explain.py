"""The model explains a finding only through the shared draft checker."""

from __future__ import annotations

from dataclasses import replace

import pytest

from assistant.config import LLMConfig
from assistant.disks.explain import Explainer, finding_evidence
from assistant.disks.model import Finding
from assistant.llm import make_backend
from assistant.llm.base import Backend
from assistant.llm.prompts import load_prompt
from tests.conftest import require_default_model


def _finding() -> Finding:
    return Finding(
        device="loop2",
        kind="fail-slow",
        pattern="steady",
        baseline="peers",
        peer_group="ssd/loop/64M",
        peers=["loop0", "loop1", "loop3"],
        figures={"slowdown": 5.1},
        summary="loop2 is fail-slow (steady): 2.1 ms per request, 5.1x what its 3 peer(s) take.",
        advice="Drain the device and replace it. kassist changes nothing.",
    )


@pytest.fixture(scope="module")
def backend() -> Backend:
    require_default_model()
    return make_backend(LLMConfig(backend="llama_cpp", n_ctx=1024, temperature=0.0))


def test_the_prompt_carries_the_finding_as_data() -> None:
    messages = load_prompt("disks_finding").render(finding=_finding())
    user = messages[-1].content
    assert "loop2" in user and "5.1x" in user and "loop0, loop1, loop3" in user
    evidence = finding_evidence(_finding(), [])
    assert "loop2" in evidence.text and "steady" in evidence.text


@pytest.mark.parametrize(
    "draft",
    [
        "loop2 is slow because its power supply is failing.",  # a guessed cause
        "loop9 serves requests 5.1x slower than its peers.",  # another device
        "loop2 serves requests 12x slower than its peers.",  # another figure
    ],
)
def test_planted_faults_in_an_explanation_are_withheld(draft: str) -> None:
    from assistant.drafters.checker import check_draft

    assert not check_draft(draft, finding_evidence(_finding(), [])).ok


def test_at_temperature_0_the_explanation_is_shown_and_every_sentence_passed(
    backend: Backend,
) -> None:
    # Greedy decoding: the outcome is fixed; the default model must explain this plain
    # finding, and each sentence shown must pass the checker again.
    from assistant.drafters.checker import check_draft, split_sentences

    explainer = Explainer(backend)
    text = explainer(_finding())
    assert text is not None, explainer.notices
    body = text.removeprefix("model: ")
    lines = [
        ln
        for m in load_prompt("disks_finding").render(finding=_finding())
        for ln in m.content.splitlines()
    ]
    evidence = replace(finding_evidence(_finding(), lines), min_words=4, max_sentences=1)
    for sentence in split_sentences(body):
        assert check_draft(sentence, evidence).ok, sentence
