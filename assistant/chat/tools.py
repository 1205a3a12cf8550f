"""The chat's tools: one typed function each over a feature of the core.

Each tool is a row of :data:`TOOLS`: its name, what it is for (the router's and a bigger
model's description), its argument model, and the function. A tool returns a
:class:`ToolResult` (Markdown for a person, JSON-ready data for a script). A tool that
would change the system (``apply``, ``rollback``) never does: it returns a
:class:`Proposal`, which only :meth:`assistant.chat.session.ChatSession.approve` carries
out, through the agent, after a person said yes.

The same rows become LangChain tools (:func:`langchain_tools`), so that a model that can
call tools natively (``bind_tools``) sees exactly these.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from assistant.errors import InputError, KassistError, NotAvailable
from probes.errors import ProbeError

#: The most records the ``logs`` tool shows.
LOG_RECORDS = 40
#: The longest eBPF probe run the chat starts, in seconds.
MAX_PROBE_SECONDS = 60
#: The default eBPF probe run, in seconds.
PROBE_SECONDS = 5


class Args(BaseModel):
    """A tool's arguments: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class NoArgs(Args):
    """No arguments."""


class PathArgs(Args):
    """A file or directory."""

    path: str = Field(min_length=1, max_length=4096, description="a log file, dir or vmcore")


class SignatureArgs(Args):
    """A crash signature or a prefix of one (hex)."""

    signature: str = Field(pattern=r"^[0-9a-f]{4,40}$", description="crash signature (hex)")


class ReportArgs(Args):
    """What to draft a bug report for."""

    target: str = Field(min_length=1, max_length=4096, description="a signature or a log path")


class ProbeArgs(Args):
    """An eBPF probe and how long to run it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,40}$", description="probe name")
    duration: int = Field(PROBE_SECONDS, ge=1, le=MAX_PROBE_SECONDS, description="seconds")


class DocsArgs(Args):
    """A sysctl to document, or ``undocumented``."""

    key: str = Field(min_length=1, max_length=200, description="sysctl name or 'undocumented'")


class ApplyArgs(Args):
    """A recommendation to apply: by id, or a key and a value."""

    id: str | None = Field(None, max_length=120, description="recommendation id")
    target: str | None = Field(None, max_length=200, description="sysctl name")
    value: str | None = Field(None, max_length=200, description="the new value")


class RollbackArgs(Args):
    """A changeset to roll back (the newest when absent)."""

    changeset: int | None = Field(None, ge=1, description="changeset id")


class LogsArgs(Args):
    """Which kernel log records to show."""

    source: str = Field("kmsg", pattern=r"^(?:kmsg|journal(?::-?\d+)?|pstore)$")
    level: int | None = Field(None, ge=0, le=7, description="at most this printk level")


class AnswerArgs(Args):
    """Plain conversation."""


@dataclass(frozen=True)
class Proposal:
    """A change a tool proposes; nothing happens until a person approves it.

    :param op: ``apply`` or ``rollback``.
    :param recommendations: for ``apply``: DESIGN.md Recommendation objects.
    :param changeset: for ``rollback``: the changeset id (``None``: the newest).
    :param summary: one line for a person.
    """

    op: str
    summary: str
    recommendations: tuple[dict[str, Any], ...] = ()
    changeset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the proposal as JSON-ready data."""
        return {
            "op": self.op,
            "summary": self.summary,
            "recommendations": list(self.recommendations),
            "changeset": self.changeset,
        }


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
    """Where the tools find things (tests point these at temporary ones).

    :param store: the crash store's path (``None``: the default).
    :param socket: the agent's socket.
    """

    store: str | None = None
    socket: str = "/run/kassist/agent.sock"


@dataclass(frozen=True)
class Tool:
    """One row of the tools table."""

    name: str
    summary: str
    args: type[Args]
    run: Callable[[Any, Context], ToolResult]
    changes: bool = False


# -- the functions -------------------------------------------------------------------------


def _code(text: str) -> str:
    # Untrusted text (log lines, titles) goes into a fenced block that it cannot close.
    fence = "````" if "```" in text else "```"
    return f"{fence}text\n{text}\n{fence}"


