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
``busy``. Entries are UTF-8 JSON objects nested at most :data:`MAX_DEPTH` deep.
Completions are typed on both sides: :class:`actions.model.Completion`.

=========  ===========================================  ============================
op         fields                                       verdicts
=========  ===========================================  ============================
validate   ``recommendations``: object or list          valid, rejected
apply      ``recommendations``, ``persist`` (bool)      verified, rejected, failed
rollback   ``id`` (int) or ``since`` (epoch seconds)    rolled_back, partly_rolled_back,
                                                        not_restored, refused, failed
status     —                                            ok
history    ``id`` (int), ``limit`` (int), ``since``     ok, not_found
=========  ===========================================  ============================
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_SOCKET = "/run/kassist/agent.sock"
#: The largest submission entry, newline included (bytes); larger closes the connection.
MAX_ENTRY = 64 * 1024

#: The fields each op accepts besides ``op`` and ``user_data``.
OPS: dict[str, frozenset[str]] = {
    "validate": frozenset({"recommendations"}),
    "apply": frozenset({"recommendations", "persist"}),
    "rollback": frozenset({"id", "since"}),
    "status": frozenset(),
    "history": frozenset({"id", "limit", "since"}),
}


class Malformed(Exception):
    """An entry that is not a submission at all: the connection is closed after it."""


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


#: The deepest nesting of arrays and objects an entry may have.
MAX_DEPTH = 16


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
