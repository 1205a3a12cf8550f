"""``kassist doctor``: what this machine lets kassist do, and how to fix what it does not."""

from __future__ import annotations

import json

import click

from assistant.cli.common import config_from_flags, format_option, notice
from assistant.doctor import recheck, run_checks, run_fixes

_MARK = {"ok": "ok", "missing": "--", "error": "!!"}


@click.command()
@format_option("text", "json")
@click.option(
    "--model", default=None, metavar="PATH", help="Check this GGUF instead of the configured one."
)
@click.option("--backend", default=None, help="Check this LLM backend.")
@click.option(
    "--fix",
    is_flag=True,
    help="Do the safe fixes it knows (as root: mount tracefs and bpffs), each said in one line.",
)
def doctor(fmt: str, model: str | None, backend: str | None, fix: bool = False) -> None:
    """Check root, /dev/kmsg, eBPF, drgn, BTF, the model, the knowledge base and the agent.

    Exits 0 when everything could be inspected, whatever was found; 1 when a check itself failed
    (or, with --fix, a fix failed).
    """
    cfg = config_from_flags(model, backend)
    checks = run_checks(cfg)
    fixes = run_fixes(checks) if fix else []
    for f in fixes:
        notice(f.line())
    checks = recheck(cfg, checks, {f.name for f in fixes if f.done})
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "schema": "kassist.doctor/1",
                    "checks": [c.to_dict() for c in checks],
                    **({"fixes": [f.to_dict() for f in fixes]} if fix else {}),
                },
                indent=2,
            )
        )
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            line = f"{_MARK[c.status]:>2}  {c.name:<{width}}  {c.detail}"
            if c.hint and c.status != "ok":
                line += f"\n    {'':<{width}}  fix: {c.hint}"
            click.echo(line)
        if cfg.sources:
            click.echo(f"config: {', '.join(cfg.sources)}")
    if fix and not fixes:
        notice("--fix: nothing here that doctor can fix safely")
    if any(c.status == "error" for c in checks) or any(not f.done for f in fixes):
        raise click.exceptions.Exit(1)
