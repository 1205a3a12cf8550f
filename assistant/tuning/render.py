"""The tuning feature's renderer: a run as text, one line for it, and what it says of one key.

``kassist tune``, ``kassist ask``, the chat's ``tune`` and ``health`` tools all render a
:class:`~assistant.tuning.engine.TuneReport` here, so their figures agree. Text that came
from the kernel (evidence lines) is sanitised by whoever prints it.
"""

from __future__ import annotations

from collections.abc import Sequence

from assistant.tuning.engine import Finding, TuneReport
from assistant.tuning.scenarios import SCENARIOS, Scenario

#: The next steps a run's text ends with, for the command line.
CLI_NEXT = "explain one: kassist tune --explain ID;  dry run: kassist tune --submit"


def shown(value: int | list[int] | str) -> str:
    """Format a sysctl value as sysctl(8) prints it (a vector with spaces)."""
    return " ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def window_text(report: TuneReport) -> str:
    """Return what a run's counts cover: ``since boot`` or ``window 10 s`` (and where)."""
    window = "since boot" if report.window_s is None else f"window {report.window_s:.3g} s"
    where = f"; netns {report.netns}" if report.netns else ""
    where += f"; cgroup {report.cgroup}" if report.cgroup else ""
    return window + where


def headline(report: TuneReport) -> str:
    """Return one line for a run: how many findings and recommendations, over what."""
    if not report.findings:
        return f"no findings: nothing to tune ({window_text(report)})"
    n, r = len(report.findings), len(report.recommendations)
    return (
        f"{n} finding{'s' if n != 1 else ''}, {r} recommendation{'s' if r != 1 else ''} "
        f"({window_text(report)})"
    )


def finding_lines(f: Finding) -> list[str]:
    """Render one finding: its id and title, evidence, each proposal with its status."""
    lines = [f"[{f.id}] {f.title}"]
    lines += [f"  evidence: {e}" for e in f.evidence]
    for p in f.proposals:
        change = f"{p.key} {shown(p.current)} -> {shown(p.value)} ({p.direction})"
        if p.status == "recommended":
            lines.append(f"  recommend {change}  id {p.rec_id}")
        else:
            lines.append(f"  report    {change}  [{p.status}: {p.why}]")
    lines += [f"  note: {n}" for n in f.notes]
    return lines


def report_lines(report: TuneReport, next_steps: str = CLI_NEXT) -> list[str]:
    """Render a run: the headline, one block per finding, the model's proposals, next steps.

    :param next_steps: the last line when something is recommended (the chat gives its own).
    """
    lines = [headline(report)]
    if not report.findings:
        return lines
    for f in report.findings:
        lines += ["", *finding_lines(f)]
    for rec in report.recommendations:
        if rec.source != "rules":
            lines += [
                "",
                f"[{rec.id}] proposed by {rec.source}: {rec.target} -> {shown(rec.value)}",
            ]
    if report.window_s is None:
        lines += ["", "these counts are since boot: see whether they still rise with --interval 10"]
    if report.recommendations and next_steps:
        lines += ["", next_steps]
    return lines


def report_text(report: TuneReport) -> str:
    """Render a run as the command line prints it."""
    return "\n".join(report_lines(report))


def scenarios_of(key: str, scenarios: Sequence[Scenario] = SCENARIOS) -> list[Scenario]:
    """Return the scenarios of the table that may propose ``key``."""
    return [s for s in scenarios if key in s.keys]


def key_lines(report: TuneReport, key: str, current: object | None) -> list[str]:
    """Render what a run says about one key: the findings that propose it, or why none does.

    :param current: the key's value now (as read), or ``None`` when it cannot be read.
    """
    now = shown(current) if isinstance(current, int | list | str) else "?"
    lines = [f"{key} is {now} now ({window_text(report)})"]
    hits = [f for f in report.findings if any(p.key == key for p in f.proposals)]
    for f in hits:
        lines += ["", *finding_lines(f)]
    if hits:
        return lines
    watched = scenarios_of(key)
    if not watched:
        lines.append("no scenario of the tuning table proposes this key: tune never changes it")
        return lines
    lines.append("no finding proposes changing it: the evidence for it shows no problem")
    for s in watched:
        lines.append(f"  checked: {s.title} ({'; '.join(s.sources)})")
    return lines
