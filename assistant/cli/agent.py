"""``kassist agent``: run the kernel agent, or talk to it through its socket.

``serve`` execs the agent's own entry point (``python -m actions serve``: the root
daemon loads nothing of the assistant); the other subcommands are clients: ``status``,
``history``, ``show ID``, ``rollback ID|--since T``, ``validate FILE`` (a dry run) and
``apply FILE`` (asks a person first on a terminal unless ``--yes``). Every piece of text that came
from a recommendation, the kernel or the agent is printed through
:func:`actions.text.printable` (no terminal escape or forged line reaches the operator).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from actions.client import AgentClient
from actions.errors import ActionError
from actions.model import Change, Completion
from actions.protocol import MAX_ENTRY
from actions.text import printable
from assistant.cli.common import format_option, notice
from assistant.config import Config, load_config
from assistant.errors import InputError, KassistError

F = TypeVar("F", bound=Callable[..., Any])


def _client_options(func: F) -> F:
    wrapped: Any = format_option("text", "json")(func)
    wrapped = click.option(
        "--socket", "socket_path", default=None, metavar="PATH", help="The agent's socket."
    )(wrapped)
    return wrapped  # type: ignore[no-any-return]


def _config(socket_path: str | None = None, **agent: Any) -> Config:
    return load_config({"agent": {"socket": socket_path, **agent}})


def _call(socket_path: str | None, fn: Callable[[AgentClient], Completion]) -> Completion:
    cfg = _config(socket_path)
    try:
        with AgentClient(cfg.agent.socket) as client:
            return fn(client)
    except ActionError as exc:
        raise KassistError(printable(exc.message), printable(exc.hint)) from None


def _finish(completion: Completion, fmt: str, text: Callable[[Completion], str]) -> None:
    if fmt == "json":
        # json.dumps escapes every control character: the JSON form is inert as it is.
        click.echo(json.dumps(completion.to_wire(completion.user_data), indent=2))
    else:
        out = text(completion)
        if out:
            click.echo(out)
        for line in completion.notices:
            notice(printable(line))
    if not completion.ok:
        # The last line becomes the error the CLI prints (and exits 1 with).
        lines = [printable(e.message) for e in completion.errors] or [completion.verdict]
        if fmt == "text":
            for line in lines[:-1]:
                click.echo(f"kassist: {line}", err=True)
            raise KassistError(lines[-1])
        raise KassistError(f"{printable(completion.verdict)}: {lines[0]}")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _changes_text(changes: list[Change], indent: str = "  ") -> list[str]:
    if not changes:
        return []
    width = max(len(printable(c.target)) for c in changes)
    lines = []
    for c in changes:
        state = f"  [{printable(c.state)}]" if c.state else ""
        lines.append(
            f"{indent}{printable(c.target):<{width}}  {printable(c.old)} -> "
            f"{printable(c.new)}  (risk {printable(c.risk)}){state}"
        )
    return lines


def _read_recommendations(path: str) -> object:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}", "check the path") from None
    if len(data) > MAX_ENTRY - 1024:
        raise InputError(
            f"{path}: {len(data)} bytes; a changeset must fit in {MAX_ENTRY // 1024} KiB",
            "split it into several files",
        )
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path}: not JSON ({exc})",
            "give a JSON object, or an array of them, per the Recommendation contract",
        ) from None


# --- the group ------------------------------------------------------------------------


@click.group()
def agent() -> None:
    """Run the kernel agent, or talk to it: it validates, applies and rolls back changes."""


@agent.command(context_settings={"ignore_unknown_options": True})
@click.option("--socket", "socket_path", default=None, metavar="PATH", help="Socket to listen on.")
@click.option("--state-dir", default=None, metavar="DIR", help="Where the journal lives.")
@click.option("--policy", default=None, metavar="FILE", help="Policy TOML (default: built-in).")
@click.option("--group", default=None, help="Group allowed to connect besides root.")
@click.option("--audit-log", default=None, metavar="FILE", help="JSON-lines audit log.")
@click.option("--sysctl-conf", default=None, metavar="FILE", help="File for persisted changes.")
@click.argument("agent_args", nargs=-1, type=click.UNPROCESSED)
def serve(
    socket_path: str | None,
    state_dir: str | None,
    policy: str | None,
    group: str | None,
    audit_log: str | None,
    sysctl_conf: str | None,
    agent_args: tuple[str, ...],
) -> None:
    """Run the agent daemon on its Unix socket (as root) until SIGTERM.

    This execs ``python -m actions serve`` (the agent's own entry point, also installed
    as ``kassist-agent``) with kassist's configured paths: the root process loads
    nothing of the assistant. Options it does not know go to the agent as they are.
    """
    cfg = _config(
        socket_path, state_dir=state_dir, policy=policy, group=group, audit_log=audit_log,
        sysctl_conf=sysctl_conf,
    )  # fmt: skip
    a = cfg.agent
    argv = [
        sys.executable, "-m", "actions", "serve", "--socket", a.socket, "--state-dir",
        a.state_dir, "--policy", a.policy, "--group", a.group, "--audit-log", a.audit_log,
        "--sysctl-conf", a.sysctl_conf, *agent_args,
    ]  # fmt: skip
    sys.stdout.flush()
    sys.stderr.flush()
    # The agent imports from the directory kassist runs from, as this process did.
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    env = {**os.environ, "PYTHONPATH": f"{root}:{path}" if path else root}
    try:
        os.execve(sys.executable, argv, env)
    except OSError as exc:
        raise KassistError(f"cannot start the agent: {exc.strerror}", "check the install") from None


# --- clients --------------------------------------------------------------------------


def _status_text(c: Completion) -> str:
    s = c.status
    if s is None:
        return ""
    counts = ", ".join(f"{k} {v}" for k, v in sorted(s.changesets.items())) or "none"
    lines = [
        f"agent pid {s.pid}, up {s.uptime:.0f} s, policy: {printable(s.policy)}",
        f"journal {printable(s.journal)} · audit {printable(s.audit)}",
        f"changesets: {printable(counts)}",
        f"managed keys: {len(s.managed)}",
    ]
    lines += [f"  [{m.changeset}] {printable(m.target)} = {printable(m.value)}" for m in s.managed]
    if s.overridden:
        lines.append("overridden by someone else (no longer managed):")
        lines += [f"  [{m.changeset}] {printable(m.target)} (kassist set {printable(m.set)})"
                  for m in s.overridden]  # fmt: skip
    if s.enforce:
        lines += _enforce_summary(s.enforce)
    return "\n".join(lines)


def _enforce_summary(e: dict[str, Any]) -> list[str]:
    lines = []
    if e.get("enabled"):
        where = ", ".join(f"{a['mode']} {a['cgroup']}" for a in e["attachments"]) or "nothing"
        lines = [f"in-kernel enforcement: {where}; {len(e['rules'])} rules "
                 f"(generation {e['kernel_generation']})"]  # fmt: skip
    elif e.get("best_effort"):
        lines = ["in-kernel enforcement: OFF (best effort)"]
    lines += _queues_summary(e.get("queues") or {})
    # best effort: every cgroup and policy row asked for and not enforced, one line each
    lines += [f"  NOT enforced: {u['mode']} {printable(u['cgroup'])}: {printable(u['why'])}"
              for u in e.get("unguarded", [])]  # fmt: skip
    lines += [f"  NOT enforced: policy rule {printable(p)}: {printable(why)}"
              for p, why in e.get("unfit", [])]  # fmt: skip
    refusals = e.get("refusals", [])
    if refusals:
        lines.append(f"recent refusals ({len(refusals)}, {e['dropped']} dropped):")
        lines += [f"  {_when(r['time'])}  pid {r['pid']} {r['comm']} {r['key']}={r['value']!r}"
                  f" ({r['reason']})" for r in refusals[-5:]]  # fmt: skip
    return lines


def _queues_summary(q: dict[str, Any]) -> list[str]:
    if not q.get("running"):
        return []
    rate = q["rate"]["per_second"] or "no limit"
    lines = [f"BPF queues: {q['sequence']} entries validated in the kernel "
             f"({q['orphans']} answered after a restart, not applied); "
             f"{rate} entries/s per extension"]  # fmt: skip
    for x in q["extensions"]:
        why = ", ".join(f"{printable(k)} {n}" for k, n in x["refused_by_reason"].items())
        lines.append(
            f"  uid {x['uid']} cgroup {x['cgroup_id']}: submitted {x['submitted']}, accepted "
            f"{x['accepted']}, refused {x['refused']}{f' ({why})' if why else ''}, "
            f"applied {x['applied']}"
        )
    return lines


@agent.command()
@_client_options
def status(socket_path: str | None, fmt: str) -> None:
    """Show what the agent manages and what someone else overrode."""
    _finish(_call(socket_path, lambda c: c.status()), fmt, _status_text)


def _who(who: dict[str, Any]) -> str:
    return printable(who.get("user") or who.get("agent") or "?")


def _history_text(c: Completion) -> str:
    rows = c.changesets or []
    if not rows:
        return "no changesets yet"
    lines = [f"{'ID':>4}  {'STATE':<12} {'CREATED':<19}  {'WHO':<10} CHANGES"]
    for cs in rows:
        targets = ", ".join(f"{printable(ch.target)}={printable(ch.new)}" for ch in cs.changes)
        lines.append(
            f"{cs.id:>4}  {printable(cs.state):<12} {_when(cs.created)}  {_who(cs.who):<10} "
            f"{targets}"
        )
    return "\n".join(lines)


@agent.command()
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@_client_options
def history(limit: int, socket_path: str | None, fmt: str) -> None:
    """List the latest changesets, newest first."""
    _finish(_call(socket_path, lambda c: c.history(limit=limit)), fmt, _history_text)


def _show_text(c: Completion) -> str:
    cs = c.changeset
    if cs is None:
        return ""
    who = cs.who
    lines = [
        f"changeset {cs.id}: {printable(cs.state)}"
        + (f" ({printable(cs.error)})" if cs.error else ""),
        f"created {_when(cs.created)} by {_who(who)} (uid {printable(who.get('uid', '?'))}, "
        f"pid {printable(who.get('pid', '?'))})" + (" · persisted" if cs.persist else ""),
        "changes:",
        *_changes_text(cs.changes),
    ]
    for ch in cs.changes:
        # Rationale and evidence are a recommendation's words: one escaped line each.
        lines.append(f"  {printable(ch.target)}: {printable(ch.rationale)}")
        lines += [f"    evidence: {printable(e if isinstance(e, str) else json.dumps(e))}"
                  for e in ch.evidence]  # fmt: skip
    lines.append("events:")
    for e in cs.events:
        detail = {k: v for k, v in e.items() if k not in ("at", "event")}
        lines.append(
            f"  {_when(e['at'])}  {printable(e['event'])}"
            + (f"  {json.dumps(detail)}" if detail else "")
        )
    return "\n".join(lines)


@agent.command()
@click.argument("changeset_id", type=int, metavar="ID")
@_client_options
def show(changeset_id: int, socket_path: str | None, fmt: str) -> None:
    """Show one changeset: its changes, evidence and events."""
    _finish(_call(socket_path, lambda c: c.history(changeset_id)), fmt, _show_text)


_RELATIVE = re.compile(r"^(\d+)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """Parse ``--since``: ``30m``/``2h``/``1d`` ago, an ISO 8601 time, or epoch seconds.

    :raises KassistError: none of those.
    """
    now = time.time() if now is None else now
    text = text.strip()
    m = _RELATIVE.match(text)
    if m:
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise KassistError(
            f"--since {text!r} is not a time",
            "use 30m, 2h, 1d, 2026-11-27T04:00:00Z or epoch seconds",
            2,
        ) from None


def _rollback_text(c: Completion) -> str:
    # Says exactly what was restored: a key someone else changed is named in the errors.
    if c.changeset is not None and c.verdict in ("rolled_back", "partly_rolled_back"):
        cs = c.changeset
        restored = [ch for ch in cs.changes if ch.state == "rolled_back"]
        head = f"changeset {cs.id}: rolled back"
        if c.verdict != "rolled_back":
            head += f" {len(restored)} of {len(cs.changes)} keys"
        return "\n".join([head, *_changes_text(restored)])
    if c.changeset is not None and c.verdict == "not_restored":
        return f"changeset {c.changeset.id}: nothing restored (someone else changed its keys)"
    if c.changesets is not None:
        if not c.changesets:
            return "nothing to roll back" if c.ok else ""
        return "\n".join(f"changeset {cs.id}: rolled back" for cs in c.changesets)
    return ""


@agent.command()
@click.argument("changeset_id", type=int, metavar="ID", required=False)
@click.option("--since", default=None, metavar="T", help="Roll back every changeset since T.")
@_client_options
def rollback(
    changeset_id: int | None, since: str | None, socket_path: str | None, fmt: str
) -> None:
    """Roll back a changeset by id, or everything since a time (newest first)."""
    if (changeset_id is None) == (since is None):
        raise KassistError(
            "name a changeset ID or --since T (one of them)", "see kassist agent history", 2
        )
    when = parse_since(since) if since is not None else None
    _finish(_call(socket_path, lambda c: c.rollback(changeset_id, when)), fmt, _rollback_text)


def _validate_text(c: Completion) -> str:
    if not c.ok or c.changeset is None:
        n = len(c.errors)
        return f"rejected: {n} problem{'s' if n != 1 else ''} (nothing applied)"
    changes = c.changeset.changes
    return "\n".join(
        [f"valid: {len(changes)} change{'s' if len(changes) != 1 else ''} "
         "(a dry run: nothing was applied)", *_changes_text(changes)]
    )  # fmt: skip


@agent.command()
@click.argument("file", metavar="FILE|-")
@_client_options
def validate(file: str, socket_path: str | None, fmt: str) -> None:
    """Validate a recommendation file and show the dry-run diff (old -> new); apply nothing."""
    doc = _read_recommendations(file)
    _finish(_call(socket_path, lambda c: c.validate(doc)), fmt, _validate_text)


def _apply_text(c: Completion) -> str:
    cs = c.changeset
    if c.ok and cs:
        return "\n".join(
            [f"verified: changeset {cs.id} applied and read back", *_changes_text(cs.changes),
             f"roll it back with: kassist agent rollback {cs.id}"]
        )  # fmt: skip
    if cs:
        return f"failed: changeset {cs.id} was rolled back ({printable(cs.state)})"
    return f"{printable(c.verdict)}: nothing applied"


@agent.command()
@click.argument("file", metavar="FILE|-")
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
@click.option("--persist", is_flag=True, help="Also write the change to sysctl.d for next boot.")
@_client_options
def apply(file: str, yes: bool, persist: bool, socket_path: str | None, fmt: str) -> None:
    """Apply a recommendation file all-or-nothing, after a dry run and a person's approval."""
    doc = _read_recommendations(file)
    cfg = _config(socket_path)
    try:
        with AgentClient(cfg.agent.socket) as client:
            dry = client.validate(doc)
            if not dry.ok:
                _finish(dry, fmt, _validate_text)
                return
            if fmt == "text":
                click.echo(_validate_text(dry))
            if not yes and not dry.auto_approve:
                if not sys.stdin.isatty() or file == "-":
                    raise KassistError(
                        "apply needs a person's approval", "run it on a terminal, or pass --yes", 2
                    )
                click.confirm("Apply these changes?", abort=True, err=True)
            done = client.apply(doc, persist=persist)
    except ActionError as exc:
        raise KassistError(printable(exc.message), printable(exc.hint)) from None
    _finish(done, fmt, _apply_text)


