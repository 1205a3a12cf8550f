"""``kassist doctor``: what this machine lets kassist do, and how to fix what it does not."""

from __future__ import annotations

import json

import click

from assistant.cli.common import config_from_flags
from assistant.doctor import run_checks

_MARK = {"ok": "ok", "missing": "--", "error": "!!"}


@click.command()
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--model", default=None, metavar="PATH", help="Check this GGUF instead of the configured one."
)
@click.option("--backend", default=None, help="Check this LLM backend.")
def doctor(fmt: str, model: str | None, backend: str | None) -> None:
    """Check root, /dev/kmsg, bpftrace, drgn, /proc/kcore, BTF, /dev/kvm, the model and the agent.

    Exits 0 when everything could be inspected, whatever was found; 1 when a check itself failed.
    """
    cfg = config_from_flags(model, backend)
    checks = run_checks(cfg)
    if fmt == "json":
        click.echo(
            json.dumps(
                {"schema": "kassist.doctor/1", "checks": [c.to_dict() for c in checks]}, indent=2
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
    if any(c.status == "error" for c in checks):
        raise click.exceptions.Exit(1)
