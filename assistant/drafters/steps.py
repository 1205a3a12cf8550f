"""The product's structured steps: their output models, prompts and context budgets.

A structured prompt names its model here by import path (``output_model =
"assistant.drafters.steps:CrashAssessment"``); the LLM runtime validates against it
without knowing what a crash is.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from assistant.drafters.crash_lines import classify
from assistant.llm.base import Backend
from assistant.llm.budget import fit_evidence
from assistant.llm.prompts import load_prompt
from assistant.llm.schemas import StepModel, output_model, step_schema
from assistant.llm.structured import StepResult, run_step
from assistant.triage.model import Crash

Subsystem = Literal[
    "networking",
    "filesystems",
    "memory-management",
    "block",
    "drivers",
    "usb",
    "sound",
    "graphics",
    "scheduler",
    "locking",
    "bpf",
    "security",
    "virtualization",
    "crypto",
    "io_uring",
    "other",
]
Severity = Literal["low", "medium", "high", "critical"]


class CrashAssessment(StepModel):
    """The model's reading of one triaged crash (the ``crash_assessment`` step).

    The string limits bound the answer: even one token per character it takes at most
    about 100 + 3 x 60 + 50 tokens, so under the grammar it always completes within the
    prompt's ``max_tokens`` (330) instead of being cut off mid-string. Reports no longer
    show it (severity and next steps are tables in :mod:`assistant.drafters.assessment`);
    it remains the reference exercise of grammar-constrained output
    (``benchmarks/llm_structured.py``).
    """

    subsystem: Subsystem = Field(description="the kernel subsystem the crash most likely is in")
    severity: Severity = Field(description="how bad the crash is for a production machine")
    likely_cause: str = Field(
        min_length=8, max_length=100, description="one sentence: the likely cause"
    )
    next_steps: list[Annotated[str, Field(min_length=3, max_length=60)]] = Field(
        min_length=1,
        max_length=3,
        description="what an engineer should do next, shortest first",
    )


ASSESSMENT_PROMPT = "crash_assessment"
#: Call-trace frames named in the assessment prompt (innermost first).
ASSESSMENT_FRAMES = 10
#: Tokens kept free besides the answer (template markers, rounding).
SAFETY_TOKENS = 32


def assess_crash(
    crash: Crash, backend: Backend, n_ctx: int | None = None, max_tokens: int | None = None
) -> StepResult[Any]:
    """Ask the model for a :class:`CrashAssessment` of a crash.

    The report's lines are trimmed by priority to fit the context window (less the answer).

    :param n_ctx: the window to fit in tokens (default: the backend's own).
    :param max_tokens: the answer's budget (default: the prompt's ``max_tokens``).
    :raises StructuredRefusal: the model's answer stayed invalid.
    """
    prompt = load_prompt(ASSESSMENT_PROMPT)
    answer_tokens = max_tokens or int(prompt.meta.get("max_tokens", 160))
    schema = json.dumps(step_schema(output_model(prompt.meta, prompt.name)))
    context: dict[str, Any] = {
        "crash": crash,
        "frames": crash.call_trace[:ASSESSMENT_FRAMES],
        "schema": schema,
        "subsystems": ", ".join(get_args(Subsystem)),
    }
    messages, evidence = fit_evidence(
        prompt,
        context,
        classify(crash.report),
        backend.count_tokens,
        budget=(n_ctx or backend.context_size()) - answer_tokens - SAFETY_TOKENS,
    )
    context["evidence"] = evidence
    return run_step(backend, prompt, context, answer_tokens, messages=messages)
