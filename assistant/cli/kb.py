"""``kassist kb build|status|search``: the offline kernel knowledge base."""

from __future__ import annotations

import json
import textwrap
from dataclasses import asdict
from pathlib import Path

import click

from assistant.cli.common import format_option
from assistant.knowledge import base
from assistant.knowledge.model import KnowledgeUnavailable
from assistant.knowledge.sources import installed_sources


@click.group()
def kb() -> None:
    """The kernel's own documentation, MAINTAINERS and sysctls, indexed offline."""


@kb.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write it (default: shared cache as root, else yours).")  # fmt: skip
@click.option("--force", is_flag=True, help="Rebuild even if it is already built.")
def build(output: Path | None, force: bool) -> None:
    """Build it from linux-doc-6.1 and linux-source-6.1 (a minute or two: 140 MB of sources)."""
    from assistant.knowledge.build import build as run_build
    from assistant.knowledge.index import ensure

    sources = installed_sources()
    target = output or base.default_dir() / base.file_name(sources.source_version)

    def progress(line: str) -> None:
        click.echo(f"kb: {line}", err=True)

    if target.exists() and not force:
        click.echo(f"already built: {target} (--force rebuilds it)")
    else:
        stats = run_build(target, sources, progress=progress)
        click.echo(
            f"built {target}: kernel {stats.kernel_version}, {stats.doc_sections} documentation"
            f" sections, {stats.maintainer_sections} MAINTAINERS sections, {stats.sysctls} sysctls"
        )
    with base.KnowledgeBase(target) as knowledge:
        click.echo(ensure(knowledge, progress=progress))


@kb.command()
@format_option("text", "json")
def status(fmt: str) -> None:
    """Say what it holds, which kernel it describes, and whether that is the running one."""
    knowledge = base.open_default()
    release = base.running_release()
    doc = {
        "path": str(knowledge.path),
        "kernel_version": knowledge.kernel_version,
        "running_release": release,
        "same_series": base.same_series(knowledge.kernel_version, release),
        "meta": knowledge.meta,
        "counts": knowledge.counts(),
    }
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2))
        return
    meta = knowledge.meta
    click.echo(f"knowledge base  {knowledge.path}")
    source = meta.get("source_package_version") or "?"
    docs = meta.get("doc_package_version") or "?"
    click.echo(
        f"kernel          {knowledge.kernel_version} (linux-source-6.1 {source},"
        f" linux-doc-6.1 {docs}; built {meta.get('built_at', '?')})"
    )
    for label, count in knowledge.counts().items():
        click.echo(f"  {label:<26} {count}")
    if doc["same_series"]:
        click.echo(f"running kernel  {release}: the same series")
    else:
        click.echo(
            f"running kernel  {release}: differs from {knowledge.kernel_version}; documentation,"
            " maintainers and sysctl definitions describe "
            f"{knowledge.kernel_version}, not the running kernel"
        )


@kb.command()
@click.argument("query", nargs=-1, required=True)
@click.option("--limit", "-n", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--prefix", default=None, help="Only documentation paths starting with this.")
@format_option("text", "json")
def search(query: tuple[str, ...], limit: int, prefix: str | None, fmt: str) -> None:
    """Search the documentation (BM25); each hit cites Documentation/path.rst#anchor."""
    knowledge = base.open_default()
    hits = knowledge.search(" ".join(query), limit=limit, prefix=prefix)
    if fmt == "json":
        click.echo(json.dumps([{**asdict(h), "cite": h.cite} for h in hits], indent=2))
        return
    if not hits:
        click.echo("no documentation section matches")
        return
    for hit in hits:
        click.echo(f"{hit.cite}  ({hit.score:.1f})  {hit.title}")
        snippet = " ".join(hit.text.split())[:300]
        click.echo(textwrap.indent(textwrap.fill(snippet, 76), "    "))


@kb.command()
@click.argument("path")
@format_option("text", "json")
def maintainers(path: str, fmt: str) -> None:
    """Who maintains a file of the tree (as get_maintainer.pl --no-git -f PATH answers)."""
    knowledge = base.open_default()
    sections = knowledge.maintainers(path)
    to, cc = knowledge.recipients(path)
    if fmt == "json":
        doc = {"path": path, "in_tree": knowledge.in_tree(path), "to": to, "cc": cc,
               "subsystems": [asdict(s) for s in sections]}  # fmt: skip
        click.echo(json.dumps(doc, indent=2))
        return
    if not knowledge.in_tree(path):
        click.echo(
            f"note: {path} is not in the {knowledge.kernel_version} tree; matched by path only"
        )
    for section in sections:
        click.echo(f"{section.name}  [{section.status or '?'}]")
    click.echo("To: " + ", ".join(to) if to else "To: (none)")
    click.echo("Cc: " + ", ".join(cc) if cc else "Cc: (none)")


@kb.command()
@click.argument("name")
@format_option("text", "json")
def sysctl(name: str, fmt: str) -> None:
    """Show one sysctl's ctl_table definition and its documentation section."""
    knowledge = base.open_default()
    found = knowledge.sysctl(name)
    if found is None:
        raise KnowledgeUnavailable(
            f"{name} is not a sysctl the {knowledge.kernel_version} sources define at a known path",
            "check the name (`sysctl -a`), or it may come from a table kassist cannot resolve",
        )
    if fmt == "json":
        doc = asdict(found)
        doc["doc_cite"] = found.doc.cite if found.doc else None
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"{found.name}  ({found.source}:{found.line}, table {found.table})")
    click.echo(f"  handler  {found.handler or '?'}")
    click.echo(f"  bounds   {_bound(found.minimum)} .. {_bound(found.maximum)}")
    click.echo(f"  default  {found.default if found.default is not None else '? (not a constant)'}")
    click.echo(f"  doc      {found.doc.cite if found.doc else 'not documented upstream'}")


def _bound(value: int | None) -> str:
    return "?" if value is None else str(value)
