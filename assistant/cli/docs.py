"""``kassist docs sysctl|undocumented|host|crash``: documentation drafts from the kernel's sources.

Every page is built from facts with their sources (the knowledge base, /proc/sys,
sysctl.d, the agent's policy, the crash store). The model's explanatory
paragraph is shown only when the shared draft checker passes it; this build
ships the deterministic pages.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from assistant.cli.common import (
    LlmFlags,
    backend_or_none,
    format_option,
    llm_options,
    notice,
)
from assistant.docs import facts as facts_mod
from assistant.docs import pages
from assistant.docs.undocumented import draft_stub, undocumented
from assistant.errors import InputError, KassistError
from assistant.knowledge import KnowledgeBase, open_default, try_open
from assistant.knowledge.base import BUILD_HINT, running_release
from probes.stats import sysctl_names

_NO_KB = (
    f"kernel knowledge base not built: documentation and ctl_table facts left out ({BUILD_HINT})"
)


def _kb_or_notice() -> KnowledgeBase | None:
    kb = try_open()
    if kb is None:
        notice(_NO_KB)
    return kb


@click.group()
def docs() -> None:
    """Documentation drafts grounded in the kernel's own sources, each paragraph cited."""


@docs.command()
@click.argument("keys", nargs=-1, required=True)
@format_option(*sorted(pages.RENDERERS), default="markdown")
@llm_options
def sysctl(
    keys: tuple[str, ...],
    fmt: str,
    llm_flags: LlmFlags,
) -> None:
    """One page per sysctl KEY: what it does, type and bounds, value here, who sets it, the rule.

    With a model, a paragraph condensing the key's documentation comes first, shown only
    when the shared checker accepts it (else one notice line says it was withheld).
    """
    kb = _kb_or_notice()
    release = running_release()
    changes, why = facts_mod.agent_changes()
    gathered = [facts_mod.gather(kb, key, release, changes) for key in keys]
    for facts in gathered:  # every key is checked before any page is printed
        if (wrong := facts_mod.unknown_key(facts, kb)) is not None:
            raise InputError(wrong)
    if changes is None:
        notice(f"no history of kassist's changes: {why}")
    llm = backend_or_none(llm_flags.config(), llm_flags.no_llm)
    rendered = []
    for key, facts in zip(keys, gathered, strict=True):
        paragraph = None
        if llm is not None:
            from assistant.docs.explain import model_paragraph

            paragraph = model_paragraph(facts, llm)
            if paragraph.notice:
                notice(f"{key}: {paragraph.notice}")
        rendered.append(pages.RENDERERS[fmt](facts, paragraph))
    if fmt == "json":
        click.echo("[" + ",\n".join(rendered) + "]")
    else:
        click.echo("\n".join(rendered), nl=False)


@docs.command(name="undocumented")
@click.option("--draft", is_flag=True, help="An rst stub for each, marked as a draft.")
@format_option("text", "json")
def undocumented_(draft: bool, fmt: str) -> None:
    """This machine's sysctls that no documentation section describes, grouped by table."""
    kb = open_default()
    release = running_release()
    items = undocumented(kb, sysctl_names())
    if fmt == "json":
        click.echo(json.dumps([
            {"name": u.name, "group": u.group,
             "source": f"{u.definition.source}:{u.definition.line}" if u.definition else None}
            for u in items
        ], indent=2))  # fmt: skip
        return
    click.echo(
        f"{len(items)} sysctls of this machine ({release}) that no section of linux"
        f" {kb.kernel_version}'s documentation describes (source: the knowledge base; /proc/sys)"
    )
    group = None
    for item in items:
        if item.group != group:
            group = item.group
            click.echo(f"\n{group}")
        where = (
            f"{item.definition.source}:{item.definition.line}"
            if item.definition
            else f"not in linux {kb.kernel_version}"
        )
        click.echo(f"  {item.name:<50} {where}")
        if draft:
            click.echo("")
            click.echo(
                "\n".join("    " + line for line in draft_stub(item, kb, release).splitlines())
            )
            click.echo("")


