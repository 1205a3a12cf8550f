"""The pydantic models of the structured steps, by the name a prompt's front matter uses.

Each step has one flat schema (scalars, enums, lists of scalars): small models follow
those, and every backend's converter handles them. A prompt names its model by import
path, ``output_model = "package.module:Name"`` (the product's steps live in
``assistant.drafters.steps``; the runtime knows none of them), or gives a flat JSON
schema inline (``[output_schema]``), which :func:`model_from_schema` turns into a
pydantic model.
"""

from __future__ import annotations

import importlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from assistant.errors import KassistError


class StepModel(BaseModel):
    """Base of every step's output: unknown keys are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")


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


def _import_model(spec: str, prompt_name: str) -> type[StepModel]:
    module, _, attr = spec.partition(":")
    try:
        found = getattr(importlib.import_module(module), attr) if attr else None
    except (ImportError, AttributeError):
        found = None
    if not (isinstance(found, type) and issubclass(found, StepModel)):
        raise KassistError(
            f"prompt {prompt_name}: output_model {spec!r} is not a step model",
            "name one as package.module:Class, a subclass of StepModel",
        )
    return found


def output_model(meta: dict[str, Any], prompt_name: str) -> type[StepModel]:
    """Return the pydantic model a structured prompt's front matter names or gives.

    :raises KassistError: neither ``output_model`` nor ``output_schema``, or a name that
        does not import as a :class:`StepModel`.
    """
    name = meta.get("output_model")
    if isinstance(name, str):
        return _import_model(name, prompt_name)
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
