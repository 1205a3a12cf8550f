"""Route a chat message to one tool and its arguments.

In order: a slash command (``/triage PATH``) always wins; then the deterministic cues
of :mod:`assistant.chat.cues`; the model is asked only when the cues are unsure, and its
choice (one of the tool names, under a grammar) is taken only where the cues admit it.
Below the confidence floor the chat asks instead of guessing (``clarify``).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from assistant.chat.cues import (
    CLARIFY,
    NEEDS_A_NAME,
    find_cues,
    mood,
    phrase_scores,
    route_by_cues,
)
from assistant.chat.tools import TOOL_NAMES
from assistant.llm.base import Backend

#: Below this confidence, cues alone do not decide.
CUE_FLOOR = 0.55
#: Below this, nothing decides: the chat asks.
ASK_FLOOR = 0.35
#: The most characters of a message handed to the router model.
ROUTER_MESSAGE_CHARS = 600
ROUTER_PROMPT = "chat_router"


@dataclass(frozen=True)
class Decision:
    """Where a message goes.

    :param action: a tool name, or ``clarify``.
    :param args: the tool's arguments.
    :param confidence: 0..1.
    :param via: ``slash``, ``cues``, ``model`` or ``floor``.
    :param alternatives: tools a clarifying question offers.
    """

    action: str
    args: dict[str, Any] = field(default_factory=dict)
    confidence: float = 1.0
    via: str = "cues"
    alternatives: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the decision as JSON-ready data."""
        return {
            "action": self.action,
            "args": self.args,
            "confidence": self.confidence,
            "via": self.via,
            "alternatives": list(self.alternatives),
        }


def _int(word: str) -> int | None:
    return int(word) if word.isdigit() else None