def _triage(args: PathArgs, ctx: Context) -> ToolResult:
    from assistant.triage import triage_path

    result = triage_path(os.path.expanduser(args.path))
    rows = [
        f"- `{c.title}` [{c.type}] lines {c.start_line}-{c.end_line}, sig `{c.signature}`"
        for c in result.crashes
    ]
    rows += [f"- event: `{e.title}` [{e.type}]" for e in result.events]
    head = f"**{len(result.crashes)} crash(es)** in {result.lines} lines of `{args.path}`"
    return ToolResult(
        "\n".join([head, *rows]),
        result.to_dict(),
        evidence="\n".join(c.title for c in result.crashes),
    )


def _open_store(ctx: Context) -> Any:
    from pathlib import Path

    from assistant.triage.store import CrashStore

    return CrashStore(Path(ctx.store) if ctx.store else None)


def _crashes(args: NoArgs, ctx: Context) -> ToolResult:
    with _open_store(ctx) as db:
        rows = db.signatures()
    if not rows:
        return ToolResult("No crashes in the store.", {"crashes": []})
    lines = ["| signature | count | last seen | title |", "|---|---|---|---|"]
    for r in rows[:20]:
        seen = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.last_seen))
        title = r.title.replace("|", "\\|").replace("`", "'")
        lines.append(f"| `{r.signature[:12]}` | {r.count} | {seen} | `{title}` |")
    data = {
        "crashes": [
            {
                "signature": r.signature,
                "title": r.title,
                "type": r.type,
                "count": r.count,
                "first_seen": r.first_seen,
                "last_seen": r.last_seen,
                "hosts": r.hosts,
            }
            for r in rows
        ]
    }
    return ToolResult("\n".join(lines), data, evidence="\n".join(r.title for r in rows[:20]))


def _crash(args: SignatureArgs, ctx: Context) -> ToolResult:
    with _open_store(ctx) as db:
        crash, hits = db.get(args.signature)
    first = time.strftime("%Y-%m-%d %H:%M", time.localtime(crash.first_seen))
    last = time.strftime("%Y-%m-%d %H:%M", time.localtime(crash.last_seen))
    text = (
        f"**`{crash.title}`** [{crash.type}] sig `{crash.signature}`\n\n"
        f"- seen {crash.count} time(s), first {first}, last {last}\n"
        f"- hosts: {', '.join(crash.hosts) or '?'}; releases: {', '.join(crash.releases) or '?'}\n"
        f"- frame `{crash.frame or '?'}`, file `{crash.guilty_file or '?'}`\n\n"
        + (_code(hits[0].report[:4000]) if hits else "")
    )
    data = {"signature": crash.signature, "title": crash.title, "type": crash.type}
    return ToolResult(text, data, evidence=hits[0].report if hits else crash.title)


def _report(args: ReportArgs, ctx: Context) -> ToolResult:
    from assistant.drafters.bug_report import draft_report
    from assistant.triage import triage_lines, triage_path

    target = os.path.expanduser(args.target)
    if os.path.exists(target):
        result = triage_path(target)
    else:
        with _open_store(ctx) as db:
            _crash, hits = db.get(args.target)
        result = triage_lines(hits[0].report.splitlines() if hits else [], args.target)
    if not result.crashes:
        return ToolResult(f"No crash found in `{args.target}` to report.")
    drafted = draft_report(result.crashes[0], None, 0)
    return ToolResult(drafted.markdown, {"markdown": drafted.markdown})


