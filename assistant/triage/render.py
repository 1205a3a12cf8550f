"""Triage results and stored crashes as a person reads them: one renderer for every front end.

``kassist triage``, ``kassist crashes list|show`` print the ``*_text`` forms; the chat and
``kassist ask`` show the ``*_markdown`` forms. Every piece of text that came from a log
(titles, task names, raw reports) is attacker-influenced: the text forms pass it through
the one sanitiser (:func:`actions.text.printable`), so that no escape sequence (OSC 52
writes the clipboard, OSC 0 retitles the terminal) reaches a terminal; the Markdown forms
keep it inside code spans and fences it cannot close (:mod:`assistant.markdown`).

Repeats are grouped by signature: a thousand identical oopses, or 300,000 segfault lines,
are one line with a count.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from actions.text import printable, printable_lines
from assistant.markdown import md_code_block, md_inline
from assistant.triage.model import Crash, CrashTime, Event, TaskInfo, TriageResult
from assistant.triage.similar import Evidence
from assistant.triage.store_model import Hit, StoredCrash

#: Line spans listed for a group of repeated crashes at most; the rest are counted.
MAX_SPANS = 3


def when(ts: float | None) -> str:
    """Format Unix seconds as local time, ``?`` when unknown."""
    return "?" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def task_text(task: TaskInfo) -> str:
    """Describe a task with what the report tells of it: ``comm pid N on CPU M``.

    >>> task_text(TaskInfo("kworker/0:1", 12, None))
    'kworker/0:1 pid 12'
    >>> task_text(TaskInfo())
    'unknown task'
    """
    if task.comm is None:
        return "unknown task"
    parts = [task.comm]
    if task.pid is not None:
        parts.append(f"pid {task.pid}")
    if task.cpu is not None:
        parts.append(f"on CPU {task.cpu}")
    return " ".join(parts)


def crash_time_text(t: CrashTime) -> str:
    """Describe when the kernel crashed: its wall time and printk stamp, what is known.

    >>> crash_time_text(CrashTime(uptime=12.5))
    'at 12.500000 s after boot'
    """
    parts = []
    if t.wall is not None:
        parts.append(f"{when(t.wall)} ({t.clock})" if t.clock else when(t.wall))
    if t.uptime is not None:
        parts.append(f"at {t.uptime:.6f} s after boot")
    return ", ".join(parts) or "?"


@dataclass
class _Group:
    first: Crash
    spans: list[tuple[int, int]] = field(default_factory=list)


def _groups(crashes: Iterable[Crash]) -> list[_Group]:
    groups: dict[str, _Group] = {}
    for c in crashes:
        g = groups.setdefault(c.signature, _Group(c))
        g.spans.append((c.start_line, c.end_line))
    return list(groups.values())


def _spans(spans: list[tuple[int, int]]) -> str:
    shown = ", ".join(f"{a}-{b}" for a, b in spans[:MAX_SPANS])
    more = len(spans) - MAX_SPANS
    return f"lines {shown}" + (f" and {more} more" if more > 0 else "")


def _event_groups(events: Iterable[Event]) -> list[tuple[Event, int, int, int]]:
    # (first event, how many times, first line, last line) per signature.
    groups: dict[str, list[Event]] = {}
    for e in events:
        groups.setdefault(e.signature or e.title, []).append(e)
    out = []
    for same in groups.values():
        count = sum(int(e.details.get("count", 1)) for e in same)
        out.append((same[0], count, min(e.start_line for e in same), max(e.end_line for e in same)))
    return out


def _times(n: int) -> str:
    # How many times a signature came, when more than once.
    return f" ×{n}" if n > 1 else ""


def _flags(c: Crash) -> str:
    on = [f for f, set_ in (("corrupted", c.corrupted), ("panicked", c.panicked)) if set_]
    return f"  ({', '.join(on)})" if on else ""


def triage_text(result: TriageResult) -> str:
    """Return a triage result as terminal text: crashes and events grouped by signature."""
    n = len(result.crashes)
    groups = _groups(result.crashes)
    sigs = f" ({len(groups)} signature{'s' if len(groups) != 1 else ''})" if len(groups) < n else ""
    out = [
        f"{printable(result.source)}: {n} crash{'es' if n != 1 else ''}{sigs}"
        f" in {result.lines} lines"
    ]
    for g in groups:
        c = g.first
        out.append(f"  {printable(c.title)}  [{c.type}]{_times(len(g.spans))}{_flags(c)}")
        out.append(
            f"    {_spans(g.spans)} · frame {printable(c.frame or '?')}"
            f" · {printable(task_text(c.task))} · kernel {printable(c.kernel.release or '?')}"
            f" · sig {c.signature}"
        )
    out += [
        f"  event: {printable(e.title)}  [{e.type}]{_times(count)}  lines {first}-{last}"
        for e, count, first, last in _event_groups(result.events)
    ]
    return "\n".join(out)


def triage_markdown(result: TriageResult) -> str:
    """Return a triage result as Markdown (the chat's): grouped by signature, as the text."""
    n = len(result.crashes)
    out = [f"**{n} crash(es)** in {result.lines} lines of `{md_inline(result.source)}`"]
    out += [
        f"- `{md_inline(g.first.title)}` [{g.first.type}]{_times(len(g.spans))}"
        f" {_spans(g.spans)}, task `{md_inline(task_text(g.first.task))}`,"
        f" sig `{g.first.signature}`"
        for g in _groups(result.crashes)
    ]
    out += [
        f"- event: `{md_inline(e.title)}` [{e.type}]{_times(count)} lines {first}-{last}"
        for e, count, first, last in _event_groups(result.events)
    ]
    return "\n".join(out)


def crashes_text(rows: list[StoredCrash], fleet: bool = False) -> str:
    """Return the crash store's signatures as terminal text, one line each.

    :param fleet: say how many hosts saw each (the fleet store).
    """
    if not rows:
        return "no crashes recorded"
    out = []
    for r in rows:
        hosts = f"  {len(r.hosts)} host(s)" if fleet else ""
        crashed = f"  crashed {when(r.last_crashed)}" if r.last_crashed is not None else ""
        out.append(
            f"{r.signature}  {r.count:>4}x  stored {when(r.last_seen)}{crashed}{hosts}"
            f"  [{r.type}]  {printable(r.title)}"
        )
    return "\n".join(out)


def crashes_markdown(rows: list[StoredCrash], limit: int = 20) -> str:
    """Return the crash store's newest signatures as a Markdown table (the chat's)."""
    if not rows:
        return "No crashes in the store."
    out = [
        "| signature | count | crashed | stored | title |",
        "|---|---|---|---|---|",
    ]
    for r in rows[:limit]:
        out.append(
            f"| `{r.signature[:12]}` | {r.count} | {when(r.last_crashed)} | {when(r.last_seen)}"
            f" | `{md_inline(r.title)}` |"
        )
    return "\n".join(out)


def _hit_head(h: Hit) -> str:
    crashed = crash_time_text(CrashTime(uptime=h.uptime, wall=h.crashed_at))
    flag = " (corrupted)" if h.corrupted else ""
    sender = f" from {printable(h.sender)}" if h.sender else ""
    return (
        f"--- crashed {crashed} · stored {when(h.seen)} · {printable(h.host)}{sender}"
        f" {printable(h.release or '?')} {printable(h.source)}{flag}"
    )


def crash_text(summary: StoredCrash, hits: list[Hit], reports: int = 1) -> str:
    """Return one stored signature as terminal text: where and when it was seen, and its
    newest ``reports`` raw reports (sanitised: a log's escapes are shown, never sent)."""
    s = summary
    out = [
        f"{printable(s.title)}  [{s.type}]",
        f"  signature   {s.signature}",
        f"  crashed     first {when(s.first_crashed)}, last {when(s.last_crashed)}",
        f"  stored      {s.count} time(s), first {when(s.first_seen)}, last {when(s.last_seen)}",
        f"  hosts       {printable(', '.join(s.hosts) or '?')}",
        f"  releases    {printable(', '.join(s.releases) or '?')}",
    ]
    if s.frame or s.guilty_file:
        out.append(
            f"  frame       {printable(s.frame or '?')}  file {printable(s.guilty_file or '?')}"
        )
    if s.same_as:
        out.append(f"  probably the same bug as {s.same_as} ({printable(s.same_as_why or '')})")
    for h in hits[:reports]:
        out += ["", _hit_head(h), printable_lines(h.report)]
    return "\n".join(out)


def crash_markdown(summary: StoredCrash, hits: list[Hit]) -> str:
    """Return one stored signature as Markdown (the chat's), with its newest report."""
    s = summary
    text = (
        f"**`{md_inline(s.title)}`** [{s.type}] sig `{s.signature}`\n\n"
        f"- crashed: first {when(s.first_crashed)}, last {when(s.last_crashed)}\n"
        f"- stored {s.count} time(s), first {when(s.first_seen)}, last {when(s.last_seen)}\n"
        f"- hosts: {md_inline(', '.join(s.hosts) or '?')};"
        f" releases: {md_inline(', '.join(s.releases) or '?')}\n"
        f"- frame `{md_inline(s.frame or '?')}`, file `{md_inline(s.guilty_file or '?')}`\n"
    )
    if s.same_as:
        text += f"- probably the same bug as `{s.same_as}` ({md_inline(s.same_as_why or '')})\n"
    return text + "\n" + (md_code_block(hits[0].report[:4000]) if hits else "")


def similar_text(summary: StoredCrash, linked: list[tuple[StoredCrash, Evidence]]) -> str:
    """Return ``crashes similar``'s answer for a terminal: the signature, then each one
    probably the same bug, with its evidence."""
    out = [f"{summary.signature}  {printable(summary.title)}  [{summary.type}]"]
    if not linked:
        return "\n".join([*out, "  no other signature is probably the same bug"])
    out.append("  probably the same bug as:")
    for row, ev in linked:
        why = ev.text() or "grouped by average linkage"
        out.append(f"  {row.signature}  {printable(row.title)}  [{row.type}]  {row.count}x"
                   f"  hosts {printable(', '.join(row.hosts) or '?')}")  # fmt: skip
        out.append(f"      {printable(why)}")
    return "\n".join(out)


def similar_markdown(summary: StoredCrash, linked: list[tuple[StoredCrash, Evidence]]) -> str:
    """Return ``crashes similar``'s answer as Markdown (the chat's)."""
    head = f"**`{md_inline(summary.title)}`** sig `{summary.signature}`\n\n"
    if not linked:
        return head + "No other signature is probably the same bug.\n"
    rows = [
        f"- `{row.signature}` `{md_inline(row.title)}` ({row.count}x): "
        f"{md_inline(ev.text() or 'grouped by average linkage')}"
        for row, ev in linked
    ]
    return head + "Probably the same bug as:\n\n" + "\n".join(rows) + "\n"
