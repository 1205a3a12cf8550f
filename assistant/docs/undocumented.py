"""Sysctls of this machine that no documentation section describes, and draft stubs for them.

"Described" is decided as the kernel's ``scripts/check-sysctl-docs`` decides it: a
section title (or, in the networking files, a definition-list term) of the
documentation file for the sysctl's directory names it; or the knowledge base
links its ctl_table entry to a section filed elsewhere. Per-device keys
(``net.ipv4.conf.eth0.forwarding``) count once, as ``net.ipv4.conf.*.forwarding``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from assistant.docs.facts import HANDLER_TYPES, canonical, definition_of, device_free, proc_value
from assistant.knowledge import KnowledgeBase, SysctlDef
from probes.stats.sysctl import sysctl_relative


@dataclass(frozen=True)
class Undocumented:
    """One sysctl no documentation section describes.

    :param name: its canonical name; :param group: its directory (``net.core``).
    :param definition: its ctl_table entry in the knowledge base's sources, if any.
    """

    name: str
    group: str
    definition: SysctlDef | None


class Documentation:
    """Which (directory, file name) pairs the documentation describes."""

    def __init__(self, kb: KnowledgeBase) -> None:
        self.described: set[tuple[str, str]] = set()
        for directory, name, _hit in kb.documented_names():
            self.described.add((device_free(directory), name))

    def describes(self, name: str) -> bool:
        """Return whether a section describes the (canonical) dotted ``name``."""
        directory, _, leaf = sysctl_relative(name).rpartition("/")
        directory = device_free(directory)
        return (directory, leaf) in self.described


def undocumented(kb: KnowledgeBase, names: Iterable[str]) -> list[Undocumented]:
    """Return the names no documentation section describes, by group then name."""
    docs = Documentation(kb)
    found: dict[str, Undocumented] = {}
    for raw in names:
        name = canonical(raw)
        if name in found or docs.describes(name):
            continue
        definition = definition_of(kb, raw)
        if definition is not None and definition.doc is not None:
            continue  # described under another directory (see the builder's _doc_for)
        found[name] = Undocumented(name, name.rsplit(".", 1)[0], definition)
    return sorted(found.values(), key=lambda u: (u.group, u.name))


def draft_stub(item: Undocumented, kb: KnowledgeBase, release: str) -> str:
    """Return an rst stub for an undocumented sysctl, marked as a draft for a person to finish.

    Built only from its ``ctl_table`` entry and its value here; it is never upstream text.
    """
    leaf = item.name.rsplit(".", 1)[-1]
    lines = [
        leaf,
        "=" * len(leaf),
        "",
        f".. DRAFT by kassist for {item.name}: not upstream text. A person who knows the"
        " code must write what it does before this is submitted.",
        "",
    ]
    d = item.definition
    if d is None:
        lines.append(
            f"(No ctl_table entry of linux {kb.kernel_version} defines it; this machine runs"
            f" {release}, so look in that kernel's sources.)"
        )
    else:
        kind = HANDLER_TYPES.get(d.handler)
        lines.append(f"TODO: what {leaf} controls.")
        lines.append("")
        lines.append(f"Type: {kind[0] if kind else 'see ' + d.handler}.")
        if kind and kind[1]:
            lines.append(f"Unit: {kind[1]}.")
        if d.minimum is not None or d.maximum is not None:
            low = "-" if d.minimum is None else d.minimum
            high = "-" if d.maximum is None else d.maximum
            lines.append(f"Range: {low} to {high}.")
        if d.default is not None:
            lines.append(f"Default: {d.default}.")
        lines += [
            "",
            f".. source: {d.source}:{d.line} ({d.table}, {d.handler}), linux {kb.kernel_version}",
        ]
    value = proc_value(item.name.replace(".*.", ".default."))
    if value is not None:
        lines.append(f".. value on this machine ({release}): {value}")
    return "\n".join(lines) + "\n"