def _stats(args: NoArgs, ctx: Context) -> ToolResult:
    from probes.stats import take_snapshot

    snap = take_snapshot()
    proc = snap.proc
    load = proc.get("loadavg", {})
    mem = proc.get("meminfo", {})
    lines = []
    if load:
        lines.append(
            f"- load: {load.get('load1')} {load.get('load5')} {load.get('load15')}"
            f" ({os.cpu_count()} CPUs)"
        )
    if mem:
        total = int(mem.get("MemTotal", 0)) // 1024
        avail = int(mem.get("MemAvailable", 0)) // 1024
        swap = (int(mem.get("SwapTotal", 0)) - int(mem.get("SwapFree", 0))) // 1024
        lines.append(f"- memory: {avail} MiB available of {total} MiB; swap used {swap} MiB")
    for res in ("cpu", "memory", "io"):
        psi = proc.get(f"pressure/{res}") or proc.get(f"psi.{res}") or {}
        some = psi.get("some", {}) if isinstance(psi, dict) else {}
        if some:
            lines.append(f"- {res} pressure: some avg10 {some.get('avg10')}%")
    tcp = proc.get("sockstat", {}).get("TCP", {}) if isinstance(proc.get("sockstat"), dict) else {}
    if tcp:
        lines.append(f"- TCP sockets: {tcp.get('inuse')} in use, {tcp.get('tw')} in TIME-WAIT")
    text = "\n".join(lines) or "No statistics could be read."
    data = {"proc": {k: proc[k] for k in ("loadavg", "meminfo") if k in proc}}
    return ToolResult(text, data, evidence=text)


def _probe(args: ProbeArgs, ctx: Context) -> ToolResult:
    from probes.bpf import find_probe, render_result, run_probe, unavailable_reason

    why = unavailable_reason(find_probe(args.name))
    if why is not None:
        raise NotAvailable(f"{args.name}: not available: {why}", "see `kassist probe list`")
    result = run_probe(args.name, float(args.duration))
    text = render_result(result)
    return ToolResult(_code(text), {"probe": args.name, "duration": args.duration}, evidence=text)


def _agent(ctx: Context) -> Any:
    from actions.client import AgentClient

    return AgentClient(ctx.socket, timeout=30.0)


def _agent_status(args: NoArgs, ctx: Context) -> ToolResult:
    from actions.errors import ActionError
    from actions.text import printable

    try:
        with _agent(ctx) as client:
            answer = client.status()
    except ActionError as exc:
        return ToolResult(f"The agent is not reachable: {exc}", {"reachable": False})
    status = answer.status
    if status is None:
        return ToolResult(f"The agent answered {answer.verdict}.", {"reachable": True})
    lines = [
        f"The agent answers on `{ctx.socket}` (pid {status.pid}); it manages "
        f"{len(status.managed)} key(s)."
    ]
    lines += [f"- `{printable(m.target)}` = `{printable(m.value)}`" for m in status.managed[:20]]
    lines += [
        f"- `{printable(o.target)}` overridden by someone else (kassist set `{printable(o.set)}`)"
        for o in status.overridden[:20]
    ]
    return ToolResult("\n".join(lines), {"reachable": True, "status": answer.to_wire(None)})


def _agent_history(args: NoArgs, ctx: Context) -> ToolResult:
    from actions.errors import ActionError
    from actions.text import printable

    try:
        with _agent(ctx) as client:
            answer = client.history(limit=20)
    except ActionError as exc:
        return ToolResult(f"The agent is not reachable: {exc}", {"reachable": False})
    items = answer.changesets or []
    if not items:
        return ToolResult("The agent has applied nothing yet.", {"history": []})
    lines = []
    for cs in items:
        keys = ", ".join(
            f"`{printable(c.target)}` {printable(c.old)} -> {printable(c.new)}" for c in cs.changes
        )
        lines.append(f"- changeset {cs.id}: {cs.state} {keys}")
    return ToolResult("\n".join(lines), {"history": [cs.to_dict() for cs in items]})


def _apply(args: ApplyArgs, ctx: Context) -> ToolResult:
    if args.target and args.value is not None:
        rec = {
            "id": f"chat-{int(time.time())}",
            "kind": "sysctl",
            "target": args.target,
            "value": args.value,
            "rationale": "asked for in the chat by the operator",
            "evidence": ["operator request in kassist chat"],
            "source": "rules",
        }
        summary = f"set {args.target} to {args.value}"
        return ToolResult(
            f"Proposed: {summary}. The agent validates it when you approve.",
            {"proposed": [rec]},
            [Proposal("apply", summary, (rec,))],
        )
    found = _pending_recommendation(args.id, ctx) if args.id else None
    if found is None:
        return ToolResult(
            f"No pending recommendation `{args.id or '?'}`: run `/tune` to see them.", {}
        )
    return ToolResult(
        f"Proposed: apply `{found['id']}` ({found['target']} -> {found['value']}).",
        {"proposed": [found]},
        [Proposal("apply", f"apply {found['id']}", (found,))],
    )


