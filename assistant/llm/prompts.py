"""Load prompt templates from the ``prompts`` package (or a user override directory).

A prompt file is a Jinja2 template under a TOML front matter fenced by ``+++``
lines. Its ``system`` and ``user`` blocks become the chat messages, with an optional
few-shot example between them (``example_user``, ``example_assistant``); a
structured step also has a ``retry`` block, sent back with the validation error
when an answer does not fit the step's schema.
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
from assistant.llm.base import Message, Role

FENCE = "+++"
#: Template blocks that become chat messages, in order, with their roles.
MESSAGE_BLOCKS: tuple[tuple[str, Role], ...] = (
    ("system", "system"),
    ("example_user", "user"),
    ("example_assistant", "assistant"),
    ("example2_user", "user"),
    ("example2_assistant", "assistant"),
    ("user", "user"),
)
SUFFIX = ".j2"


@dataclass(frozen=True)
class Prompt:
    """A prompt template and its front matter.

    :param name: the prompt's name (its file name without ``.j2``).
    :param meta: the front matter (name, version, purpose, kind, evidence, output schema...).
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

    @property
    def label(self) -> str:
        """Return ``name@version``, the form the LLM log records."""
        return f"{self.name}@{self.version}"

    @property
    def structured(self) -> bool:
        """Tell whether this prompt is a structured step (its answer is a JSON object)."""
        return self.meta.get("kind") == "structured"

    def _template(self) -> jinja2.Template:
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
        try:
            return env.from_string(self.body)
        except jinja2.TemplateSyntaxError as exc:
            raise KassistError(
                f"prompt {self.origin}: line {exc.lineno}: {exc.message}", "fix the template"
            ) from None

    def render_block(self, block_name: str, **context: Any) -> str:
        """Render one block of the template (``system``, ``user``, ``retry``...).

        :raises KassistError: the template has no such block, or uses an undefined name.
        """
        template = self._template()
        block = template.blocks.get(block_name)
        if block is None:
            raise KassistError(f"prompt {self.origin} has no {block_name!r} block", "add it")
        try:
            return "".join(block(template.new_context(context))).strip()
        except jinja2.UndefinedError as exc:
            raise KassistError(f"prompt {self.origin}: {exc.message}", "fix the template") from None

    def render(self, **context: Any) -> list[Message]:
        """Render the template's blocks into chat messages: ``system``, then a few-shot
        example (``example_user`` and ``example_assistant``) where the template has one,
        then ``user``."""
        blocks = self._template().blocks
        return [
            Message(role=role, content=self.render_block(block, **context))
            for block, role in MESSAGE_BLOCKS
            if block in blocks
        ]


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


def shipped_names() -> list[str]:
    """Return the names of the prompts shipped in the ``prompts`` package, sorted."""
    return sorted(
        entry.name[: -len(SUFFIX)]
        for entry in resources.files("prompts").iterdir()
        if entry.name.endswith(SUFFIX) and entry.is_file()
    )


def prompt_names() -> list[str]:
    """Return every prompt name: shipped ones and the user's own, sorted."""
    names = set(shipped_names())
    user = override_dir()
    if user.is_dir():
        names.update(p.name[: -len(SUFFIX)] for p in user.glob(f"*{SUFFIX}") if p.is_file())
    return sorted(names)


def load_prompt(name: str) -> Prompt:
    """Load a prompt by name: the user's override if there is one, else the shipped file.

    :raises KassistError: no prompt of that name.
    """
    user_file = override_dir() / f"{name}{SUFFIX}"
    if user_file.is_file():
        return parse_prompt(user_file.read_text(encoding="utf-8"), name, str(user_file))
    shipped = resources.files("prompts").joinpath(f"{name}{SUFFIX}")
    if "/" in name or not shipped.is_file():
        raise KassistError(f"no prompt named {name!r}", "see `kassist prompts list`")
    return parse_prompt(shipped.read_text(encoding="utf-8"), name, f"prompts/{name}{SUFFIX}")
