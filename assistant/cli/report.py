"""``kassist report``: draft a Markdown bug report for the first crash in a log."""

from __future__ import annotations

import sys

import click

from assistant.cli.common import (
    backend_or_none,
    config_from_flags,
    llm_options,
    notice,
    stdout_is_tty,
)
from assistant.drafters.bug_report import draft_report
from assistant.errors import KassistError
from assistant.triage import triage_path


@click.command()
@click.argument("path", metavar="FILE|-")
@click.option(
    "--index",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="Which crash (1: the first).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    help="Write the report here too.",
)
@llm_options
def report(
    path: str,
    index: int,
    output: str | None,
    model: str | None,
    backend: str | None,
    max_tokens: int | None,
    no_llm: bool,
) -> None:
    """Draft a bug report: facts from triage, a summary from the local model.

    Tokens stream to the terminal as the model writes them.
    """
    result = triage_path(path)
    if len(result.crashes) < index:
        found = len(result.crashes)
        raise KassistError(
            f"{path}: {'no kernel crash found' if not found else f'only {found} crash(es) found'}",
            "give a log that holds a crash report (kassist triage shows what was found)",
        )
    crash = result.crashes[index - 1]
    cfg = config_from_flags(model, backend, max_tokens)
    llm = backend_or_none(cfg, no_llm)
    if llm is None and not no_llm and cfg.llm.backend != "none":
        pass  # backend_or_none already said why
    elif llm is None:
        notice("no model used (--no-llm): the report has no summary")
    streaming = stdout_is_tty()

    def write(piece: str) -> None:
        if streaming:
            sys.stdout.write(piece)
            sys.stdout.flush()

    drafted = draft_report(crash, llm, cfg.llm.max_tokens, write)
    if not streaming:
        sys.stdout.write(drafted.markdown)
    if output:
        try:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(drafted.markdown)
        except OSError as exc:
            raise KassistError(
                f"cannot write {output}: {exc.strerror}", "choose another path"
            ) from None