#: The recommendations of the last ``tune`` run in this process, by id (what ``apply`` takes).
_LAST_TUNE: dict[str, dict[str, Any]] = {}


def _pending_recommendation(rec_id: str, ctx: Context) -> dict[str, Any] | None:
    if rec_id not in _LAST_TUNE:
        _tune(NoArgs(), ctx)
    return _LAST_TUNE.get(rec_id)


def _agent_status_typed(ctx: Context) -> Any:
    # The agent's status (an actions.model.AgentStatus), or None when it is not reachable.
    from actions.errors import ActionError

    try:
        with _agent(ctx) as client:
            return client.status().status
    except (ActionError, OSError):
        return None


def _tune(args: NoArgs, ctx: Context) -> ToolResult:
    from actions.text import printable
    from assistant.tuning import analyse, observe
    from assistant.tuning.managed import managed_keys

    report = analyse(observe(None), managed_keys(_agent_status_typed(ctx)))
    _LAST_TUNE.clear()
    _LAST_TUNE.update({r.id: r.model_dump() for r in report.recommendations})
    if not report.findings:
        return ToolResult("No findings: nothing to tune (counts since boot).", report.to_dict())
    lines = [f"**{len(report.findings)} finding(s)**, counts since boot:"]
    for f in report.findings:
        lines.append(f"- **{printable(f.title)}**")
        lines += [f"  - evidence: `{printable(e)}`" for e in f.evidence[:4]]
        for p in f.proposals:
            change = f"`{p.key}` {p.current} -> {p.value} ({p.direction})"
            if p.status == "recommended":
                lines.append(f"  - recommend {change}: `/apply {p.rec_id}`")
            else:
                lines.append(
                    f"  - {change} not recommended: {printable(p.status)} ({printable(p.why)})"
                )
    return ToolResult("\n".join(lines), report.to_dict(), evidence="\n".join(lines))


def _rollback(args: RollbackArgs, ctx: Context) -> ToolResult:
    which = f"changeset {args.changeset}" if args.changeset else "the newest changeset"
    return ToolResult(
        f"Proposed: roll back {which}. The agent does it when you approve.",
        {"proposed": {"rollback": args.changeset}},
        [Proposal("rollback", f"roll back {which}", changeset=args.changeset)],
    )


def _logs(args: LogsArgs, ctx: Context) -> ToolResult:
    from collections import deque

    from probes.logs import iter_records

    kept: deque[str] = deque(maxlen=LOG_RECORDS)
    for rec in iter_records(args.source):
        if args.level is not None and (rec.level is None or rec.level > args.level):
            continue
        stamp = f"[{rec.ts_us / 1e6:12.6f}] " if rec.ts_us is not None else ""
        kept.append(f"{stamp}{rec.text}")
    if not kept:
        return ToolResult(f"No matching records in {args.source}.", {"records": []})
    text = "\n".join(kept)
    return ToolResult(_code(text), {"records": list(kept)}, evidence=text)


def _vmcore(args: PathArgs, ctx: Context) -> ToolResult:
    from assistant.rootcause.explain import explain_target, explanation_markdown
    from assistant.vmcore import analyse_target, open_target, triage_analysis

    target = open_target(os.path.expanduser(args.path))
    result = triage_analysis(analyse_target(target, with_locals=False))
    titles = [f"- `{c.title}` sig `{c.signature}`" for c in result.crashes]
    text = f"vmcore `{args.path}`: {len(result.crashes)} crash(es)\n" + "\n".join(titles)
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

    kb = try_open()
    if args.key == "undocumented":
        if kb is None:
            raise NotAvailable("no knowledge base", "build it with `kassist kb build`")
        from assistant.docs.undocumented import machine_sysctls, undocumented

        items = undocumented(kb, machine_sysctls())
        rows = [f"- `{u.name}`" for u in items[:40]]
        more = (
            f"\n\n(and {len(items) - 40} more: `kassist docs undocumented`)"
            if len(items) > 40
            else ""
        )
        head = (
            f"**{len(items)} sysctls** of this machine that no section of linux"
            f" {kb.kernel_version}'s documentation describes:"
        )
        return ToolResult(
            "\n".join([head, *rows]) + more, {"undocumented": [u.name for u in items]}
        )
    changes, _why = facts_mod.agent_changes()
    facts = facts_mod.gather(kb, args.key, running_release(), changes)
    page = pages.markdown(facts)
    note = "" if kb is not None else "\n\n(no knowledge base: `kassist kb build` adds the docs)"
    return ToolResult(page + note, {"key": args.key}, evidence=page)


