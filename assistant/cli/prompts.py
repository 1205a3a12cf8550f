"""``kassist prompts list|show NAME``: read the prompt templates (and where to override them)."""

from __future__ import annotations

import json

import click

from assistant.errors import KassistError
from assistant.llm.prompts import load_prompt, override_dir, prompt_names
from assistant.llm.schemas import output_model, step_schema


@click.group()
def prompts() -> None:
    """List or show the prompt templates; a file NAME.j2 in the override dir replaces one."""


@prompts.command("list")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def list_cmd(fmt: str) -> None:
    """List every prompt: name, version, kind, where it comes from, and its purpose."""
    rows = []
    for name in prompt_names():
        p = load_prompt(name)
        rows.append(
            {
                "name": p.name,
                "version": p.version,
                "kind": p.meta.get("kind", "text"),
                "origin": p.origin,
                "purpose": p.meta.get("purpose", ""),
            }
        )
    if fmt == "json":
        click.echo(json.dumps({"override_dir": str(override_dir()), "prompts": rows}, indent=2))
        return
    for r in rows:
        click.echo(f"{r['name']:<22} v{r['version']:<3} {r['kind']:<11} {r['purpose']}")
        if not str(r["origin"]).startswith("prompts/"):
            click.echo(f"{'':<22} overridden by {r['origin']}")
    click.echo(f"(override a prompt by writing {override_dir()}/NAME.j2)")


@prompts.command("show")
@click.argument("name")
@click.option("--schema", "schema_only", is_flag=True, help="Show only the output JSON schema.")
def show_cmd(name: str, schema_only: bool) -> None:
    """Show a prompt's file (front matter and template) and, for a structured step, its schema."""
    p = load_prompt(name)
    schema = step_schema(output_model(p.meta, p.name)) if p.structured else None
    if schema_only:
        if schema is None:
            raise KassistError(f"prompt {name} is not a structured step", "it has no schema")
        click.echo(json.dumps(schema, indent=2))
        return
    click.echo(f"# {p.origin}")
    click.echo("+++")
    click.echo(_front_matter(p.meta), nl=False)
    click.echo("+++")
    click.echo(p.body, nl=False)
    if schema is not None:
        click.echo("\n# output schema (validated with pydantic; the answer is refused otherwise)")
        click.echo(json.dumps(schema, indent=2))


def _front_matter(meta: dict[str, object]) -> str:
    lines = []
    for key, value in meta.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"