@docs.command()
@click.option("--all", "show_all", is_flag=True, help="Also keys set by no file (who: unknown).")
def host(show_all: bool) -> None:
    """A host note: boot configuration against the live values (every drift), then every
    sysctl that differs from the kernel's default, and who set it."""
    from assistant.docs.host import note
    from assistant.sysctl_d import effective, read_settings
    from assistant.tuning.bounds import agent_policy

    kb = open_default()
    changes, why = facts_mod.agent_changes()
    if changes is None:
        notice(f"kassist changesets not consulted: {why}")
    policy, why = agent_policy()
    if policy is None:
        notice(f"{why}: the built-in security baseline flags the drifts")
        policy, _ = agent_policy("")
    boot = effective(read_settings(), sysctl_names())
    baseline = policy

    def security(key: str) -> bool:
        return baseline is not None and baseline.in_baseline(key, ".")

    text = note(
        running_release(), kb.kernel_version, boot, kb.sysctls(), facts_mod.proc_value,
        security, changes or {}, show_all,
    )  # fmt: skip
    click.echo(text, nl=False)


@docs.command()
@click.argument("signature")
@click.option("--db", metavar="PATH", help="The crash store (default: the user's).")
def crash(signature: str, db: str | None) -> None:
    """An incident note for a crash SIGNATURE of the store (a unique prefix is enough)."""
    from assistant.triage.store import CrashStore, default_path

    path = Path(db) if db else default_path()
    if not path.exists():
        raise KassistError(
            f"no crash store at {path}", "record crashes with `kassist triage --store LOG`"
        )
    with CrashStore(path) as store:
        summary, hits = store.get(signature)
    kb = _kb_or_notice()

    def when(ts: float) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))

    click.echo(f"# Incident: {summary.title}\n")
    click.echo(
        f"Type {summary.type}; seen {summary.count} time(s), first {when(summary.first_seen)},"
        f" last {when(summary.last_seen)}; hosts {', '.join(summary.hosts) or '?'};"
        f" kernels {', '.join(summary.releases) or '?'}.\n\n*Source: the crash store {path},"
        f" signature {summary.signature}*\n"
    )
    if summary.frame or summary.guilty_file:
        click.echo(f"Crashing frame {summary.frame or '?'} in {summary.guilty_file or '?'}.\n")
        click.echo(f"*Source: kassist triage of the stored report ({len(hits)} hit(s))*\n")
    if kb is not None and summary.guilty_file:
        to, cc = kb.recipients(summary.guilty_file)
        names = ", ".join(s.name for s in kb.maintainers(summary.guilty_file)[:3])
        click.echo(f"## Maintainers\n\nSubsystems: {names}.\n\nTo: {', '.join(to) or '(none)'}\n"
                   f"Cc: {', '.join(cc) or '(none)'}\n")  # fmt: skip
        click.echo(f"*Source: MAINTAINERS of linux {kb.kernel_version} (as get_maintainer.pl)*\n")
    changes, why = facts_mod.agent_changes()
    if changes is None:
        notice(f"kassist's changes around the crash not shown: {why}")
    else:
        day = 86400.0
        near = sorted(
            {
                (c.changeset, key, c.old, c.new, c.state)
                for key, items in changes.items()
                for c in items
                if summary.first_seen - day <= c.created <= summary.last_seen + day
            }
        )
        click.echo("## kassist's changes within a day of it\n")
        for cs, key, old, new, state in near:
            click.echo(f"- changeset {cs} ({state}): {key} {old} -> {new}")
        if not near:
            click.echo("None.")
        click.echo("\n*Source: the agent's journal (kassist agent history)*\n")
    if kb is not None:
        hits_doc = kb.search(f"{summary.type.replace('-', ' ')} {summary.frame or ''}", limit=3)
        if hits_doc:
            click.echo("## Documentation\n")
            for h in hits_doc:
                click.echo(f"- {h.title}: {h.cite}")
            click.echo(f"\n*Source: the documentation of linux {kb.kernel_version}*\n")
    click.echo(
        f"## Bug report\n\nDraft it with `kassist report` on the stored report"
        f" (`kassist crashes show {summary.signature} --reports 1` prints it).\n"
    )
