"""``kassist tune``: tuning findings and recommendations from kernel evidence.

Advice mode by default (nothing changes; exit 0 with no recommendation, 3 with
some). ``--submit`` asks the agent for a dry run (old -> new per key); ``--apply``
applies through the agent after a person's approval on a terminal (``--yes``
skips it). ``--explain ID`` shows the evidence and documentation behind one
finding of the last run.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from actions.client import AgentClient, try_status
from actions.errors import ActionError
from actions.model import AgentStatus, Change, Completion, Recommendation
from actions.text import printable
from assistant.cli.common import (
    LlmFlags,
    backend_or_none,
    format_option,
    llm_options,
    notice,
)
from assistant.config import user_state_dir
from assistant.errors import KassistError, NotAvailable
from assistant.tuning.engine import TuneReport, find_finding
from assistant.tuning.evidence import Observation
from assistant.tuning.render import report_text
from assistant.tuning.run import tune_run
from assistant.tuning.scenarios import scenario_rows
from probes.errors import ProbeUnavailable
from probes.stats.netns import enter_netns

#: Exit status of advice mode when there is something to recommend.
EXIT_RECOMMENDED = 3
LAST_RUN = "tune-last.json"


def last_run_path() -> Path:
    """Where the last run's ``kassist.tune/1`` object is kept (for ``--explain``)."""
    return user_state_dir() / LAST_RUN


def _save(report: TuneReport) -> None:
    path = last_run_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report.to_dict()))
        os.replace(tmp, path)
    except OSError as exc:
        notice(f"the run was not saved for --explain ({exc.strerror}: {path})")


def _agent_status(socket_path: str) -> AgentStatus | None:
    return try_status(socket_path).status


def _diff_lines(changes: list[Change]) -> list[str]:
    width = max((len(c.target) for c in changes), default=0)
    return [
        f"  {printable(c.target):<{width}}  {printable(c.old)} -> {printable(c.new)}  "
        f"(risk {printable(c.risk)})"
        for c in changes
    ]


def _wire(done: Completion) -> dict[str, Any]:
    return done.to_wire(done.user_data)


def _dry_run(
    client: AgentClient, recs: list[Recommendation]
) -> tuple[list[Recommendation], Completion]:
    """Validate; when some are rejected, say why and validate the rest once more."""
    docs = [r.model_dump() for r in recs]
    done = client.validate(docs)
    if done.ok:
        return recs, done
    for e in done.errors:
        click.echo(f"rejected by the agent: {printable(e.message)}", err=True)
    bad = {e.target for e in done.errors}
    rest = [r for r in recs if r.target not in bad]
    if not rest or len(rest) == len(recs):
        return [], done
    again = client.validate([r.model_dump() for r in rest])
    return (rest, again) if again.ok else ([], again)


def _act(report: TuneReport, socket_path: str, apply: bool, yes: bool, fmt: str) -> dict[str, Any]:
    """Submit the run's recommendations to the agent: a dry run, then (``apply``) the change.

    :return: ``{"dry_run": completion}`` and, when applied, ``{"applied": completion}``.
    :raises KassistError: the agent is not there, rejects everything, or the apply failed.
    """
    if not report.recommendations:
        if fmt == "text":
            click.echo("nothing to submit")
        return {}
    try:
        with AgentClient(socket_path) as client:
            recs, dry = _dry_run(client, list(report.recommendations))
            if not recs:
                raise KassistError("the agent rejected every recommendation", "see the lines above")
            changes = dry.changeset.changes if dry.changeset is not None else []
            if fmt == "text":
                click.echo(f"valid: {len(changes)} change(s) (a dry run: nothing was applied)")
                click.echo("\n".join(_diff_lines(changes)))
            if not apply:
                return {"dry_run": _wire(dry)}
            if not yes and not dry.auto_approve:
                if not sys.stdin.isatty():
                    raise KassistError(
                        "apply needs a person's approval", "run it on a terminal, or pass --yes", 2
                    )
                click.confirm("Apply these changes?", abort=True, err=True)
            done = client.apply([r.model_dump() for r in recs])
    except ActionError as exc:
        raise KassistError(exc.message, exc.hint) from None
    cs = done.changeset
    if not done.ok or cs is None:
        msg = "; ".join(e.message for e in done.errors) or done.verdict
        raise KassistError(f"not applied: {printable(msg)}", "see kassist agent history")
    if fmt == "text":
        click.echo(f"verified: changeset {cs.id} applied and read back")
        click.echo("\n".join(_diff_lines(cs.changes)))
        click.echo(f"roll it back with: kassist agent rollback {cs.id}")
    return {"dry_run": _wire(dry), "applied": _wire(done)}


def _explain(ident: str, fmt: str, cfg: Any, no_llm: bool) -> None:
    from assistant.tuning.explain import explain, model_explanation

    path = last_run_path()
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        raise KassistError(f"no saved tune run at {path}", "run `kassist tune` first") from None
    finding = find_finding(doc, ident)
    if finding is None:
        ids = ", ".join(f["id"] for f in doc.get("findings", [])) or "none"
        raise KassistError(f"no finding {ident!r} in the last run", f"its findings: {ids}")
    ex = explain(finding)
    backend = backend_or_none(cfg, no_llm)
    if backend is not None:
        ex = model_explanation(ex, backend, cfg.llm.max_tokens or 160)
    if fmt == "json":
        click.echo(json.dumps(ex.to_dict(), indent=2))
    else:
        click.echo(ex.text)
        if ex.model_text:
            click.echo(
                "\nExplanation (local model, checked against the evidence):\n" + ex.model_text
            )
    for line in ex.notices:
        notice(line)


