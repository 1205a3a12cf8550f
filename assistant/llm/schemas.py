"""The pydantic models of the structured steps, by the name a prompt's front matter uses.

Each step has one flat schema (scalars, enums, lists of scalars): small models follow
those, and every backend's converter handles them. A prompt names its model with
``output_model = "Name"``, or gives a flat JSON schema inline (``[output_schema]``),
which :func:`model_from_schema` turns into a pydantic model.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from assistant.errors import KassistError

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


class StepModel(BaseModel):
    """Base of every step's output: unknown keys are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


class CrashAssessment(StepModel):
    """The model's reading of one triaged crash (the ``crash_assessment`` step).

    The string limits bound the answer: even one token per character it takes at most
    about 100 + 3 x 60 + 50 tokens, so under the grammar it always completes within the
    prompt's ``max_tokens`` (330) instead of being cut off mid-string.
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


ChatAction = Literal["triage", "report", "explain", "tune", "answer"]


class RouterDecision(StepModel):
    """Which action the chat takes for a user's message (the ``chat_router`` step)."""

    action: ChatAction = Field(description="the one action to take")
    reason: str = Field(min_length=3, max_length=120, description="why, in a few words")


#: step models by the name prompts use in ``output_model``
STEP_MODELS: dict[str, type[StepModel]] = {
    "CrashAssessment": CrashAssessment,
    "RouterDecision": RouterDecision,
}

_JSON_TYPES: dict[str, type[Any]] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
}


def _field_type(prop: dict[str, Any]) -> Any:
    if "enum" in prop:
        return Literal[tuple(prop["enum"])]
    if prop.get("type") == "array":
        return list[_field_type(prop.get("items", {}))]  # type: ignore[misc]
    kind = prop.get("type")
    if kind not in _JSON_TYPES:
        raise KassistError(f"unsupported field type {kind!r} in an output schema", "keep it flat")
    return _JSON_TYPES[str(kind)]


def model_from_schema(name: str, schema: dict[str, Any]) -> type[StepModel]:
    """Build a pydantic model from a flat JSON schema given inline in a prompt.

    Only types, enums, ``required``, ``minLength``/``maxLength`` and
    ``minItems``/``maxItems`` are carried over.
    """
    required = set(schema.get("required", []))
    fields: dict[str, Any] = {}
    for key, prop in schema.get("properties", {}).items():
        limits: dict[str, Any] = {}
        for src, dst in (
            ("minLength", "min_length"),
            ("maxLength", "max_length"),
            ("minItems", "min_length"),
            ("maxItems", "max_length"),
        ):
            if src in prop:
                limits[dst] = prop[src]
        default = ... if key in required else None
        fields[key] = (_field_type(prop), Field(default, **limits))
    return create_model(name, __base__=StepModel, **fields)


def output_model(meta: dict[str, Any], prompt_name: str) -> type[StepModel]:
    """Return the pydantic model a structured prompt's front matter names or gives.

    :raises KassistError: neither ``output_model`` nor ``output_schema``, or an unknown name.
    """
    name = meta.get("output_model")
    if isinstance(name, str):
        model = STEP_MODELS.get(name)
        if model is None:
            raise KassistError(
                f"prompt {prompt_name}: unknown output_model {name!r}",
                f"known: {', '.join(sorted(STEP_MODELS))}",
            )
        return model
    schema = meta.get("output_schema")
    if isinstance(schema, dict):
        return model_from_schema(prompt_name.title().replace("_", ""), schema)
    raise KassistError(
        f"prompt {prompt_name} is not a structured step",
        "give output_model or [output_schema] in its front matter",
    )


def step_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return the JSON schema handed to the backend: the model's, minus titles."""
    schema = model.model_json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    # Titles, defaults and descriptions are for people; a small model copies them into
    # its answer ("likely_cause": "one sentence: the likely cause"), so they stay out.
    for prop in schema.get("properties", {}).values():
        for key in ("title", "default", "description"):
            prop.pop(key, None)
    return schema