#: Windows (of a second each) the chat's ``disks`` tool watches the devices for.
DISK_WINDOWS = 5


def _disks(args: NoArgs, ctx: Context) -> ToolResult:
    from actions.text import printable
    from assistant.disks.monitor import DiskMonitor

    monitor = DiskMonitor(bpf=False)
    findings: list[Any] = []
    try:
        for _ in range(DISK_WINDOWS):
            time.sleep(1.0)
            findings = monitor.sample()
    finally:
        monitor.close()
    groups = monitor.detector.groups()
    watched = sum(len(m) for m in groups.values())
    head = (
        f"{watched} device(s) in {len(groups)} peer group(s) watched for {DISK_WINDOWS} s "
        "(`kassist disks --interval 10 --count 6` watches longer)"
    )
    if not findings:
        return ToolResult(f"No fail-slow or failing drive found. {head}.", {"findings": []})
    lines = [f"**{len(findings)} finding(s)**; {head}:"]
    for f in findings:
        lines += [
            f"- `{printable(f.device)}`: {printable(f.summary)}",
            f"  - {printable(f.advice)}",
        ]
    data = {
        "findings": [{"device": f.device, "kind": f.kind, "summary": f.summary} for f in findings]
    }
    return ToolResult("\n".join(lines), data, evidence="\n".join(lines))


def _answer(args: AnswerArgs, ctx: Context) -> ToolResult:
    return ToolResult("", {})


#: The tools, in the order the router lists them.
TOOLS: tuple[Tool, ...] = (
    Tool("triage", "find and name the kernel crashes in a log file", PathArgs, _triage),
    Tool("crashes", "list the crashes in the crash store (new ones first)", NoArgs, _crashes),
    Tool("crash", "show one stored crash by its signature", SignatureArgs, _crash),
    Tool("report", "draft a bug report for a signature or a log file", ReportArgs, _report),
    Tool("stats", "summarise load, memory, pressure (PSI) and sockets now", NoArgs, _stats),
    Tool("probe", "run an eBPF probe for some seconds", ProbeArgs, _probe),
    Tool("tune", "find problems and recommend sysctl changes", NoArgs, _tune),
    Tool("docs", "document a sysctl, or list undocumented ones", DocsArgs, _docs),
    Tool("disks", "find failing or fail-slow drives", NoArgs, _disks),
    Tool("agent_status", "the kernel agent's state and managed keys", NoArgs, _agent_status),
    Tool("agent_history", "the changesets the agent applied", NoArgs, _agent_history),
    Tool("apply", "propose applying a recommendation (needs approval)", ApplyArgs, _apply, True),
    Tool(
        "rollback",
        "propose rolling back a changeset (needs approval)",
        RollbackArgs,
        _rollback,
        True,
    ),
    Tool("logs", "show kernel log records (kmsg, journal, pstore)", LogsArgs, _logs),
    Tool("vmcore", "analyse a vmcore with drgn", PathArgs, _vmcore),
    Tool("answer", "answer in plain words (kernel knowledge)", AnswerArgs, _answer),
)
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
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "arguments"
        raise InputError(f"{name}: {where}: {first['msg']}", "check the arguments") from None
    try:
        return tool.run(parsed, ctx)
    except ProbeError as exc:
        raise InputError(exc.message, exc.hint) from None
    except KassistError:
        raise


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
