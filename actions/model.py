"""The Recommendation contract and the changeset types.

A recommendation is data, never code: ``{id, kind, target, value, current,
rationale, evidence, expected_effect, risk, source}`` (DESIGN.md). The agent
parses it strictly (unknown fields are refused) and then validates it against
the kernel, the built-in limits and the policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from actions.errors import Rejected

Risk = Literal["low", "medium", "high"]
RISKS: tuple[Risk, ...] = ("low", "medium", "high")

#: A value as a recommendation gives it: an integer, a vector of integers, or a word.
RawValue = StrictInt | list[StrictInt] | str


class Recommendation(BaseModel):
    """One proposed change to one kernel knob (DESIGN.md's Recommendation contract)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    kind: Literal["sysctl", "sysfs"]
    target: str = Field(min_length=1, max_length=256)
    value: RawValue
    current: RawValue | None = None
    rationale: str = Field(default="", max_length=4096)
    evidence: list[str | dict[str, Any]] = Field(default_factory=list, max_length=64)
    expected_effect: str = Field(default="", max_length=2048)
    risk: Risk = "medium"
    source: str = Field(pattern=r"^(rules|llm:[A-Za-z0-9_.:/@+-]{1,128})$")


#: What a field must be, said plainly (pydantic's own words for unions and patterns are not).
_FIELD_RULES = {
    "id": "letters, digits and _ . : - only, at most 64",
    "value": "an integer, a list of integers, or a word",
    "current": "an integer, a list of integers, or a word",
    "source": "'rules' or 'llm:<model>'",
    "evidence": "a list of at most 64 strings or objects",
}


def _schema_error(index: int, raw: object, exc: ValidationError) -> Rejected:
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else "entry"
    where = field if field in _FIELD_RULES else ".".join(str(p) for p in first["loc"]) or "entry"
    rec_id = raw.get("id") if isinstance(raw, Mapping) else None
    label = rec_id if isinstance(rec_id, str) and rec_id.isprintable() else f"#{index}"
    msg = first["msg"]
    if first["type"] == "missing":
        msg = "this field is required"
    elif first["type"] == "extra_forbidden":
        msg = "unknown field (a recommendation is data: only the contract's fields are accepted)"
    elif field in _FIELD_RULES:
        msg = f"must be {_FIELD_RULES[field]}"
    return Rejected("schema", label[:64], f"field {where}: {msg}")


def parse_recommendations(
    doc: object, limit: int = 64
) -> tuple[list[Recommendation], list[Rejected]]:
    """Parse a JSON object or array of objects into recommendations.

    :param doc: the decoded JSON (one object, or a list of objects).
    :param limit: the most recommendations one changeset may hold.
    :return: the parsed recommendations and one rejection per entry that broke the schema.
    """
    entries: Sequence[object] = doc if isinstance(doc, list) else [doc]
    if not entries:
        return [], [Rejected("schema", "", "no recommendation given (an empty list)")]
    if len(entries) > limit:
        return [], [Rejected("schema", "", f"{len(entries)} recommendations; at most {limit}")]
    recs: list[Recommendation] = []
    errors: list[Rejected] = []
    for i, raw in enumerate(entries):
        if not isinstance(raw, dict):
            errors.append(Rejected("schema", f"#{i}", "a recommendation must be a JSON object"))
            continue
        try:
            recs.append(Recommendation.model_validate(raw))
        except ValidationError as exc:
            errors.append(_schema_error(i, raw, exc))
    return recs, errors


@dataclass
class Change:
    """One key of a changeset: its old and new value (canonical text) and its state.

    States: ``pending``, ``written``, ``verified``, ``superseded`` (a later changeset
    manages the key), ``overridden`` (someone else changed it; no longer managed),
    ``rolled_back``.
    """

    kind: str
    target: str
    old: str
    new: str
    risk: str = "medium"
    state: str = "pending"
    rec_id: str = ""
    rationale: str = ""
    evidence: list[Any] = field(default_factory=list)
    expected_effect: str = ""
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the change as JSON-ready data."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Changeset:
    """A set of changes applied all-or-nothing, as the journal keeps it.

    :param id: the journal's id (0 for a changeset that was only validated).
    :param state: ``validated``, ``applying``, ``applied``, ``verified``, ``failed``,
        ``rolling_back`` or ``rolled_back``.
    :param created: when it was submitted (seconds since the epoch).
    :param who: the peer that asked: ``{uid, gid, pid, user}``.
    """

    id: int
    state: str
    created: float
    changes: list[Change]
    who: dict[str, Any] = field(default_factory=dict)
    persist: bool = False
    updated: float = 0.0
    error: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the changeset as JSON-ready data."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["changes"] = [c.to_dict() for c in self.changes]
        return out


# --- completions: what the agent answers, typed on both sides of the socket -------------


@dataclass
class ErrorEntry:
    """One rejection in a completion: the rule broken, the key, and one line."""

    rule: str
    target: str
    message: str


@dataclass
class ManagedKey:
    """A key the agent manages: the changeset that set it and its value."""

    changeset: int
    kind: str
    target: str
    value: str


@dataclass
class OverriddenKey:
    """A key someone else changed after the agent set it (no longer managed)."""

    changeset: int
    kind: str
    target: str
    set: str


@dataclass
class AgentStatus:
    """What ``status`` answers.

    :param uptime: seconds since the agent started.
    :param changesets: how many changesets are in each state.
    """

    pid: int
    uptime: float
    policy: str
    journal: str
    audit: str
    changesets: dict[str, int]
    managed: list[ManagedKey]
    overridden: list[OverriddenKey]
    #: the in-kernel enforcement's state (``actions.enforce``), when it runs
    enforce: dict[str, Any] | None = None


#: The keys a completion always carries on the wire, even when empty.
_ALWAYS = frozenset({"user_data", "ok", "verdict", "errors", "changeset"})


class Completion(BaseModel):
    """One completion: the agent's answer to one submission (see :mod:`actions.protocol`).

    :param user_data: the submission's, echoed (``None``: the entry was not a submission).
    :param verdict: ``valid``, ``rejected``, ``verified``, ``failed``, ``rolled_back``,
        ``partly_rolled_back``, ``not_restored``, ``refused``, ``malformed``, ``ok``,
        ``not_found`` or ``error``.
    :param auto_approve: (validate) the policy lets this apply without a person.
    :param status: (status) what the agent manages.
    :param changesets: (history, rollback since) the changesets concerned.
    """

    model_config = ConfigDict(extra="ignore")

    user_data: str | int | None = None
    ok: bool
    verdict: str
    errors: list[ErrorEntry] = Field(default_factory=list)
    changeset: Changeset | None = None
    notices: list[str] = Field(default_factory=list)
    auto_approve: bool | None = None
    status: AgentStatus | None = None
    changesets: list[Changeset] | None = None

    def to_wire(self, user_data: str | int | None) -> dict[str, Any]:
        """Return the completion as the JSON object sent for ``user_data``."""
        out = self.model_dump(mode="json")
        out["user_data"] = user_data
        return {k: v for k, v in out.items() if v is not None or k in _ALWAYS}
