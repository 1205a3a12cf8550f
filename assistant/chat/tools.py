"""The chat's tools: one adapter each, from an argument model to a core call to a renderer.

Each tool is a row of :data:`TOOLS`: its name, what it is for (the router's and a bigger
model's description), its argument model, and the adapter. An adapter parses nothing and
formats no figure of its own: it calls the feature's core function and the feature's own
renderer (``probes.stats.summary``, ``probes.stats.tasks``, ``assistant.tuning.render``,
``assistant.disks.render``, ...), the ones ``kassist`` itself prints, so that the chat's
figures are the command line's. A tool returns a :class:`ToolResult` (Markdown for a
person, JSON-ready data for a script). Text from the kernel, logs or drives goes into
code blocks, sanitised. A tool that would change the system (``apply``, ``rollback``)
never does: it returns a :class:`Proposal`, which only
:meth:`assistant.chat.session.ChatSession.approve` carries out, through the agent, after
a person said yes; and it proposes nothing to a question, a hypothetical or a negation.

The same rows become LangChain tools (:func:`langchain_tools`), so that a model that can
call tools natively (``bind_tools``) sees exactly these.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from actions.protocol import DEFAULT_SOCKET
from actions.text import printable_lines
from assistant.chat.memory import Memory, Proposal
from assistant.errors import InputError, KassistError, NotAvailable
from assistant.markdown import md_code_block
from assistant.triage.render import crash_markdown, crashes_markdown, triage_markdown, when
from probes.errors import ProbeError

#: The most records the ``logs`` tool shows.
LOG_RECORDS = 40
#: The longest eBPF probe run the chat starts, in seconds.
MAX_PROBE_SECONDS = 60
#: The default eBPF probe run, in seconds.
PROBE_SECONDS = 5
#: Windows (of a second each) the chat's ``disks`` tool watches the devices for.
DISK_WINDOWS = 5
#: Seconds the ``top`` tool measures CPU and I/O over.
TOP_SECONDS = 1.0
#: Changeset states a rollback can undo ("the last change" is the newest of these).
UNDOABLE = ("verified", "applied")
#: Where the ring buffer is, in the words people use for it.
RING_BUFFER_NAMES = frozenset({"kmsg", "/dev/kmsg", "dmesg", "ring buffer", "kernel log"})


class Cancelled(KassistError):
    """The person cancelled the turn (a tool stops at its next check)."""

    def __init__(self) -> None:
        super().__init__("cancelled", "nothing was changed")


class Args(BaseModel):
    """A tool's arguments: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class NoArgs(Args):
    """No arguments."""


class PathArgs(Args):
    """A file or directory."""

    path: str = Field(min_length=1, max_length=4096, description="a log file, dir or vmcore")


class TriageArgs(Args):
    """A log to triage; none (or ``/dev/kmsg``): the kernel's ring buffer, read now.

    (An empty string, not ``None``, is "none": a tool-call grammar then needs no optional
    4096-character string, which llama.cpp's grammar parser refuses to spell out.)
    """

    path: str = Field("", max_length=4096, description="a log or dir; empty: the kernel log")


class SignatureArgs(Args):
    """A crash signature or a prefix of one (hex)."""

    signature: str = Field(pattern=r"^[0-9a-f]{4,40}$", description="crash signature (hex)")


class ReportArgs(Args):
    """What to draft a bug report for (empty: the crash the conversation talked about last)."""

    target: str = Field("", max_length=4096, description="a signature or a log; empty: the last")