def _slash_probe(words: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {"name": words[0]} if words else {}
    if len(words) > 1 and _int(words[1].rstrip("s")) is not None:
        args["duration"] = int(words[1].rstrip("s"))
    return args


def _slash_apply(words: list[str]) -> dict[str, Any]:
    if len(words) >= 2:
        return {"target": words[0], "value": " ".join(words[1:]).lstrip("=").strip()}
    return {"id": words[0]} if words else {}


def _slash_logs(words: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for w in words:
        if w.isdigit():
            args["level"] = int(w)
        else:
            args["source"] = w
    return args


#: Slash command -> (tool, how its words become arguments).
SLASH: dict[str, tuple[str, Callable[[list[str]], dict[str, Any]]]] = {
    "triage": ("triage", lambda w: {"path": " ".join(w)} if w else {}),
    "dmesg": ("triage", lambda w: {}),
    "crashes": ("crashes", lambda w: {}),
    "crash": ("crash", lambda w: {"signature": w[0].lower()} if w else {}),
    "report": ("report", lambda w: {"target": " ".join(w)} if w else {}),
    "stats": ("stats", lambda w: {}),
    "probe": ("probe", _slash_probe),
    "tune": ("tune", lambda w: {"key": w[0]} if w else {}),
    "docs": ("docs", lambda w: {"key": w[0]} if w else {"key": "undocumented"}),
    "disks": ("disks", lambda w: {}),
    "status": ("agent_status", lambda w: {}),
    "agent_status": ("agent_status", lambda w: {}),
    "history": ("agent_history", lambda w: {}),
    "agent_history": ("agent_history", lambda w: {}),
    "apply": ("apply", _slash_apply),
    "rollback": ("rollback", lambda w: {"changeset": int(w[0])} if w and w[0].isdigit() else {}),
    "logs": ("logs", _slash_logs),
    "vmcore": ("vmcore", lambda w: {"path": " ".join(w)} if w else {}),
    "help": ("help", lambda w: {}),
    "ask": ("answer", lambda w: {}),
    "health": ("health", lambda w: {}),
    "top": ("top", lambda w: {"by": w[0]} if w else {}),
    "explain": ("explain", lambda w: {"id": w[0]} if w else {}),
    "why": ("explain", lambda w: {"id": w[0]} if w else {}),
}


def parse_slash(text: str) -> Decision | None:
    """Return the decision of a slash command, or ``None`` when the text is not one."""
    stripped = text.strip()
    if not stripped.startswith("/") or len(stripped) < 2 or not stripped[1].isalpha():
        return None
    try:
        words = shlex.split(stripped[1:])
    except ValueError:
        words = stripped[1:].split()
    spec = SLASH.get(words[0].lower()) if words else None
    if spec is None:
        return None
    tool, to_args = spec
    return Decision(tool, to_args(words[1:]), 1.0, "slash")


def model_choice(backend: Backend, text: str) -> str | None:
    """Ask the model (under the grammar of a tool-name enum) which tool a message wants.

    :return: the tool's name, or ``None`` when its answer stayed invalid.
    """
    from assistant.llm.errors import StructuredRefusal
    from assistant.llm.prompts import load_prompt
    from assistant.llm.structured import run_step

    prompt = load_prompt(ROUTER_PROMPT)
    try:
        step = run_step(
            backend,
            prompt,
            {"message": text[:ROUTER_MESSAGE_CHARS]},
            int(prompt.meta.get("max_tokens", 16)),
        )
    except StructuredRefusal:
        return None
    tool = getattr(step.value, "tool", None)
    return tool if isinstance(tool, str) and tool in TOOL_NAMES else None


#: Tools whose result is a proposed change: only an imperative message may reach them as one.
CHANGES = frozenset({"apply", "rollback"})


def route(text: str, probe_names: Iterable[str], backend: Backend | None = None) -> Decision:
    """Route one message.

    A change asked about in a question, a hypothetical or a negation ("what would happen
    if I set ...?", "do NOT set ...") keeps its tool but gets ``hypothetical``: the tool
    explains and dry-runs it and proposes nothing. A slash command is an imperative.

    :param probe_names: the eBPF probes the library has.
    :param backend: a model for what the cues leave open, or ``None``.
    """
    slash = parse_slash(text)
    if slash is not None:
        return slash
    decision = _route_words(text, probe_names, backend)
    if decision.action in CHANGES and mood(text) != "imperative":
        return replace(decision, args={**decision.args, "hypothetical": True})
    return decision


def is_request(text: str) -> bool:
    """Tell whether a message may ask for a change: a slash command, or an imperative.

    A question, a hypothetical or a negation never is, whoever picks the tool (the cues,
    the router's model, or a model calling tools natively).
    """
    return parse_slash(text) is not None or mood(text) == "imperative"


def _route_words(text: str, probe_names: Iterable[str], backend: Backend | None) -> Decision:
    names = list(probe_names)
    cue = route_by_cues(text, names)
    if cue.action != CLARIFY and cue.confidence >= CUE_FLOOR:
        return Decision(cue.action, cue.args, cue.confidence, "cues", cue.alternatives)
    if backend is not None:
        choice = model_choice(backend, text)
        admitted = _admitted(text, names, cue.action, cue.alternatives)
        if choice == "answer" and cue.action not in (CLARIFY, "answer"):
            choice = None  # plain talk does not overrule a tool some cue points at
        if choice is not None and choice in admitted:
            args = cue.args if choice == cue.action else {}
            return Decision(choice, args, max(cue.confidence, CUE_FLOOR), "model")
    if cue.action != CLARIFY and cue.confidence >= ASK_FLOOR:
        return Decision(cue.action, cue.args, cue.confidence, "cues", cue.alternatives)
    offered = tuple(t for t in (cue.action, *cue.alternatives) if t not in (CLARIFY, "answer"))
    if not offered:
        return Decision("answer", {}, cue.confidence, "floor")
    return Decision(CLARIFY, {}, cue.confidence, "floor", offered)


def _admitted(text: str, names: list[str], top: str, alternatives: tuple[str, ...]) -> set[str]:
    # The model may pick among the tools some phrase of the message points at, and plain
    # conversation; never a tool that needs a name the message does not hold.
    scores = phrase_scores(text)
    cues = find_cues(text, names)
    named = bool(cues.paths or cues.signatures)
    allowed = {t for t, s in scores.items() if s > 0 and (named or t not in NEEDS_A_NAME)}
    allowed |= {t for t in (top, *alternatives) if t in TOOL_NAMES}
    allowed.add("answer")
    return allowed
