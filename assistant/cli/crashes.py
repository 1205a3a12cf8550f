"""``kassist crashes list|show SIG``: browse the crash store (``kassist triage --store``)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import click

from assistant.errors import KassistError
from assistant.triage.store import CrashStore, default_path


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _open(db: str | None) -> CrashStore:
    path = Path(db) if db else default_path()
    if not path.exists():
        raise KassistError(
            f"no crash store at {path}", "record crashes with `kassist triage --store LOG`"
        )
    return CrashStore(path)


_DB = click.option(
    "--db", metavar="PATH", help="The store's file (default: $XDG_STATE_HOME/kassist/crashes.db)."
)
_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)


@click.group()
def crashes() -> None:
    """Browse the crashes recorded by `kassist triage --store`, grouped by signature."""


@crashes.command(name="list")
@_DB
@_FORMAT
def list_(db: str | None, fmt: str) -> None:
    """List every crash signature, most recently seen first."""
    with _open(db) as store:
        rows = store.signatures()
    if fmt == "json":
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    if not rows:
        click.echo("no crashes recorded")
        return
    for r in rows:
        click.echo(
            f"{r.signature}  {r.count:>4}x  last {_when(r.last_seen)}  [{r.type}]  {r.title}"
        )


@crashes.command()
@click.argument("signature")
@_DB
@_FORMAT
@click.option("--reports", type=click.IntRange(0), default=1, show_default=True,
              help="How many raw reports to print (newest first).")  # fmt: skip
def show(signature: str, db: str | None, fmt: str, reports: int) -> None:
    """Show one crash SIGNATURE (a unique prefix is enough): where and when it was seen."""
    with _open(db) as store:
        summary, hits = store.get(signature)
    if fmt == "json":
        doc = asdict(summary)
        doc["hits"] = [asdict(h) for h in hits]
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"{summary.title}  [{summary.type}]")
    click.echo(f"  signature   {summary.signature}")
    click.echo(f"  seen        {summary.count} time(s), first {_when(summary.first_seen)},"
               f" last {_when(summary.last_seen)}")  # fmt: skip
    click.echo(f"  hosts       {', '.join(summary.hosts) or '?'}")
    click.echo(f"  releases    {', '.join(summary.releases) or '?'}")
    if summary.frame or summary.guilty_file:
        click.echo(f"  frame       {summary.frame or '?'}  file {summary.guilty_file or '?'}")
    for h in hits[:reports]:
        flag = " (corrupted)" if h.corrupted else ""
        click.echo(f"\n--- {_when(h.seen)} {h.host} {h.release or '?'} {h.source}{flag}")
        click.echo(h.report)
