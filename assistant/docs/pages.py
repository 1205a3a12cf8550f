"""Documentation pages built from facts: Markdown, reStructuredText (kernel.rst style), JSON.

Every paragraph ends with the source it was built from. Text quoted from the
kernel's documentation is quoted, never reworded; a paragraph kassist writes
itself from a ``ctl_table`` definition says so.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from assistant.docs.facts import SysctlFacts
from assistant.knowledge import DocHit
from assistant.sysctl_d import SYSCTL_CONF, SYSCTL_D_DIRS

#: The longest documentation text quoted on a page, characters.
MAX_QUOTE = 1500
#: What "no sysctl.d file sets it" was read from.
BOOT_SOURCES = (*SYSCTL_D_DIRS, SYSCTL_CONF)


@dataclass(frozen=True)
class ModelParagraph:
    """What the model wrote for a page, and whether it may be shown.

    :param text: the paragraph (cut at its last sentence), or ``""``.
    :param shown: the checker accepted it.
    :param notice: one line for a withheld paragraph (or why there is none).
    :param source: what it condenses (a ``Documentation/...#anchor`` citation).
    """

    text: str
    shown: bool
    notice: str = ""
    source: str = ""


def _bounds(facts: SysctlFacts) -> str:
    d = facts.definition
    if d is None:
        return ""
    low = "no lower bound" if d.minimum is None else f"minimum {d.minimum}"
    high = "no upper bound" if d.maximum is None else f"maximum {d.maximum}"
    if d.handler.endswith("minmax") or d.minimum is not None or d.maximum is not None:
        return f"{low}, {high}"
    return "no bounds checked by its handler"


def _source_cite(facts: SysctlFacts) -> str:
    d = facts.definition
    assert d is not None
    return f"{d.source}:{d.line} in linux {facts.kernel_version}"


def _quote(doc: DocHit) -> str:
    text = textwrap.dedent(doc.text.expandtabs(8)).strip()
    return text if len(text) <= MAX_QUOTE else text[:MAX_QUOTE].rsplit("\n", 1)[0] + "\n[...]"


def _version_note(facts: SysctlFacts) -> str | None:
    if facts.kernel_version is None:
        return None
    if facts.running_release.split(".")[:2] == facts.kernel_version.split(".")[:2]:
        return None
    return (
        f"The sources and documentation are linux {facts.kernel_version}'s; this machine runs "
        f"{facts.running_release}, whose definition may differ."
    )


#: The heading of the model's paragraph (shown only when the checker accepted it).
MODEL_HEADING = "In short (drafted by the local model, checked against the documentation)"


#: One part of a page: (heading, text, source).
Part = tuple[str, str, str]


def _kb(facts: SysctlFacts) -> str:
    return f"the knowledge base of linux {facts.kernel_version}"


def _what_it_does(facts: SysctlFacts) -> Part | None:
    if facts.doc is not None:
        return ("What it does", _quote(facts.doc), facts.doc.cite)
    if facts.kernel_version is None:
        return None
    return (
        "What it does",
        f"Not documented upstream: no section of linux {facts.kernel_version}'s documentation"
        f" describes {facts.name}.",
        _kb(facts),
    )


def _type_unit_bounds(facts: SysctlFacts) -> Part | None:
    d = facts.definition
    if d is None:
        if facts.kernel_version is None:
            return None
        return (
            "Type, unit and bounds",
            f"No ctl_table entry of linux {facts.kernel_version} defines {facts.name} at a path"
            " kassist resolves.",
            _kb(facts),
        )
    kind = facts.type_and_unit
    lines = [f"Handler `{d.handler}`" + (f": {kind[0]}" if kind else "") + "."]
    if kind and kind[1]:
        lines.append(f"Unit: {kind[1]}.")
    lines.append(f"Bounds: {_bounds(facts)}.")
    if d.default is not None:
        lines.append(f"Default: {d.default} (the constant its variable starts with).")
    lines.append(f"Table `{d.table}`, data `{d.data or '?'}`, mode {d.mode or '?'}.")
    return ("Type, unit and bounds", " ".join(lines), _source_cite(facts))


def _on_this_machine(facts: SysctlFacts) -> Part:
    source = f"{facts.proc_path} on this host"
    if facts.value is None:
        return ("On this machine", f"{facts.proc_path} does not exist or cannot be read.", source)
    where = " in the host's (initial) network namespace" if facts.namespaced else ""
    text = f"Value{where}: {facts.value}."
    if facts.namespaced:
        text += " Each network namespace has its own copy."
    return ("On this machine", text, source)


def _set_at_boot(facts: SysctlFacts) -> Part:
    if not facts.settings:
        return ("Set at boot by", "No sysctl.d file sets it.", ", ".join(BOOT_SOURCES))
    last = len(facts.settings) - 1
    lines = [
        f"{s.cite} sets {s.value}" + (" (applied last, so it wins)" if i == last else "")
        for i, s in enumerate(facts.settings)
    ]
    if facts.boot_value_holds is False:
        lines[-1] += f", but the value here is {facts.value}: it changed after boot"
    return ("Set at boot by", "; ".join(lines) + ".", facts.settings[-1].cite)


def _agent_rule(facts: SysctlFacts) -> Part:
    return ("The agent's rule", _rule_text(facts), facts.rule_source or "the agent's policy")


def _changed_by_kassist(facts: SysctlFacts) -> Part | None:
    if facts.changes is None:
        return None
    if not facts.changes:
        return (
            "Changed by kassist",
            "The agent's journal has no change to it.",
            "the agent's journal (kassist agent history)",
        )
    lines = [
        f"changeset {c.changeset} ({c.state}, {_utc(c.created)}): {c.old} -> {c.new}"
        for c in facts.changes
    ]
    return ("Changed by kassist", "; ".join(lines) + ".", facts.changes[0].cite)


def _kernel_version(facts: SysctlFacts) -> Part | None:
    note = _version_note(facts)
    if note is None:
        return None
    return ("Kernel version", note, f"uname -r; {_kb(facts)}")


#: The page's sections in order; each returns its part, or None when it has nothing to say.
SECTIONS: tuple[Callable[[SysctlFacts], Part | None], ...] = (
    _what_it_does,
    _type_unit_bounds,
    _on_this_machine,
    _set_at_boot,
    _agent_rule,
    _changed_by_kassist,
    _kernel_version,
)


def paragraphs(facts: SysctlFacts, model: ModelParagraph | None = None) -> list[Part]:
    """Return the page's parts as (heading, text, source), in order.

    :param model: the model's paragraph; shown first when the checker accepted it.
    """
    parts: list[Part] = []
    if model is not None and model.shown:
        parts.append((MODEL_HEADING, model.text, f"the local model, condensing {model.source}"))
    parts.extend(part for section in SECTIONS if (part := section(facts)) is not None)
    return parts


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _rule_text(facts: SysctlFacts) -> str:
    rule = facts.rule
    if rule is None:
        return (
            f"kassist's agent will not change {facts.name}: "
            + (facts.rule_source or "no rule")
            + "."
        )
    if rule.get("denied"):
        return f"Denied by the policy (pattern {rule.get('by')}): the agent never changes it."
    text = f"Type {rule.get('type')}"
    if rule.get("min") is not None or rule.get("max") is not None:
        text += f", range {rule.get('min')} .. {rule.get('max')}"
    if rule.get("values"):
        text += ", values " + ", ".join(map(str, rule["values"]))  # type: ignore[call-overload]
    text += f", risk {rule.get('risk')}"
    if rule.get("baseline"):
        text += ", a security-baseline key (never lowered without an explicit override)"
    return text + "."


def markdown(facts: SysctlFacts, model: ModelParagraph | None = None) -> str:
    """Return the page as Markdown."""
    out = [f"# {facts.name}", ""]
    for heading, text, source in paragraphs(facts, model):
        out += [f"## {heading}", ""]
        body = "\n".join("> " + line if heading == "What it does" and facts.doc else line
                         for line in text.splitlines())  # fmt: skip
        out += [body, "", f"*Source: {source}*", ""]
    return "\n".join(out).rstrip() + "\n"


def rst(facts: SysctlFacts, model: ModelParagraph | None = None) -> str:
    """Return the page in the style of ``Documentation/admin-guide/sysctl/kernel.rst``."""
    leaf = facts.name.rsplit(".", 1)[-1]
    out = [leaf, "=" * len(leaf), ""]
    for heading, text, source in paragraphs(facts, model):
        if heading == "What it does" and facts.doc:
            out += [text, ""]
        else:
            out += [f"{heading}: " + text, ""]
        out += [f".. source: {source}", ""]
    return "\n".join(out).rstrip() + "\n"


def as_json(facts: SysctlFacts, model: ModelParagraph | None = None) -> str:
    """Return the facts and the page's parts as JSON (the model's paragraph, shown or not)."""
    doc: dict[str, Any] = asdict(facts)
    doc["proc_path"] = facts.proc_path
    doc["doc_cite"] = facts.doc.cite if facts.doc else None
    doc["paragraphs"] = [
        {"heading": h, "text": t, "source": s} for h, t, s in paragraphs(facts, model)
    ]
    doc["model_paragraph"] = asdict(model) if model is not None else None
    return json.dumps(doc, indent=2, default=str)


RENDERERS: dict[str, Callable[[SysctlFacts, ModelParagraph | None], str]] = {
    "markdown": markdown,
    "rst": rst,
    "json": as_json,
}