class ProbeArgs(Args):
    """An eBPF probe and how long to run it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$", description="probe name")
    duration: int = Field(PROBE_SECONDS, ge=1, le=MAX_PROBE_SECONDS, description="seconds")


class DocsArgs(Args):
    """A sysctl to document, or ``undocumented`` (none: the key talked about last)."""

    key: str | None = Field(
        None, min_length=1, max_length=200, description="sysctl name or 'undocumented'"
    )


class TuneArgs(Args):
    """Tune the whole machine, or say what the evidence says of one key."""

    key: str | None = Field(None, min_length=1, max_length=200, description="a sysctl name")


class ExplainArgs(Args):
    """A tuning finding or recommendation to explain (none: the last one shown)."""

    id: str | None = Field(None, min_length=1, max_length=120, description="finding or rec id")


class ApplyArgs(Args):
    """A recommendation to apply: by id, or a key and a value.

    :param hypothetical: the message asked about it (a question, "what if", "don't"):
        explain it and dry-run it, propose nothing.
    """

    id: str | None = Field(None, max_length=120, description="recommendation id")
    target: str | None = Field(None, max_length=200, description="sysctl name")
    value: str | None = Field(None, max_length=200, description="the new value")
    hypothetical: bool = Field(False, description="only explain and dry-run, never propose")


class RollbackArgs(Args):
    """A changeset to roll back (none: the newest one that can be undone)."""

    changeset: int | None = Field(None, ge=1, description="changeset id")
    hypothetical: bool = Field(False, description="only show what it would undo")


class LogsArgs(Args):
    """Which kernel log records to show."""

    source: str = Field("kmsg", pattern=r"^(?:kmsg|journal(?::-?\d+)?|pstore)$")
    level: int | None = Field(None, ge=0, le=7, description="at most this printk level")


class TopArgs(Args):
    """What to rank processes by, and how many to show."""

    by: Literal["cpu", "memory", "io"] = Field("cpu", description="cpu, memory or io")
    limit: int = Field(10, ge=1, le=100, description="processes shown")


class AnswerArgs(Args):
    """Plain conversation."""


@dataclass
class ToolResult:
    """What a tool found.

    :param text: Markdown for a person (untrusted text already inside code spans/blocks).
    :param data: the same as JSON-ready data.
    :param proposals: changes proposed, waiting for approval.
    :param evidence: text the model may draw on when it explains the result.
    """

    text: str
    data: dict[str, Any] = field(default_factory=dict)
    proposals: list[Proposal] = field(default_factory=list)
    evidence: str = ""


@dataclass(frozen=True)
class Context:
    """Where the tools find things, what the conversation remembers, and the turn's controls.

    :param store: the crash store's path (``None``: the default).
    :param socket: the agent's socket.
    :param memory: the conversation's referents (one per session, never shared).
    :param progress: told what a slow tool is doing, one line at a time.
    :param cancel: set by the front end to stop the turn; tools check it while they wait.
    :param imperative: the message may ask for a change (``is_request``); when false,
        ``apply`` and ``rollback`` explain and dry-run, and propose nothing.
    """

    store: str | None = None
    socket: str = DEFAULT_SOCKET
    memory: Memory = field(default_factory=Memory)
    progress: Callable[[str], None] | None = None
    cancel: threading.Event | None = None
    imperative: bool = True

    def say(self, line: str) -> None:
        """Report progress (nothing without a listener)."""
        if self.progress is not None:
            self.progress(line)

    def cancelled(self) -> bool:
        """Tell whether the person asked to stop."""
        return self.cancel is not None and self.cancel.is_set()

    def sleep(self, seconds: float) -> None:
        """Wait, checking for cancellation every 0.1 s.

        :raises Cancelled: the person cancelled meanwhile.
        """
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self.cancelled():
                raise Cancelled()
            time.sleep(min(left, 0.1))
        if self.cancelled():
            raise Cancelled()


@dataclass(frozen=True)
class Tool:
    """One row of the tools table."""

    name: str
    summary: str
    args: type[Args]
    run: Callable[[Any, Context], ToolResult]
    changes: bool = False


# -- helpers shared by the adapters -----------------------------------------------------------


def block(lines: Iterable[str]) -> str:
    """Return a renderer's lines as a sanitised code block (no escape reaches a terminal)."""
    return md_code_block(printable_lines("\n".join(lines)))


def _open_store(ctx: Context) -> Any:
    from pathlib import Path

    from assistant.triage.store import CrashStore

    return CrashStore(Path(ctx.store) if ctx.store else None)


def _store_path(ctx: Context) -> Any:
    from pathlib import Path

    from assistant.triage.store import default_path

    return Path(ctx.store) if ctx.store else default_path()


def _remember_crash(ctx: Context, signature: str | None, source: str) -> None:
    if signature:
        ctx.memory.crash, ctx.memory.crash_source = signature, source


# -- the adapters -----------------------------------------------------------------------------


def _help(args: NoArgs, ctx: Context) -> ToolResult:
    return ToolResult(help_text(), {"tools": list(TOOL_NAMES)})


