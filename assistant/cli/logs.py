"""``kassist logs list|show ID``: what was sent to the model, what it said, and what it cost."""

from __future__ import annotations

import json
import sqlite3
import time

import click

from assistant.llm.log import connect, get_entry, list_entries, log_path


@click.group()
def logs() -> None:
    """Browse the LLM log (every prompt, answer, model, token counts and timings)."""


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _outcome(row: sqlite3.Row) -> str:
    if row["error"]:
        return "error"
    if row["refusal"]:
        return "invalid"
    if row["has_structured"]:
        return "valid"
    return ""


@logs.command("list")
@click.option("-n", "--limit", type=click.IntRange(1, 10000), default=20, show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def list_cmd(limit: int, fmt: str) -> None:
    """List the latest generations, newest first."""
    rows = list_entries(connect(create=False), limit)
    if fmt == "json":
        click.echo(json.dumps([dict(r) for r in rows], indent=2))
        return
    click.echo(f"{'id':>5}  {'when':<19}  {'prompt':<24} {'tokens in/cached/out':>20} {'s':>6}  ")
    for r in rows:
        tokens = (
            f"{r['prompt_tokens'] or 0}/{r['cached_tokens'] or 0}/{r['completion_tokens'] or 0}"
        )
        click.echo(
            f"{r['id']:>5}  {_when(r['started_at']):<19}  {(r['prompt_name'] or '-')[:24]:<24}"
            f" {tokens:>20} {r['total_s'] or 0:>6.2f}  {_outcome(r)}"
        )
    click.echo(f"({log_path()}; `kassist logs show ID` for one entry)")


@logs.command("show")
@click.argument("log_id", metavar="ID", type=int)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def show_cmd(log_id: int, fmt: str) -> None:
    """Show one generation: messages, answer, parameters, costs, structured result."""
    row = dict(get_entry(connect(create=False), log_id))
    for key in ("messages", "params", "json_schema", "structured"):
        if row.get(key):
            row[key] = json.loads(row[key])
    if fmt == "json":
        click.echo(json.dumps(row, indent=2))
        return
    click.echo(f"id {row['id']} · {_when(row['started_at'])} · {row['backend']} {row['model']}")
    click.echo(f"prompt: {row['prompt_name'] or '-'}   params: {json.dumps(row['params'])}")
    click.echo(
        f"tokens: {row['prompt_tokens']} in ({row['cached_tokens'] or 0} from cache), "
        f"{row['completion_tokens']} out · first token {row['first_token_s'] or 0:.2f} s · "
        f"total {row['total_s'] or 0:.2f} s · constraint {row['constraint_kind'] or '-'}"
    )
    for m in row["messages"]:
        click.echo(f"\n--- {m['role']} ---\n{m['content']}")
    click.echo(f"\n--- answer ---\n{row['response']}")
    if row.get("structured") is not None:
        click.echo(f"\n--- validated ---\n{json.dumps(row['structured'], indent=2)}")
    if row.get("refusal"):
        click.echo(f"\n--- refused ---\n{row['refusal']}")
    if row.get("error"):
        click.echo(f"\n--- error ---\n{row['error']}")
