"""JSON schema → llama.cpp grammar, failing closed.

llama-cpp-python's ``response_format={"type": "json_object", "schema": ...}`` path
turns the schema into a GBNF grammar and, when that fails, silently falls back to a
grammar for *any* JSON value. kassist builds the grammar itself and refuses instead:
a schema that cannot become a grammar raises :class:`SchemaNotSupported`.
"""

from __future__ import annotations

import json
from typing import Any

from assistant.llm.errors import SchemaNotSupported

_SCALARS = {"string", "integer", "number", "boolean"}


def _field_kind(name: str, prop: dict[str, Any]) -> str:
    if "enum" in prop or "const" in prop:
        return "enum"
    kind = prop.get("type")
    if kind in _SCALARS:
        return str(kind)
    if kind == "array":
        items = prop.get("items", {})
        if isinstance(items, dict) and (items.get("type") in _SCALARS or "enum" in items):
            return "array"
    raise SchemaNotSupported(
        f"schema field {name!r} is not flat (type {kind!r})",
        "keep step schemas flat: scalars, enums and lists of scalars",
    )


def check_flat(schema: dict[str, Any]) -> None:
    """Check that a step schema is one flat object: scalars, enums, lists of scalars.

    Flat schemas are what small models follow reliably and what every backend's
    converter handles.

    :raises SchemaNotSupported: nested objects, references, unions, or no properties.
    """
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        raise SchemaNotSupported(
            "a step schema must be an object with properties", "fix the step's schema"
        )
    if "$defs" in schema or "$ref" in json.dumps(schema):
        raise SchemaNotSupported(
            "a step schema must not use $ref/$defs", "inline enums (use Literal in pydantic)"
        )
    for name, prop in schema["properties"].items():
        if not isinstance(prop, dict):
            raise SchemaNotSupported(f"schema field {name!r} is not an object", "fix the schema")
        _field_kind(name, prop)


#: llama-cpp-python's converter lets a string hold raw control characters (a newline
#: inside "likely_cause"), which JSON forbids: the model then writes text that the
#: grammar accepts and no JSON parser does. kassist narrows the rule.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def _json_strings(grammar: str) -> str:
    narrowed = grammar.replace(_LOOSE_CHAR, _JSON_CHAR)
    for line in narrowed.splitlines():
        if line.startswith("char ::=") and "\\x00-\\x1F" not in line:
            raise SchemaNotSupported(
                "the grammar's string rule admits control characters (not JSON)",
                "update kassist's grammar fix for this llama-cpp-python",
            )
    return narrowed


def schema_to_gbnf(schema: dict[str, Any]) -> str:
    """Return the llama.cpp GBNF grammar that admits exactly the objects of ``schema``.

    :param schema: a flat JSON schema (see :func:`check_flat`).
    :return: the grammar text (root rule ``root``).
    :raises SchemaNotSupported: the schema is not flat, the converter fails, or it would
        only give the generic "any JSON" grammar.
    """
    check_flat(schema)
    try:
        from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf
    except ImportError:
        raise SchemaNotSupported(
            "llama-cpp-python is not installed: no grammar for structured output",
            "run the README's set-up command",
        ) from None
    try:
        grammar = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare Exceptions and KeyErrors
        raise SchemaNotSupported(
            f"cannot turn the schema into a grammar ({type(exc).__name__}: {exc})",
            "simplify the step's schema",
        ) from None
    if not isinstance(grammar, str) or "root ::=" not in grammar:
        raise SchemaNotSupported("the grammar converter gave no root rule", "simplify the schema")
    grammar = _json_strings(grammar)
    if grammar.strip() == str(JSON_GBNF).strip():
        raise SchemaNotSupported(
            "the schema only gives the generic JSON grammar (no constraint)",
            "give the schema its properties",
        )
    return grammar


_LEFT_TO_THE_TOOL = frozenset({"pattern", "maxLength", "minLength"})


def tool_call_gbnf(tools: list[dict[str, Any]]) -> str:
    """Return a grammar for exactly one call of one of ``tools``: a JSON object
    ``{"name": NAME, "arguments": {...}}`` whose arguments fit that tool's parameters.

    :param tools: OpenAI-style tool descriptions (``{"type": "function", "function":
        {"name", "parameters"}}``).
    :raises SchemaNotSupported: the converter cannot build the grammar.
    """
    calls = []
    for tool in tools:
        function = tool.get("function", {})
        params = dict(function.get("parameters") or {"type": "object", "properties": {}})
        params.setdefault("type", "object")
        # Patterns and lengths are left to the tool's own validation: the converter takes
        # few patterns, and spells a maximum length out character by character.
        params["properties"] = {
            k: {key: v for key, v in prop.items() if key not in _LEFT_TO_THE_TOOL}
            for k, prop in (params.get("properties") or {}).items()
        }
        calls.append(
            {
                "type": "object",
                "properties": {"name": {"const": function.get("name", "")}, "arguments": params},
                "required": ["name", "arguments"],
            }
        )
    try:
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        grammar = json_schema_to_gbnf(json.dumps({"anyOf": calls}))
    except Exception as exc:  # ImportError, or the converter's bare Exceptions
        raise SchemaNotSupported(
            f"cannot build a tool-call grammar ({type(exc).__name__}: {exc})",
            "the model's calls are then checked after the fact",
        ) from None
    return _json_strings(grammar)


def _gbnf_literal(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid GBNF literal (\\ \" \n escapes)


def prose_gbnf(names: list[str], sentences: int = 2) -> str:
    """Return a grammar for plain prose whose only names are ``names``.

    Words are letters (with hyphens: ``use-after-free``), alone or a few in parentheses
    (``(RFC 4429)``); anything with a digit, an
    underscore, a slash or a dot (a symbol, a file, a number, a version) can only be
    one of ``names``, written as given. The answer is one to ``sentences`` sentences,
    each ending with a full stop, so it cannot invent a name nor stop mid-sentence
    unless cut by the token budget.

    :param names: the names the prose may use (from its evidence).
    :param sentences: the most sentences.
    """
    alternatives = " | ".join(_gbnf_literal(n) for n in dict.fromkeys(names) if n)
    more = ' (" " sentence)?' * (sentences - 1)
    rules = [
        f"root ::= sentence{more}",
        'sentence ::= word (sep word)* "."',
        'sep ::= " " | ", " | "; "',
        'word ::= plain | "(" inner (" " inner)* ")" | inner',
        "inner ::= plain | name" if alternatives else "inner ::= plain",
        'plain ::= [A-Za-z]+ ("-" [A-Za-z]+)* ("\'s")?',
    ]
    if alternatives:
        rules.append(f"name ::= {alternatives}")
    return "\n".join(rules) + "\n"