def help_text() -> str:
    """Return the chat's help: what to ask, and every slash command."""
    rows = [f"- `/{t.name}`: {t.summary}" for t in TOOLS if t.name not in ("answer",)]
    examples = [
        "how is the system doing?",
        "what is using the most CPU?",
        "any kernel crashes recently?",
        "should I raise somaxconn?",
        "roll back the last change",
    ]
    return (
        "Ask in plain words, for example:\n\n"
        + "\n".join(f"- *{e}*" for e in examples)
        + "\n\nor use a command:\n\n"
        + "\n".join(rows)
        + "\n\nChanges are only proposed: nothing is applied until you approve it, and the"
        " kernel agent validates it first."
    )


def _health(args: NoArgs, ctx: Context) -> ToolResult:
    from assistant.chat.health import check_health, headline

    pending = [p.summary for p in ctx.memory.pending.values()]
    health = check_health(ctx.socket, pending, ctx.say, ctx.sleep)
    text = headline(health) + "\n\n" + block(health.lines)
    data = {"verdict": health.verdict, "reasons": health.reasons, **health.data}
    return ToolResult(text, data, evidence="\n".join(health.lines))


def _top(args: TopArgs, ctx: Context) -> ToolResult:
    from probes.stats.summary import user_hz
    from probes.stats.tasks import read_tasks, task_usage, top_lines, top_tasks

    ctx.say(f"measuring every process for {TOP_SECONDS:g} s")
    start, before = time.monotonic(), read_tasks()
    ctx.sleep(TOP_SECONDS)
    seconds = time.monotonic() - start
    rows = top_tasks(task_usage(before, read_tasks(), seconds, user_hz()), args.by, args.limit)
    lines = top_lines(rows, args.by, seconds)
    return ToolResult(block(lines), {"by": args.by, "tasks": [r.to_dict() for r in rows]})


def _kernel_log_result(ctx: Context) -> ToolResult:
    from assistant.chat.kernel_log import detail_lines, headline, read_kernel_log

    ctx.say("reading the kernel's ring buffer (/dev/kmsg)")
    log = read_kernel_log()
    crashes = log.result.crashes
    _remember_crash(ctx, crashes[0].signature if crashes else None, "kmsg")
    text = block([headline(log), *detail_lines(log)])
    data = {"source": "/dev/kmsg", "records": log.records, **log.result.to_dict()}
    return ToolResult(text, data, evidence="\n".join(c.title for c in crashes))


def _triage(args: TriageArgs, ctx: Context) -> ToolResult:
    from assistant.triage import triage_path

    if not args.path.strip() or args.path.strip().lower() in RING_BUFFER_NAMES:
        return _kernel_log_result(ctx)
    result = triage_path(os.path.expanduser(args.path))
    _remember_crash(ctx, result.crashes[0].signature if result.crashes else None, args.path)
    return ToolResult(
        triage_markdown(result),
        result.to_dict(),
        evidence="\n".join(c.title for c in result.crashes),
    )


def _crashes(args: NoArgs, ctx: Context) -> ToolResult:
    from assistant.triage.store import open_readonly_check
    from probes.stats.read import boot_time

    path = _store_path(ctx)
    rows = []
    if open_readonly_check(path):
        with _open_store(ctx) as db:
            rows = db.signatures()
    booted = boot_time() or 0.0
    this_boot = [r for r in rows if r.last_seen >= booted]
    data: dict[str, Any] = {"store": str(path), "crashes": [_row(r) for r in rows]}
    if rows:
        head = f"Crash store `{path}`: {len(rows)} signature(s), {len(this_boot)} seen this boot."
        parts = [head, crashes_markdown(rows)]
        _remember_crash(ctx, rows[0].signature, "store")
    else:
        parts = [f"The crash store `{path}` is empty (`kassist watch` fills it)."]
    if not this_boot:
        # The store knows nothing of this boot (empty, or watch is not running): read the
        # kernel's own log as it is now, and say so.
        try:
            log = _kernel_log_result(ctx)
        except ProbeError as exc:
            parts.append(f"The kernel log could not be read: {exc.one_line()}")
        else:
            parts += [
                "Nothing in the store is from this boot, so I read the kernel log now:",
                log.text,
            ]
            data["kernel_log"] = log.data
    text = "\n\n".join(parts)
    return ToolResult(text, data, evidence=text)


def _row(r: Any) -> dict[str, Any]:
    return {
        "signature": r.signature,
        "title": r.title,
        "type": r.type,
        "count": r.count,
        "first_seen": r.first_seen,
        "last_seen": r.last_seen,
        "hosts": r.hosts,
    }