def _step_text(max_step: float | None) -> str:
    if max_step is None:
        return ""
    return ", no step bound" if max_step == 0 else f", step x{max_step:g}"


def _policy_text(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        detail = ""
        if row["action"] == "allow" and "type" in row:
            lo = "" if row["min"] is None else row["min"]
            hi = "" if row["max"] is None else row["max"]
            shape = ", ".join(row["values"]) if row["type"] == "choice" else f"{lo}..{hi}"
            step = _step_text(row["max_step"])
            detail = f"{row['type']} {shape}, risk {row['risk']}{step}"
        elif row["action"] == "allow":
            detail = "no known type or range: refused until the policy gives one"
        elif row["action"] == "baseline":
            detail = "may be lowered (override)" if row["override"] else "never lowered"
        elif row["action"] == "except":
            detail = "named exactly: the deny globs do not cover it (deny_except)"
        lines.append(f"{row['action']:<8} {row['pattern']:<50} {detail}".rstrip())
    return "\n".join(lines)


@agent.command()
@click.option("--policy", default=None, metavar="FILE", help="Policy TOML (default: built-in).")
@format_option("text", "json")
def policy(policy: str | None, fmt: str) -> None:
    """Show the effective policy as plain data: pattern -> type, range, values, risk.

    This is the table a BPF_PROG_TYPE_CGROUP_SYSCTL program would enforce; caps
    relative to RAM and CPUs are resolved for this machine.
    """
    from actions.policy import load_policy

    cfg = load_config({"agent": {"policy": policy}})
    try:
        loaded = load_policy(cfg.agent.policy)
    except ActionError as exc:
        raise KassistError(exc.message, exc.hint) from None
    rows = loaded.table()
    if fmt == "json":
        click.echo(json.dumps({"source": loaded.source, "rules": rows}, indent=2))
    else:
        click.echo(f"policy: {loaded.source}")
        click.echo(_policy_text(rows))


# --- in-kernel enforcement (actions/enforce) -------------------------------------------


@agent.group()
def enforce() -> None:
    """In-kernel enforcement: the BPF cgroup-sysctl programs the agent attached."""


def _rule_text(r: dict[str, Any]) -> str:
    if r["type"] == "choice":
        shape = ", ".join(r["words"])
    else:
        lo = "" if r["min"] is None else r["min"]
        hi = "" if r["max"] is None else r["max"]
        shape = f"{lo}..{hi}" + (f" x{r['length']}" if r["type"] == "ints" else "")
    return f"  {r['key']:<40} {r['type']:<6} {shape}"


def _enforce_text(doc: dict[str, Any]) -> str:
    runs = doc["kernel"]
    if not runs and not doc["state"]:
        return (
            "in-kernel enforcement: off (start the agent with --enforce-guard/--enforce-lockdown)"
        )
    lines = []
    for run in runs:
        lines.append(f"pinned {run['pin']} (rules generation {run.get('generation', 0)})")
        for a in run["attachments"]:
            where = doc["cgroups"].get(str(a["cgroup_id"]), f"cgroup id {a['cgroup_id']}")
            state = "attached" if a["attached"] else "DETACHED"
            lines.append(
                f"  {a['mode']:<8} {where}  link {a['link_id']} prog {a['prog_id']} {state}"
            )
        lines.append(f"rules ({len(run['rules'])}):")
        lines += [_rule_text(r) for r in run["rules"]]
    state = doc["state"]
    if state:
        refusals = state.get("refusals", [])
        lines.append(f"recent refusals ({len(refusals)}, {state.get('dropped', 0)} dropped):")
        for r in refusals[-20:]:
            lines.append(
                f"  {_when(r['time'])}  pid {r['pid']} {r['comm']} {r['cgroup']}  "
                f"{r['key']}={r['value']!r}  ({r['mode']}: {r['reason']})"
            )
    return "\n".join(lines)


@enforce.command("status")
@click.option("--pin-root", default="/sys/fs/bpf/kassist", hidden=True)
@click.option("--state", "state_path", default="/run/kassist/enforce.json", hidden=True)
@format_option("text", "json")
def enforce_status(pin_root: str, state_path: str, fmt: str) -> None:
    """Show what is attached where, the map's rules (read from the kernel), and refusals."""
    import contextlib
    import os

    from actions.enforce import pinned_status

    state: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(Path(state_path).read_text())
    if os.geteuid() != 0:
        raise KassistError("reading the pinned BPF programs needs root", "run it with sudo")
    try:
        runs = pinned_status(Path(pin_root))
    except OSError as exc:
        raise KassistError(f"cannot read {pin_root}: {exc.strerror}", "is bpffs mounted?") from None
    cgroups = {str(a["cgroup_id"]): a["cgroup"] for a in state.get("attachments", [])}
    doc = {"kernel": runs, "state": state, "cgroups": cgroups}
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(_enforce_text(doc))
