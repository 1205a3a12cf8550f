"""Structured steps that fail closed.

A structured step is a prompt whose answer must be one JSON object of a flat schema.
The answer is constrained while it is generated where the backend can (a llama.cpp
grammar, a schema handed to the server), then validated with pydantic; an invalid
answer is sent back with the validation error at most ``retries`` times; after that
the step raises :class:`StructuredRefusal`. Invalid data is never returned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from assistant.llm.base import Backend, GenerationStats, Message
from assistant.llm.errors import StructuredRefusal
from assistant.llm.prompts import Prompt
from assistant.llm.schemas import output_model, step_schema

T = TypeVar("T", bound=BaseModel)

#: Retries after the first attempt when a prompt does not say (front matter ``retries``).
DEFAULT_RETRIES = 2
#: Most characters of a validation error fed back to the model.
ERROR_CHARS = 400


@dataclass
class StepResult(Generic[T]):
    """A validated answer of a structured step.

    :param value: the validated object.
    :param attempts: how many generations it took (1 = the first answer was valid).
    :param errors: the validation error of each invalid attempt, in order.
    :param stats: the cost of each attempt.
    :param kinds: each attempt's outcome: ``valid``, ``json`` (not complete JSON: the
        constraint did not hold or the answer was cut off) or ``schema`` (JSON that
        pydantic refused).
    """

    value: T
    attempts: int
    errors: list[str] = field(default_factory=list)
    stats: list[GenerationStats] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)


def _short_error(exc: ValidationError | ValueError) -> str:
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(p) for p in err['loc']) or 'answer'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        text = "; ".join(parts)
    else:
        text = str(exc)
    return text[:ERROR_CHARS]


def failure_kind(text: str) -> str:
    """Tell why an answer failed: ``json`` (not one complete JSON value) or ``schema``."""
    try:
        json.loads(text)
    except ValueError:
        return "json"
    return "schema"


def parse_answer(text: str, model: type[T]) -> T:
    """Validate a model's answer: exactly one JSON object of the step's schema.

    :raises ValidationError: the answer is not valid JSON or does not fit the schema.
    """
    return model.model_validate_json(text.strip())


def run_step(
    backend: Backend,
    prompt: Prompt,
    context: dict[str, Any],
    max_tokens: int,
    retries: int | None = None,
    messages: list[Message] | None = None,
) -> StepResult[Any]:
    """Run a structured step and return its validated answer.

    :param prompt: a prompt with ``kind = "structured"`` and an output model or schema.
    :param context: the template's variables.
    :param max_tokens: the most tokens one answer may take.
    :param retries: retries after an invalid answer (default: the prompt's, else 2).
    :param messages: already rendered messages (e.g. trimmed to a context budget).
    :raises StructuredRefusal: still invalid after every retry; nothing is returned.
    :raises SchemaNotSupported: the backend cannot constrain output to the schema.
    """
    model = output_model(prompt.meta, prompt.name)
    schema = step_schema(model)
    budget = int(prompt.meta.get("retries", DEFAULT_RETRIES)) if retries is None else retries
    context = {"schema": json.dumps(schema), **context}
    convo = list(messages if messages is not None else prompt.render(**context))
    errors: list[str] = []
    all_stats: list[GenerationStats] = []
    kinds: list[str] = []
    for attempt in range(1, budget + 2):
        stats = GenerationStats(prompt_name=f"{prompt.label}#{attempt}")
        text = "".join(backend.stream(convo, max_tokens, stats, json_schema=schema))
        all_stats.append(stats)
        try:
            value = parse_answer(text, model)
        except ValidationError as exc:
            error = _short_error(exc)
            errors.append(error)
            kinds.append(failure_kind(text))
            backend.record_outcome(stats, None, error)
            retry = prompt.render_block("retry", **context, error=error)
            convo = [*convo, Message("assistant", text), Message("user", retry)]
            continue
        backend.record_outcome(stats, value.model_dump(), None)
        kinds.append("valid")
        return StepResult(
            value=value, attempts=attempt, errors=errors, stats=all_stats, kinds=kinds
        )
    raise StructuredRefusal(prompt.name, errors, kinds)