def _crash(args: SignatureArgs, ctx: Context) -> ToolResult:
    with _open_store(ctx) as db:
        crash, hits = db.get(args.signature)
    _remember_crash(ctx, crash.signature, "store")
    data = {"signature": crash.signature, "title": crash.title, "type": crash.type}
    return ToolResult(crash_markdown(crash, hits), data,
                      evidence=hits[0].report if hits else crash.title)  # fmt: skip


def _crash_for_report(target: str | None, ctx: Context) -> tuple[Any, str]:
    # The crash a report is asked for: a log path, a stored signature, or the last one shown.
    from assistant.triage import triage_lines, triage_path

    mem = ctx.memory
    if target is None:
        if mem.crash is None:
            raise InputError("which crash?", "name a signature or a log, or triage one first")
        target = mem.crash_source if mem.crash_source not in (None, "store") else mem.crash
    assert target is not None
    if target == "kmsg":
        from assistant.chat.kernel_log import read_kernel_log

        result = read_kernel_log().result
    elif os.path.exists(os.path.expanduser(target)):
        result = triage_path(os.path.expanduser(target))
    else:
        with _open_store(ctx) as db:
            _crash, hits = db.get(target)
        result = triage_lines(hits[0].report.splitlines() if hits else [], target)
    wanted = [c for c in result.crashes if mem.crash and c.signature == mem.crash]
    crashes = wanted or result.crashes
    if not crashes:
        raise InputError(f"no crash found in {target} to report", "triage a log that holds one")
    return crashes[0], target


def _report(args: ReportArgs, ctx: Context) -> ToolResult:
    from assistant.drafters.bug_report import draft_report

    crash, where = _crash_for_report(args.target or None, ctx)
    _remember_crash(ctx, crash.signature, where)
    drafted = draft_report(crash, None, 0)
    return ToolResult(
        drafted.markdown, {"markdown": drafted.markdown, "signature": crash.signature}
    )


def _stats(args: NoArgs, ctx: Context) -> ToolResult:
    from probes.stats import take_snapshot
    from probes.stats.summary import snapshot_summary, summary_lines

    summary = snapshot_summary(take_snapshot(sysctls=False, kconfig=False))
    lines = summary_lines(summary)
    return ToolResult(block(lines), {"summary": summary.to_dict()}, evidence="\n".join(lines))


def _probe(args: ProbeArgs, ctx: Context) -> ToolResult:
    from probes.bpf import find_probe, render_result, run_probe, unavailable_reason

    why = unavailable_reason(find_probe(args.name))
    if why is not None:
        raise NotAvailable(f"{args.name}: not available: {why}", "see `kassist probe list`")
    ctx.say(f"compiling and attaching {args.name}")
    result = run_probe(
        args.name,
        float(args.duration),
        on_attach=lambda: ctx.say(f"tracing with {args.name} for {args.duration} s"),
        say=ctx.say,
        stop=ctx.cancelled,
    )
    if ctx.cancelled():
        raise Cancelled()
    text = render_result(result)
    data = {"probe": args.name, "duration": args.duration}
    return ToolResult(block(text.splitlines()), data, evidence=text)


def _agent_status(args: NoArgs, ctx: Context) -> ToolResult:
    from actions.client import try_status
    from actions.text import printable

    reading = try_status(ctx.socket)
    status = reading.status
    if status is None:
        return ToolResult(f"The agent: {printable(reading.line())}.", {"reachable": False})
    lines = [f"agent {reading.line()} on {ctx.socket}"]
    lines += [f"  [{m.changeset}] {m.target} = {m.value}" for m in status.managed[:20]]
    lines += [
        f"  [{o.changeset}] {o.target} overridden (kassist set {o.set})"
        for o in status.overridden[:20]
    ]
    return ToolResult(block(lines), {"reachable": True, "status": _status_dict(status)})


