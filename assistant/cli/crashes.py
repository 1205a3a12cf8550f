"""``kassist crashes list|show SIG|similar SIG|sync``: browse the crash store (``kassist
triage --store``, ``kassist watch``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click

from assistant.errors import KassistError
from assistant.triage.render import crash_text, crashes_text, similar_text
from assistant.triage.store import default_path
from assistant.triage.store_model import Store
from assistant.triage.stores import open_store


def open_existing(db: str | None, url: str | None = None) -> Store:
    """Open the crash store to read it: the fleet's at ``url``, else the file ``db`` (the
    default one) when it exists.

    :raises KassistError: there is no store there.
    """
    if url:
        return open_store(url)
    path = Path(db) if db else default_path()
    if not path.exists():
        raise KassistError(
            f"no crash store at {path}", "record crashes with `kassist triage --store LOG`"
        )
    return open_store(path)


F = TypeVar("F", bound=Callable[..., Any])


def store_options(func: F) -> F:
    """Add ``--db PATH`` and ``--store URL``: which crash store to read."""
    func = click.option(
        "--store", "url", metavar="URL", default=None,
        help="The fleet store (postgresql://...) instead of --db.",
    )(func)  # fmt: skip
    return click.option(
        "--db",
        metavar="PATH",
        help="The store's file (default: $XDG_STATE_HOME/kassist/crashes.db).",
    )(func)


_DB = store_options
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
    store = open_existing(db, url)
    try:
        rows = store.signatures()
    finally:
        store.close()
    if fmt == "json":
        click.echo(json.dumps([asdict(r) for r in rows], indent=2))
        return
    click.echo(crashes_text(rows, fleet=bool(url)))


@crashes.command()
@click.argument("signature")
@_DB
@_FORMAT
@click.option("--reports", type=click.IntRange(0), default=1, show_default=True,
              help="How many raw reports to print (newest first).")  # fmt: skip
def show(signature: str, db: str | None, url: str | None, fmt: str, reports: int) -> None:
    """Show one crash SIGNATURE (a unique prefix is enough): when the kernel crashed, when
    and where it was stored, and its newest raw reports."""
    store = open_existing(db, url)
    try:
        summary, hits = store.get(signature)
    finally:
        store.close()
    if fmt == "json":
        doc = asdict(summary)
        doc["hits"] = [asdict(h) for h in hits]
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(crash_text(summary, hits, reports))


@crashes.command()
@click.argument("signature")
@_DB
@_FORMAT
def similar(signature: str, db: str | None, url: str | None, fmt: str) -> None:
    """Show the signatures probably the same bug as SIGNATURE (a unique prefix is enough),
    each with its evidence: call stacks alike, the same allocation and free stacks, the
    same guilty file. A link, never a merge: each keeps its own signature."""
    from assistant.triage.stores import similar as find_similar

    store = open_existing(db, url)
    try:
        summary, linked = find_similar(store, signature)
    finally:
        store.close()
    if fmt == "json":
        doc = {
            "signature": summary.signature,
            "title": summary.title,
            "same_bug": [
                {**asdict(row), "evidence": ev.reasons, "distance": ev.distance}
                for row, ev in linked
            ],
        }
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(similar_text(summary, linked))


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
    local = open_existing(db)
    new = 0
    try:
        with PgCrashStore(url) as fleet:
            for summary in local.signatures():
                _, hits = local.get(summary.signature)
                new += fleet.import_hits(summary, hits)
    finally:
        local.close()
    click.echo(f"synced: {new} new hit(s) pushed to the fleet store")