def _one_run(
    interval: float | None, cgroup: str | None, netns: str | None, trace: bool,
    socket_path: str, propose_backend: Any,
) -> tuple[TuneReport, Observation]:  # fmt: skip
    status = _agent_status(socket_path)
    report, obs = tune_run(status, interval, cgroup=cgroup, netns=netns, trace=trace)
    if propose_backend is not None:
        from assistant.tuning.proposals import propose

        rec, line = propose(propose_backend, obs, report)
        report.notices.append(line)
        if rec is not None and rec.target not in {r.target for r in report.recommendations}:
            report.recommendations.append(rec)
    return report, obs


@click.command()
@format_option("text", "json")
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=None,
    metavar="S",
    help="Rates over a window of S seconds (default: counters since boot).",
)
@click.option(
    "--count",
    type=click.IntRange(1, 100000),
    default=1,
    show_default=True,
    help="Windows to observe, one after the other (needs --interval).",
)
@click.option("--netns", default=None, metavar="NAME|PID", help="Read this network namespace.")
@click.option("--cgroup", default=None, metavar="PATH", help="Also read this cgroup v2.")
@click.option(
    "--trace",
    is_flag=True,
    help="Run the syserrors eBPF probe for the window (root; EADDRNOTAVAIL, ENOSPC...).",
)
@click.option("--submit", is_flag=True, help="Ask the agent for a dry run: old -> new per key.")
@click.option("--apply", "do_apply", is_flag=True, help="Apply through the agent (asks first).")
@click.option("--yes", "-y", is_flag=True, help="With --apply: do not ask.")
@click.option("--socket", "socket_path", default=None, metavar="PATH", help="The agent's socket.")
@click.option(
    "--explain",
    "explain_id",
    default=None,
    metavar="ID",
    help="Show the evidence and documentation behind one finding of the last run.",
)
@click.option("--propose", is_flag=True, help="Also ask the local model for a proposal of its own.")
@click.option(
    "--list", "list_scenarios", is_flag=True, help="List the scenarios and their sources."
)
@llm_options
def tune(
    fmt: str, interval: float | None, count: int, netns: str | None, cgroup: str | None,
    trace: bool, submit: bool, do_apply: bool, yes: bool, socket_path: str | None,
    explain_id: str | None, propose: bool, list_scenarios: bool, llm_flags: LlmFlags,
) -> None:  # fmt: skip
    """Find tuning opportunities in kernel evidence and recommend sysctl changes."""
    cfg = llm_flags.config(socket_path)  # --max-tokens and --no-log hold with --socket too
    if list_scenarios:
        _list_scenarios(fmt)
        return
    if explain_id is not None:
        _explain(explain_id, fmt, cfg, llm_flags.no_llm)
        return
    acting = submit or do_apply
    _check_windows(count, interval, acting)
    if netns is not None:
        _enter(netns)
    propose_backend = backend_or_none(cfg, llm_flags.no_llm) if propose else None
    recommended = False
    for _ in range(count):
        report, _obs = _one_run(interval, cgroup, netns, trace, cfg.agent.socket, propose_backend)
        _show(report, fmt, json_now=not acting, one=count == 1)
        recommended = recommended or bool(report.recommendations)
    if acting:
        # With --format json, one object: the run, its dry run and what was applied.
        done = _act(report, cfg.agent.socket, do_apply, yes, fmt)
        if fmt == "json":
            click.echo(json.dumps({**report.to_dict(), **done}, indent=2))
        sys.exit(0)
    sys.exit(EXIT_RECOMMENDED if recommended else 0)


def _list_scenarios(fmt: str) -> None:
    rows = scenario_rows()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(
            f"{r['id']:<16} {r['title']}\n  keys: {', '.join(r['keys'])}\n"
            f"  sources: {'; '.join(r['sources'])}"
        )


def _check_windows(count: int, interval: float | None, acting: bool) -> None:
    if count > 1 and interval is None:
        raise KassistError("--count needs --interval", "e.g. --interval 10 --count 6", 2)
    if count > 1 and acting:
        raise KassistError("--submit and --apply act on one window", "drop --count", 2)


def _enter(netns: str) -> None:
    try:
        enter_netns(netns)
    except ProbeUnavailable as exc:  # not root: exit 2, as for what this user cannot do
        raise NotAvailable(exc.message, exc.hint) from None


def _show(report: TuneReport, fmt: str, *, json_now: bool, one: bool) -> None:
    # One window's report: saved for --explain, shown (JSON waits for the dry run when
    # acting), its notices on stderr.
    _save(report)
    if fmt == "text":
        click.echo(report_text(report))
    elif json_now:
        click.echo(json.dumps(report.to_dict(), indent=2 if one else None))
    for line in report.notices:
        notice(line)