def _status_dict(status: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(status)


def _change_lines(cs: Any, undo: bool = False) -> list[str]:
    # One line per key: old -> new (or, for a rollback, what it would put back).
    rows = []
    for c in cs.changes:
        frm, to = (c.new, c.old) if undo else (c.old, c.new)
        rows.append(f"  {c.target}  {frm} -> {to}  [{c.state}]")
    return rows


def _agent_history(args: NoArgs, ctx: Context) -> ToolResult:
    from actions.client import try_history
    from actions.text import printable

    reading = try_history(ctx.socket, limit=20)
    if reading.changesets is None:
        return ToolResult(
            f"The agent is not reachable: {printable(reading.error)}", {"reachable": False}
        )
    if not reading.changesets:
        return ToolResult("The agent has applied nothing yet.", {"history": []})
    lines = []
    for cs in reading.changesets:
        lines.append(f"changeset {cs.id}: {cs.state}, {when(cs.created)}")
        lines += _change_lines(cs)
    ctx.memory.changeset = reading.changesets[0].id
    return ToolResult(block(lines), {"history": [cs.to_dict() for cs in reading.changesets]})


def _recommendation(args: ApplyArgs, ctx: Context) -> dict[str, Any]:
    # The recommendation an apply names: a key and a value, an id of this conversation's
    # last tune run, or the last recommendation shown.
    if args.target and args.value is not None:
        ctx.memory.key = args.target
        return {
            "id": f"chat-{int(time.time())}",
            "kind": "sysctl",
            "target": args.target,
            "value": args.value,
            "rationale": "asked for in the chat by the operator",
            "evidence": ["operator request in kassist chat"],
            "source": "rules",
        }
    ident = args.id or ctx.memory.recommendation
    if ident is None:
        raise InputError("apply what?", "name a key and a value, or run `/tune` and apply an id")
    found = ctx.memory.tune.get(ident)
    if found is None:
        known = ", ".join(sorted(ctx.memory.tune)) or "none: run `/tune` first"
        raise InputError(f"no recommendation {ident!r} in this conversation", f"ids: {known}")
    ctx.memory.recommendation, ctx.memory.key = ident, str(found.get("target"))
    return found


def _what_if(rec: dict[str, Any], ctx: Context) -> ToolResult:
    # A question about a change: what the key is and does, and the agent's dry run.
    from actions.client import try_validate
    from assistant.docs.facts import proc_value

    key, value = str(rec["target"]), str(rec["value"])
    lines = [f"{key} is {proc_value(key) or '?'} now; you asked about {value}."]
    lines += _doc_lines(key)
    dry = try_validate(ctx.socket, [rec])
    if dry.completion is None:
        lines.append(f"no dry run: the agent is {dry.error}")
    elif dry.completion.ok:
        cs = dry.completion.changeset
        lines.append("the agent's dry run: valid (nothing was written)")
        lines += _change_lines(cs) if cs is not None else []
    else:
        lines.append("the agent's dry run: it would refuse this")
        lines += [f"  {e.message}" for e in dry.completion.errors]
    head = (
        "**Nothing was applied**: you asked about a change. To make it, say "
        f"*set {key} to {value}* (or `/apply {key} {value}`) and approve it."
    )
    data = {"hypothetical": True, "recommendation": rec, "dry_run": dry.to_dict()}
    return ToolResult(head + "\n\n" + block(lines), data, evidence="\n".join(lines))


def _doc_lines(key: str) -> list[str]:
    # The first paragraph of the key's documentation, when the knowledge base has it.
    from assistant.knowledge import try_open

    kb = try_open()
    found = kb.sysctl(key) if kb is not None else None
    doc = getattr(found, "doc", None)
    if doc is None:
        return ["(no documentation found for it: `kassist kb build` adds the kernel's docs)"]
    first = " ".join(str(doc.text).split())[:400]
    return [f"what it does ({doc.cite}):", f"  {first}"]


def _apply(args: ApplyArgs, ctx: Context) -> ToolResult:
    from actions.client import try_status

    rec = _recommendation(args, ctx)
    if args.hypothetical or not ctx.imperative:
        return _what_if(rec, ctx)
    reading = try_status(ctx.socket)
    if not reading.reachable:
        return ToolResult(
            f"Not proposed: the kernel agent is {reading.line()}. Only the agent applies "
            "changes: start it with `kassist agent serve` (as root), then ask again.",
            {"proposed": [], "agent": reading.error},
        )
    summary = f"set {rec['target']} to {rec['value']}"
    if rec["id"] in ctx.memory.tune:
        summary = f"apply {rec['id']} ({rec['target']} -> {rec['value']})"
    return ToolResult(
        f"Proposed: {summary}. Nothing changes until you approve it; the agent validates it first.",
        {"proposed": [rec]},
        [Proposal("apply", summary, (rec,))],
    )


def _undoable(changesets: Iterable[Any]) -> Any:
    return next((cs for cs in changesets if cs.state in UNDOABLE), None)


def _rollback(args: RollbackArgs, ctx: Context) -> ToolResult:
    from actions.client import try_history
    from actions.text import printable

    wanted = args.changeset or None
    reading = try_history(ctx.socket, limit=50, cs_id=wanted)
    if reading.changesets is None:
        return ToolResult(
            f"Nothing to roll back from here: the kernel agent is not reachable "
            f"({printable(reading.error)}).",
            {"proposed": []},
        )
    cs = reading.changesets[0] if wanted and reading.changesets else None
    if wanted is None:
        cs = _undoable(reading.changesets)
    if cs is None:
        which = f"no changeset {wanted}" if wanted else "no change that can be rolled back"
        return ToolResult(f"The agent's journal has {which}.", {"proposed": []})
    ctx.memory.changeset = cs.id
    plan = [
        f"changeset {cs.id} ({cs.state}, {when(cs.created)}) would put back:",
        *_change_lines(cs, undo=True),
    ]
    keys = ", ".join(f"{c.target} {c.new} -> {c.old}" for c in cs.changes)
    if cs.state not in UNDOABLE:
        return ToolResult(
            f"Changeset {cs.id} is {cs.state}: nothing to roll back.\n\n" + block(plan),
            {"proposed": []},
        )
    if args.hypothetical or not ctx.imperative:
        head = (
            f"**Nothing was changed**: you asked about it. To roll it back, say *roll back "
            f"changeset {cs.id}* (or `/rollback {cs.id}`) and approve it."
        )
        return ToolResult(head + "\n\n" + block(plan), {"hypothetical": True, "changeset": cs.id})
    summary = f"roll back changeset {cs.id} ({keys})"
    return ToolResult(
        f"Proposed: {printable(summary)}. Nothing changes until you approve it.\n\n" + block(plan),
        {"proposed": {"rollback": cs.id}},
        [Proposal("rollback", summary, changeset=cs.id)],
    )


def _run_tune(ctx: Context) -> Any:
    from actions.client import try_status
    from assistant.tuning import tune_run

    ctx.say("running the tuning scenarios over the counters since boot")
    report, _obs = tune_run(try_status(ctx.socket).status)
    ctx.memory.tune = {r.id: r.model_dump() for r in report.recommendations}
    ctx.memory.tune_report = report
    if report.recommendations:
        ctx.memory.recommendation = report.recommendations[0].id
    return report


def resolve_key(name: str) -> str:
    """Return a sysctl's full name from its leaf (``somaxconn`` → ``net.core.somaxconn``).

    A name with dots is returned as it is; a leaf is looked up among the keys tuning knows.

    :raises InputError: the leaf names no known key, or several.
    """
    from assistant.tuning import KNOWN_KEYS

    if "." in name:
        return name
    found = [k for k in KNOWN_KEYS if k.rsplit(".", 1)[-1] == name]
    if len(found) != 1:
        raise InputError(
            f"which sysctl is {name!r}?", "give its full name, e.g. net.core.somaxconn"
        )
    return found[0]


#: The last line of a tune run in the chat, when something is recommended.
CHAT_NEXT = "apply one: /apply ID;  explain one: /explain ID"


def _tune(args: TuneArgs, ctx: Context) -> ToolResult:
    from assistant.docs.facts import proc_value
    from assistant.tuning.render import key_lines, report_lines

    report = _run_tune(ctx)
    if args.key:
        key = resolve_key(args.key)
        ctx.memory.key = key
        lines = key_lines(report, key, proc_value(key))
    else:
        lines = report_lines(report, CHAT_NEXT)
    return ToolResult(block(lines), report.to_dict(), evidence="\n".join(lines))


def _explain(args: ExplainArgs, ctx: Context) -> ToolResult:
    from assistant.tuning.engine import find_finding
    from assistant.tuning.explain import explain

    report = ctx.memory.tune_report
    fresh = report is None
    if report is None:
        report = _run_tune(ctx)
    ident = args.id or ctx.memory.recommendation
    finding = find_finding(report.to_dict(), ident) if ident else None
    if finding is None and args.id is None and report.findings:
        finding = report.findings[0]
    if finding is None:
        what = f"no finding {ident!r}" if args.id else "no finding to explain"
        return ToolResult(
            f"The last tune run has {what}.", {"findings": [f.id for f in report.findings]}
        )
    ex = explain(finding)
    note = " (from a tune run just now)" if fresh else ""
    text = f"Why tune recommends this{note}:\n\n" + block(ex.text.splitlines() + ex.notices)
    return ToolResult(text, ex.to_dict(), evidence=ex.text)


def _logs(args: LogsArgs, ctx: Context) -> ToolResult:
    from collections import deque

    from probes.logs import iter_records

    kept: deque[str] = deque(maxlen=LOG_RECORDS)
    for rec in iter_records(args.source):
        if args.level is not None and (rec.level is None or rec.level > args.level):
            continue
        kept.append(rec.as_dmesg_line())
    if not kept:
        return ToolResult(f"No matching records in {args.source}.", {"records": []})
    return ToolResult(block(kept), {"records": list(kept)}, evidence="\n".join(kept))


def _vmcore(args: PathArgs, ctx: Context) -> ToolResult:
    from assistant.rootcause.explain import explain_target, explanation_markdown
    from assistant.vmcore import analyse_target, open_target, triage_analysis

    ctx.say(f"opening {args.path} with drgn")
    target = open_target(os.path.expanduser(args.path))
    result = triage_analysis(analyse_target(target, with_locals=False))
    _remember_crash(ctx, result.crashes[0].signature if result.crashes else None, args.path)
    text = triage_markdown(result)
    first = result.crashes[0] if result.crashes else None  # rootcause: explain the first
    explained = explain_target(target, first, first.report if first else None)
    text += "\n\n" + explanation_markdown(explained)
    data = result.to_dict() | {"explanation": explained.to_dict()}
    evidence = "\n".join([*(c.title for c in result.crashes), *(f.text for f in explained.facts)])
    return ToolResult(text, data, evidence=evidence)


def _docs(args: DocsArgs, ctx: Context) -> ToolResult:
    from assistant.docs import facts as facts_mod
    from assistant.docs import pages
    from assistant.knowledge import try_open
    from assistant.knowledge.base import running_release

    key = args.key or ctx.memory.key
    if key is None:
        raise InputError("which sysctl?", "e.g. `/docs vm.swappiness`, or `/docs undocumented`")
    kb = try_open()
    if key == "undocumented":
        return _undocumented(kb)
    key = resolve_key(key) if "." not in key else key
    ctx.memory.key = key
    changes, _why = facts_mod.agent_changes(ctx.socket)
    facts = facts_mod.gather(kb, key, running_release(), changes)
    page = pages.markdown(facts)
    note = "" if kb is not None else "\n\n(no knowledge base: `kassist kb build` adds the docs)"
    return ToolResult(page + note, {"key": key}, evidence=page)


def _undocumented(kb: Any) -> ToolResult:
    if kb is None:
        raise NotAvailable("no knowledge base", "build it with `kassist kb build`")
    from assistant.docs.undocumented import undocumented
    from probes.stats import sysctl_names

    items = undocumented(kb, sysctl_names())
    rows = [f"- `{u.name}`" for u in items[:40]]
    more = (
        f"\n\n(and {len(items) - 40} more: `kassist docs undocumented`)" if len(items) > 40 else ""
    )
    head = (
        f"**{len(items)} sysctls** of this machine that no section of linux"
        f" {kb.kernel_version}'s documentation describes:"
    )
    return ToolResult("\n".join([head, *rows]) + more, {"undocumented": [u.name for u in items]})


def _disks(args: NoArgs, ctx: Context) -> ToolResult:
    from assistant.disks.monitor import DiskMonitor
    from assistant.disks.render import device_lines, device_rows, finding_lines, run_line

    monitor = DiskMonitor(bpf=False)
    findings: list[Any] = []
    try:
        for n in range(1, DISK_WINDOWS + 1):
            ctx.say(f"watching the drives: window {n} of {DISK_WINDOWS}")
            ctx.sleep(1.0)
            findings = monitor.sample()
        lines = [line for f in findings for line in finding_lines(f)]
        lines += device_lines(device_rows(monitor))
        lines.append(run_line(monitor, findings, DISK_WINDOWS, 1.0))
    finally:
        monitor.close()
    tip = "(`kassist disks --interval 10 --count 6` watches longer)"
    data = {"findings": [f.to_dict() for f in findings]}
    return ToolResult(block(lines) + "\n\n" + tip, data, evidence="\n".join(lines))


def _answer(args: AnswerArgs, ctx: Context) -> ToolResult:
    return ToolResult("", {})


#: The tools, in the order the router lists them.
TOOLS: tuple[Tool, ...] = (
    Tool("help", "what I can do, and every command", NoArgs, _help),
    Tool("health", "a verdict on the whole system with its evidence", NoArgs, _health),
    Tool("triage", "find the crashes in a log (none: the kernel log now)", TriageArgs, _triage),
    Tool("crashes", "crashes in the store, and in the kernel log since boot", NoArgs, _crashes),
    Tool("crash", "show one stored crash by its signature", SignatureArgs, _crash),
    Tool("report", "draft a bug report for a crash (the last one by default)", ReportArgs, _report),
    Tool("stats", "load, memory, pressure (PSI) and sockets now", NoArgs, _stats),
    Tool("top", "the processes using the most CPU, memory or I/O", TopArgs, _top),
    Tool("probe", "run an eBPF probe for some seconds", ProbeArgs, _probe),
    Tool("tune", "find problems and recommend sysctl changes (or judge one key)", TuneArgs, _tune),
    Tool("explain", "explain a tuning finding or recommendation", ExplainArgs, _explain),
    Tool("docs", "document a sysctl, or list undocumented ones", DocsArgs, _docs),
    Tool("disks", "find failing or fail-slow drives", NoArgs, _disks),
    Tool("agent_status", "the kernel agent's state and managed keys", NoArgs, _agent_status),
    Tool("agent_history", "the changesets the agent applied", NoArgs, _agent_history),
    Tool("apply", "propose applying a recommendation (needs approval)", ApplyArgs, _apply, True),
    Tool("rollback", "propose undoing a changeset (needs approval)", RollbackArgs, _rollback, True),
    Tool("logs", "show kernel log records (kmsg, journal, pstore)", LogsArgs, _logs),
    Tool("vmcore", "analyse a vmcore with drgn", PathArgs, _vmcore),
    Tool("answer", "answer in plain words (kernel knowledge)", AnswerArgs, _answer),
)  # fmt: skip
TOOL_NAMES: tuple[str, ...] = tuple(t.name for t in TOOLS)
_BY_NAME = {t.name: t for t in TOOLS}


def get_tool(name: str) -> Tool:
    """Return the tool called ``name``.

    :raises InputError: there is none.
    """
    tool = _BY_NAME.get(name)
    if tool is None:
        raise InputError(f"no tool called {name!r}", f"tools: {', '.join(TOOL_NAMES)}")
    return tool


def _argument_error(name: str, exc: Any) -> InputError:
    # One line a person can act on, not pydantic's text ("path: Field required").
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "arguments"
    if first["type"] == "missing":
        return InputError(f"{name} needs {where}", f"see `/help` for /{name}'s arguments")
    return InputError(f"{name}: {where}: {first['msg']}", "check the arguments")


def run_tool(name: str, args: dict[str, Any], ctx: Context) -> ToolResult:
    """Validate ``args`` against the tool's model and run it.

    :raises InputError: the arguments do not fit the tool.
    :raises KassistError: the tool failed in a way a person can act on.
    """
    from pydantic import ValidationError

    tool = get_tool(name)
    try:
        parsed = tool.args.model_validate(args)
    except ValidationError as exc:
        raise _argument_error(name, exc) from None
    try:
        return tool.run(parsed, ctx)
    except ProbeError as exc:
        raise InputError(exc.message, exc.hint) from None


def iter_tools() -> Iterator[Tool]:
    """Yield the tools in table order."""
    yield from TOOLS


def langchain_tools(ctx: Context) -> list[Any]:
    """Return the tools as LangChain ``StructuredTool`` objects over the same functions.

    A tool that changes the system still only proposes: its LangChain form returns the
    proposal's summary, and nothing is applied.
    """
    from langchain_core.tools import StructuredTool

    def bind(tool: Tool) -> Callable[..., str]:
        def call(**kwargs: Any) -> str:
            return run_tool(tool.name, kwargs, ctx).text

        return call

    return [
        StructuredTool.from_function(
            func=bind(t), name=t.name, description=t.summary, args_schema=t.args
        )
        for t in TOOLS
    ]


__all__ = [
    "TOOLS",
    "TOOL_NAMES",
    "Cancelled",
    "Context",
    "Proposal",
    "ToolResult",
    "block",
    "get_tool",
    "help_text",
    "run_tool",
]
