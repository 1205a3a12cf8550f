"""The product's structured steps: prompts + schema + context budget, ready to call."""

from __future__ import annotations

import json
from typing import Any, get_args

from assistant.llm.base import Backend, approx_tokens
from assistant.llm.budget import classify, fit_evidence
from assistant.llm.prompts import load_prompt
from assistant.llm.schemas import Subsystem, output_model, step_schema
from assistant.llm.structured import StepResult, run_step
from assistant.triage.model import Crash

ASSESSMENT_PROMPT = "crash_assessment"
#: Call-trace frames named in the assessment prompt (innermost first).
ASSESSMENT_FRAMES = 10
#: Tokens kept free besides the answer (template markers, rounding).
SAFETY_TOKENS = 32


def token_counter(backend: Backend) -> Any:
    """Return the backend's own token counter, or an estimate when it has none."""
    count = getattr(backend, "count_tokens", None)
    return count if callable(count) else approx_tokens


def assess_crash(
    crash: Crash, backend: Backend, n_ctx: int, max_tokens: int | None = None
) -> StepResult[Any]:
    """Ask the model for a :class:`~assistant.llm.schemas.CrashAssessment` of a crash.

    The report's lines are trimmed by priority to fit ``n_ctx`` (less the answer).

    :param n_ctx: the model's context window in tokens.
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
    messages, _evidence = fit_evidence(
        prompt,
        context,
        classify(crash.report),
        token_counter(backend),
        budget=n_ctx - answer_tokens - SAFETY_TOKENS,
    )
    context["evidence"] = _evidence
    return run_step(backend, prompt, context, answer_tokens, messages=messages)


ROUTER_PROMPT = "chat_router"
#: The most characters of a user's message handed to the router.
ROUTER_MESSAGE_CHARS = 2000


def route_message(backend: Backend, message: str) -> StepResult[Any]:
    """Pick the chat's action for a user's message (a :class:`RouterDecision`).

    :raises StructuredRefusal: the model's answer stayed invalid.
    """
    prompt = load_prompt(ROUTER_PROMPT)
    return run_step(
        backend,
        prompt,
        {"message": message[:ROUTER_MESSAGE_CHARS]},
        int(prompt.meta.get("max_tokens", 48)),
    )
