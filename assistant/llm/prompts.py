"""Load prompt templates from the ``prompts`` package (or a user override directory).

A prompt file is a Jinja2 template under a TOML front matter fenced by ``+++``
lines. Its ``system`` and ``user`` blocks become the two chat messages.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from assistant.config import user_config_dir
from assistant.errors import KassistError
from assistant.llm.base import Message

FENCE = "+++"


@dataclass(frozen=True)
class Prompt:
    """A prompt template and its front matter.

    :param name: the prompt's name (its file name without ``.j2``).
    :param meta: the front matter (name, version, purpose, kind, evidence, schema...).
    :param body: the Jinja2 template text.
    :param origin: where it was loaded from.
    """

    name: str
    meta: dict[str, Any]
    body: str
    origin: str

    @property
    def version(self) -> int:
        """Return the prompt's version number from its front matter."""
        return int(self.meta.get("version", 0))

    def render(self, **context: Any) -> list[Message]:
        """Render the template's ``system`` and ``user`` blocks into chat messages."""
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        template = env.from_string(self.body)
        ctx = template.new_context(context)
        messages: list[Message] = []
        for role in ("system", "user"):
            block = template.blocks.get(role)
            if block is not None:
                messages.append(Message(role=role, content="".join(block(ctx)).strip()))
        return messages


def parse_prompt(text: str, name: str, origin: str) -> Prompt:
    """Split a prompt file into its front matter and body.

    :raises KassistError: the front matter is missing or not TOML.
    """
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].strip() != FENCE:
        raise KassistError(f"prompt {origin}: no '+++' front matter", "start the file with +++")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == FENCE)
    except StopIteration:
        raise KassistError(f"prompt {origin}: front matter not closed", "add a +++ line") from None
    try:
        meta = tomllib.loads("".join(lines[1:end]))
    except tomllib.TOMLDecodeError as exc:
        raise KassistError(f"prompt {origin}: bad front matter ({exc})", "fix the TOML") from None
    return Prompt(name=name, meta=meta, body="".join(lines[end + 1 :]), origin=origin)


def override_dir() -> Path:
    """Return the directory whose ``NAME.j2`` files replace the shipped prompts."""
    return user_config_dir() / "prompts"


def load_prompt(name: str) -> Prompt:
    """Load a prompt by name: the user's override if there is one, else the shipped file.

    :raises KassistError: no prompt of that name.
    """
    user_file = override_dir() / f"{name}.j2"
    if user_file.is_file():
        return parse_prompt(user_file.read_text(encoding="utf-8"), name, str(user_file))
    shipped = resources.files("prompts").joinpath(f"{name}.j2")
    if not shipped.is_file():
        raise KassistError(f"no prompt named {name!r}", "see `kassist prompts list`")
    return parse_prompt(shipped.read_text(encoding="utf-8"), name, f"prompts/{name}.j2")
