"""The queue protocol: newline-delimited JSON over a Unix stream socket.

A submission entry is ``{"op", "user_data", ...}``; the agent answers each with
exactly one completion ``{"user_data", "ok", "verdict", "errors", "changeset", ...}``.
Many submissions may be in flight on one connection and completions may come
back in another order: match them by ``user_data``. ``errors`` is a list of
``{rule, target, message}``; a completion may also carry ``notices`` (lines for
the user, e.g. a key someone else overrode), ``auto_approve`` (validate),
``status`` (status) and ``changesets`` (history, rollback since). A line that
is not a submission at all gets one completion with ``user_data: null`` and
verdict ``malformed`` (after every earlier completion), then the connection is
closed; so does a connection over the agent's caps, with verdict ``refused`` and rule
``busy``. A submission whose op or fields are wrong gets one completion with verdict
``malformed`` (rule ``protocol``) and the connection stays open. Entries are UTF-8
JSON objects nested at most :data:`MAX_DEPTH` deep. Each op's fields are one
pydantic model below (:data:`OPS`, unknown fields refused); completions are typed on
both sides: :class:`actions.model.Completion`.

=========  ===========================================  ============================
op         fields                                       verdicts
=========  ===========================================  ============================
validate   ``recommendations``: object or list          valid, rejected
apply      ``recommendations``, ``persist`` (bool)      verified, rejected, refused,
                                                        failed
rollback   ``id`` (int) or ``since`` (epoch seconds,    rolled_back, partly_rolled_back,
           finite, not in the future)                   not_restored,
                                                        nothing_to_roll_back, refused,
                                                        failed
status     —                                            ok
history    ``id`` (int), ``limit`` (int, 1..1000),      ok, not_found
           ``since`` (finite epoch seconds)
=========  ===========================================  ============================

``refused`` from ``apply`` or ``rollback`` means nothing was written: a rule of the
rollback, or the journal or the audit log cannot record (a full disk, rule
``storage``); ``failed`` means something was written and undone.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

DEFAULT_SOCKET = "/run/kassist/agent.sock"
#: The group whose members may talk to the agent besides root (SO_PEERCRED), by default.
DEFAULT_GROUP = "kassist"
#: The largest submission entry, newline included (bytes); larger closes the connection.
MAX_ENTRY = 64 * 1024
#: The deepest nesting of arrays and objects an entry may have.
MAX_DEPTH = 16

#: A changeset id: what SQLite's INTEGER holds.
ChangesetId = Annotated[StrictInt, Field(ge=-(2**63), lt=2**63)]
#: A time in seconds since the epoch: an integer or a finite number (no NaN, no Infinity).
Epoch = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class Submission(BaseModel):
    """What every submission carries: its op and the ``user_data`` echoed in its completion.

    ``user_data`` was checked by :func:`decode_entry` (a string of at most 128
    characters, or a 64-bit integer).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    op: str
    user_data: str | int


class Validate(Submission):
    """Validate recommendations and return the dry-run diff; nothing is written."""

    op: Literal["validate"]
    #: one recommendation or a list (the agent parses them strictly: actions.model)
    recommendations: Any = None


class Apply(Submission):
    """Validate, then apply all-or-nothing with read-back verify."""

    op: Literal["apply"]
    recommendations: Any = None
    #: also write the change to the sysctl.d file
    persist: StrictBool = False


class Rollback(Submission):
    """Roll back one changeset (``id``), or every one since a time (``since``)."""

    op: Literal["rollback"]
    id: ChangesetId | None = None
    since: Epoch | None = None


class Status(Submission):
    """What the agent manages, what was overridden, its journal's counts."""

    op: Literal["status"]


class History(Submission):
    """One changeset with its events (``id``), or the latest ones, newest first."""

    op: Literal["history"]
    id: ChangesetId | None = None
    #: how many changesets at most (clamped to 1..1000)
    limit: StrictInt = 50
    since: Epoch = 0.0

    @property
    def clamped_limit(self) -> int:
        """The limit within 1..1000."""
        return max(1, min(self.limit, 1000))


#: The ops and their fields (each model refuses any other field).
OPS: dict[str, type[Submission]] = {
    "validate": Validate,
    "apply": Apply,
    "rollback": Rollback,
    "status": Status,
    "history": History,
}

#: What a field must be, said plainly (pydantic's own words are not).
_FIELD_RULES = {
    "persist": "true or false",
    "id": "an integer (a changeset id)",
    "limit": "an integer",
    "since": "a finite number (seconds since the epoch)",
}


class Malformed(Exception):
    """An entry that is not a submission at all: the connection is closed after it."""


class BadSubmission(Exception):
    """A submission whose op or fields are wrong: answered ``malformed``, connection kept."""


def decode_entry(line: bytes) -> dict[str, Any]:
    """Decode one submission line and check its envelope.

    :raises Malformed: not UTF-8 JSON, not an object, or no usable ``user_data``.
    """
    try:
        # Strictly UTF-8: json.loads(bytes) would also take UTF-16, UTF-32 and a BOM.
        doc = json.loads(line.decode("utf-8"))
    except RecursionError:
        raise Malformed("JSON nested too deeply") from None
    except ValueError as exc:  # not UTF-8, not JSON, or an integer of > 4300 digits
        raise Malformed(f"not JSON ({str(exc)[:120]})") from None
    if not isinstance(doc, dict):
        raise Malformed("a submission must be a JSON object")
    user_data = doc.get("user_data")
    if isinstance(user_data, bool) or not isinstance(user_data, str | int):
        raise Malformed("user_data (a string or an integer) is required")
    if isinstance(user_data, str) and len(user_data) > 128:
        raise Malformed("user_data longer than 128 characters")
    if isinstance(user_data, int) and not -(2**63) <= user_data < 2**63:
        raise Malformed("user_data out of range (a 64-bit integer)")
    if _depth(doc) > MAX_DEPTH:
        raise Malformed(f"entry nested deeper than {MAX_DEPTH} levels")
    return doc


def parse_submission(doc: dict[str, Any]) -> Submission:
    """Check a decoded entry against its op's model.

    :raises BadSubmission: an unknown op, an unknown field, or a field of the wrong
        type, in one line.
    """
    op = doc.get("op")
    model = OPS.get(op) if isinstance(op, str) else None
    if model is None:
        raise BadSubmission(f"unknown op {op!r}; ops: {', '.join(OPS)}")
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "entry"
        if first["type"] == "extra_forbidden":
            raise BadSubmission(f"{op}: unknown field {field!r}") from None
        rule = _FIELD_RULES.get(field, "as the protocol says")
        raise BadSubmission(f"{op}: {field} must be {rule}") from None


def _depth(doc: object) -> int:
    # Iterative, so that no depth the decoder accepted can overflow the stack here.
    deepest = 0
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in node)
    return deepest


def encode(entry: dict[str, Any]) -> bytes:
    """Encode one completion (or submission) as a line."""
    return json.dumps(entry, separators=(",", ":"), default=str).encode() + b"\n"
