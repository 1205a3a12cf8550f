"""``kassist crashes list|show SIG``: browse the crash store (``kassist triage --store``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click

from assistant.errors import KassistError
from assistant.triage.store import Store, default_path, open_store


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _open(db: str | None, url: str | None = None) -> Store:
    if url:
        return open_store(url)
    path = Path(db) if db else default_path()
    if not path.exists():
        raise KassistError(
            f"no crash store at {path}", "record crashes with `kassist triage --store LOG`"
        )
    return open_store(path)


F = TypeVar("F", bound=Callable[..., Any])


def _db(func: F) -> F:
    func = click.option(
        "--store", "url", metavar="URL", default=None,
        help="The fleet store (postgresql://...) instead of --db.",
    )(func)  # fmt: skip
    return click.option(
        "--db",
        metavar="PATH",
        help="The store's file (default: $XDG_STATE_HOME/kassist/crashes.db).",
    )(func)


_DB = _db
_FORMAT = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)


@click.group()
def crashes() -> None:
    """Browse the crashes recorded by `kassist triage --store`, grouped by signature."""


@crashes.command(name="list")
@_DB
@_FORMAT
def list_(db: str | None, url: str | None, fmt: str) -> None:
    """List every crash signature, most recently seen first (hosts across the fleet)."""
    store = _open(db, url)
    try:
        rows = store.signatures()
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    if not rows:
        click.echo("no crashes recorded")
        return
    for r in rows:
        hosts = f"  {len(r.hosts)} host(s)" if url else ""
        click.echo(
            f"{r.signature}  {r.count:>4}x  last {_when(r.last_seen)}{hosts}  [{r.type}]  {r.title}"
        )


@crashes.command()
@click.argument("signature")
@_DB
@_FORMAT
@click.option("--reports", type=click.IntRange(0), default=1, show_default=True,
              help="How many raw reports to print (newest first).")  # fmt: skip
def show(signature: str, db: str | None, url: str | None, fmt: str, reports: int) -> None:
    """Show one crash SIGNATURE (a unique prefix is enough): where and when it was seen."""
    store = _open(db, url)
    try:
        summary, hits = store.get(signature)
    finally:
        store.close()
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


@crashes.command()
@click.option("--db", metavar="PATH", help="The local store (default: the state directory's).")
@click.option(
    "--store", "url", metavar="URL", required=True, help="The fleet store (postgresql://...)."
)
def sync(db: str | None, url: str) -> None:
    """Push this host's local crash store to the fleet store (each hit counted once)."""
    from assistant.triage.store_pg import PgCrashStore, is_url

    if not is_url(url):
        raise KassistError(f"{url}: not a PostgreSQL URL", "give --store postgresql://...")
    local = _open(db)
    new = 0
    try:
        with PgCrashStore(url) as fleet:
            for summary in local.signatures():
                _, hits = local.get(summary.signature)
                new += fleet.import_hits(summary, hits)
    finally:
        local.close()
    click.echo(f"synced: {new} new hit(s) pushed to the fleet store")
