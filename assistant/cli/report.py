"""``kassist report``: draft a Markdown bug report for a crash in a log, or a stored one."""

from __future__ import annotations

import os
import re
import sys

import click

from actions.text import printable_lines
from assistant.cli.common import (
    backend_or_none,
    config_from_flags,
    llm_options,
    notice,
    stdout_is_tty,
)
from assistant.cli.crashes import open_existing, store_options
from assistant.cli.triage import stdin_notice
from assistant.drafters.bug_report import draft_report
from assistant.errors import KassistError
from assistant.triage import Crash, triage_path
from assistant.triage.stores import stored_crash

#: What names a stored crash rather than a file: a signature or a prefix of one (hex).
_SIGNATURE = re.compile(r"[0-9a-f]{4,16}")


def _stored(signature: str, db: str | None, url: str | None) -> Crash:
    store = open_existing(db, url)
    try:
        return stored_crash(store, signature)
    finally:
        store.close()


@click.command()
@click.argument("path", metavar="[FILE|-|SIGNATURE]", required=False)
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
@click.option("--vmcore", type=click.Path(), help="A vmcore: its stack, locals, blocked tasks.")
@click.option("--vmlinux", type=click.Path(), help="The vmcore's vmlinux with debug info.")
@click.option("--debug-dir", type=click.Path(), help="A /usr/lib/debug tree for the vmcore.")
@store_options
@llm_options
def report(
    path: str | None,
    index: int,
    output: str | None,
    model: str | None,
    backend: str | None,
    max_tokens: int | None,
    no_llm: bool,
    no_log: bool,
    vmcore: str | None = None,
    vmlinux: str | None = None,
    debug_dir: str | None = None,
    db: str | None = None,
    url: str | None = None,
) -> None:
    """Draft a bug report: the crash's facts, severity, next steps, maintainers and
    documentation, and a "What happened" paragraph from the local model whose every
    sentence is checked against the report (a failing one is dropped, with one line).

    The crash is the first (or --index) of a log FILE or - (stdin), or a stored one named
    by its SIGNATURE (a unique prefix is enough; see `kassist crashes list`). On a
    terminal each section appears as soon as it is ready.
    """
    if path is None and vmcore is None:
        raise KassistError(
            "no input given", "name a log file, a stored crash's signature, or --vmcore FILE", 2
        )
    dump = None
    explained = None
    if vmcore is not None:
        from assistant.rootcause.explain import explain_target, explanation_markdown
        from assistant.vmcore import analyse_target, open_target, triage_analysis

        target = open_target(vmcore, vmlinux, debug_dir, progress=notice)
        dump = triage_analysis(analyse_target(target))
        first = dump.crashes[0] if dump.crashes else None  # rootcause: the explanation
        explained = explanation_markdown(
            explain_target(target, first, first.report if first else None)
        )
    if path is not None and path != "-" and not os.path.exists(path) and _SIGNATURE.fullmatch(path):
        crash = _stored(path, db, url)
    else:
        if path is not None:
            stdin_notice(path)
        result = triage_path(path) if path is not None else dump
        assert result is not None
        name = path or vmcore
        if len(result.crashes) < index:
            found = len(result.crashes)
            what = "no kernel crash found" if not found else f"only {found} crash(es) found"
            raise KassistError(
                f"{name}: {what}",
                "give a log that holds a crash report (kassist triage shows what was found)",
            )
        crash = result.crashes[index - 1]
    cfg = config_from_flags(model, backend, max_tokens, no_log)
    llm = backend_or_none(cfg, no_llm)
    if llm is None and not no_llm and cfg.llm.backend != "none":
        pass  # backend_or_none already said why
    elif llm is None:
        notice("no model used (--no-llm): 'What happened' is built from the facts")
    streaming = stdout_is_tty()

    # The report quotes the log: its escapes are shown (\x1b), never sent to a terminal,
    # nor written raw to a file someone will cat.
    def write(piece: str) -> None:
        if streaming:
            sys.stdout.write(printable_lines(piece))
            sys.stdout.flush()

    # The paragraph's prompt sets its own budget; --max-tokens overrides it.
    drafted = draft_report(
        crash, llm, max_tokens, write, dump.vmcore if dump else None, explanation=explained
    )
    if not streaming:
        sys.stdout.write(printable_lines(drafted.markdown))
    if output:
        try:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(printable_lines(drafted.markdown))
        except OSError as exc:
            raise KassistError(
                f"cannot write {output}: {exc.strerror}", "choose another path"
            ) from None
