"""The host note (``kassist docs host``): what boot configuration sets and whether it holds,
and every sysctl whose value differs from the kernel's default, with who set it.

A sysctl.d file is credited with a value only when it is the assignment that wins at
boot (systemd-sysctl's order, :mod:`assistant.sysctl_d`) and the value here is the one
it sets; every other difference between boot configuration and the live value is a
drift, and a drift of a security-baseline key (the agent's floors: ``fs.protected_*``,
``kernel.kptr_restrict``, ...) is flagged. Building the note is pure: the caller reads
the files, the values and the journal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from assistant.docs.facts import Change
from assistant.knowledge import SysctlDef
from assistant.sysctl_d import SYSCTL_CONF, SYSCTL_D_DIRS, Setting, same_value


@dataclass(frozen=True)
class Drift:
    """A key boot configuration sets to something else than its value here.

    :param live: the value here (``None``: this machine has no such sysctl).
    :param security: a security-baseline key.
    """

    key: str
    setting: Setting
    live: str | None
    security: bool

    def line(self) -> str:
        """Return the note's bullet for it."""
        flag = "**security-relevant** " if self.security else ""
        here = f"the value here is {self.live}" if self.live is not None else "no such sysctl here"
        return (
            f"- {flag}`{self.key}`: boot configuration sets {self.setting.value}"
            f" ({self.setting.cite}); {here}"
        )


def drifts(
    boot: Mapping[str, Setting],
    live: Callable[[str], str | None],
    security: Callable[[str], bool],
) -> tuple[list[Drift], int]:
    """Compare what boot configuration sets with the values here.

    :param boot: key → the assignment that wins (:func:`assistant.sysctl_d.effective`).
    :param live: a key's value here, or ``None``.
    :return: the drifts (security-relevant first, then by key), and how many keys hold.
    """
    found: list[Drift] = []
    held = 0
    for key, setting in boot.items():
        value = live(key)
        if value is not None and same_value(setting.value, value):
            held += 1
        else:
            found.append(Drift(key, setting, value, security(key)))
    found.sort(key=lambda d: (not d.security, d.key))
    return found, held


def who_set(
    name: str,
    value: str,
    boot: Mapping[str, Setting],
    changes: Mapping[str, list[Change]],
) -> str:
    """Say who set a sysctl to ``value``: a kassist changeset, the boot file, or nobody known.

    A boot file is named only when it is the assignment that wins and sets this value.
    """
    changed = changes.get(name, [])
    if changed:
        return f"set by kassist changeset {changed[0].changeset} ({changed[0].state})"
    setting = boot.get(name)
    if setting is None:
        return "set by nobody known (no sysctl.d file sets it)"
    if same_value(setting.value, value):
        return f"set by {setting.cite}"
    return f"not what boot configuration sets ({setting.value}, {setting.cite}): changed after boot"


def note(
    release: str,
    kernel_version: str,
    boot: Mapping[str, Setting],
    definitions: Iterable[SysctlDef],
    live: Callable[[str], str | None],
    security: Callable[[str], bool],
    changes: Mapping[str, list[Change]],
    show_all: bool = False,
) -> str:
    """Return the host note as Markdown.

    :param definitions: the knowledge base's ctl_table entries (for the defaults).
    :param show_all: also list keys that differ from their default with no known setter.
    """
    out = [f"# Host note: {release}", ""]
    found, held = drifts(boot, live, security)
    out += [
        "## Boot configuration",
        "",
        f"{len(boot)} sysctls set by sysctl.d files (the assignment that wins in"
        f" systemd-sysctl's order): {held} hold their value, {len(found)} do not.",
        "",
        *(d.line() for d in found),
        *([""] if found else []),
        f"*Source: {', '.join((*SYSCTL_D_DIRS, SYSCTL_CONF))}; /proc/sys on this host*",
        "",
        "## Values that differ from the kernel's defaults",
        "",
        "Sysctls whose value differs from the constant their ctl_table variable starts with"
        f" in linux {kernel_version} (keys without such a constant are not compared).",
        "",
        f"*Source: the knowledge base of linux {kernel_version}; /proc/sys on this host*",
        "",
    ]
    shown = 0
    for definition in definitions:
        if definition.default is None or "*" in definition.name:
            continue
        value = live(definition.name)
        if value is None or value == definition.default:
            continue
        if definition.name not in boot and not changes.get(definition.name) and not show_all:
            continue
        who = who_set(definition.name, value, boot, changes)
        doc = definition.doc.cite if definition.doc else "not documented upstream"
        out += [
            f"### {definition.name}",
            "",
            f"Value {value}, default {definition.default}; {who}.",
            "",
            f"*Source: /proc/sys; {definition.source}:{definition.line}; {doc}*",
            "",
        ]
        shown += 1
    if shown == 0:
        out.append(
            "No sysctl set by a sysctl.d file differs from its default (--all shows the rest)."
        )
    return "\n".join(out).rstrip() + "\n"
