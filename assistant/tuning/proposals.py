"""A model's own proposal: a schema whose ``target`` is an enum of known keys.

The model never picks a value that goes straight to the kernel: its proposal
becomes a Recommendation labelled ``source: "llm:<model>"`` and joins the rules'
recommendations on the one path to the agent, which validates every one of them.
The schema is the ``tune_proposal`` prompt's ``output_schema``; its enum must be
:data:`PROPOSABLE_KEYS` (a test checks it).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from actions.model import Recommendation
from assistant.errors import KassistError
from assistant.tuning.engine import TuneReport
from assistant.tuning.evidence import Observation
from assistant.tuning.scenarios import KNOWN_KEYS

PROMPT_NAME = "tune_proposal"
#: Keys whose value is a vector: the model's schema has one integer, so they are left out.
VECTOR_KEYS = frozenset({"net.ipv4.tcp_rmem", "net.ipv4.tcp_mem", "net.ipv4.ip_local_port_range"})
#: What a model may name as ``target``.
PROPOSABLE_KEYS: tuple[str, ...] = tuple(k for k in KNOWN_KEYS if k not in VECTOR_KEYS)
_MODEL_NAME = re.compile(r"[^A-Za-z0-9_.:/@+-]")


class ModelProposal(BaseModel):
    """A model's answer, checked again after the step's own schema: one known key, an int."""

    model_config = ConfigDict(extra="forbid")

    target: str
    value: StrictInt
    reason: str = Field(min_length=10, max_length=300)

    @field_validator("target")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in PROPOSABLE_KEYS:
            raise ValueError(f"{v!r} is not a key tune knows")
        return v


def source_label(model_name: str) -> str:
    """Return ``llm:<model>`` with the model's name reduced to the contract's characters."""
    name = _MODEL_NAME.sub("_", model_name)[:128] or "unknown"
    return f"llm:{name}"


def parse_proposal(answer: dict[str, Any]) -> ModelProposal | None:
    """Check a model's answer; anything but one valid proposal is ``None`` (fail closed)."""
    try:
        return ModelProposal.model_validate(answer)
    except ValidationError:
        return None


def to_recommendation(
    p: ModelProposal, model_name: str, obs: Observation, report: TuneReport
) -> Recommendation:
    """Turn a model's proposal into a Recommendation for the agent to validate.

    ``current`` is what the kernel has now; the evidence is the findings' evidence.
    """
    current = obs.sysctl(p.target)
    evidence: list[str | dict[str, Any]] = []
    evidence += [e for f in report.findings for e in f.evidence][:64]
    return Recommendation(
        id=f"llm:{p.target}"[:64],
        kind="sysctl",
        target=p.target,
        value=p.value,
        current=current if isinstance(current, int) else None,
        rationale=p.reason,
        evidence=evidence or ["no finding: the model proposed this on its own"],
        expected_effect="as the model's rationale says (check it)",
        risk="medium",
        source=source_label(model_name),
    )


def propose(
    backend: Any, obs: Observation, report: TuneReport, max_tokens: int = 120
) -> tuple[Recommendation | None, str]:
    """Ask the model for one proposal of its own (the ``tune_proposal`` structured step).

    :return: the recommendation (or ``None``) and a one-line notice of what happened.
    """
    from assistant.llm.prompts import load_prompt
    from assistant.llm.structured import run_step

    prompt = load_prompt(PROMPT_NAME)
    lines = [e for f in report.findings for e in f.evidence] or ["no scenario fired"]
    try:
        step = run_step(backend, prompt, {"lines": lines}, max_tokens)
    except KassistError as exc:
        return None, f"no model proposal: {exc.one_line()}"
    proposal = parse_proposal(step.value.model_dump())
    if proposal is None:
        return None, "the model's proposal named no known key: refused"
    rec = to_recommendation(proposal, str(getattr(backend, "model_name", "model")), obs, report)
    return rec, f"the model proposed {rec.target} = {rec.value}; the agent validates it"
