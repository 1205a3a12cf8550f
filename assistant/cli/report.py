"""``kassist report``: draft a Markdown bug report for a crash in a log, or a stored one."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING

import click

from actions.text import printable, printable_lines
from assistant.cli.common import (
    LlmFlags,
    backend_or_none,
    debug_options,
    llm_options,
    notice,
    stdout_is_tty,
)
from assistant.cli.crashes import open_existing, store_options
from assistant.cli.triage import stdin_notice
from assistant.drafters.bug_report import draft_report
from assistant.errors import KassistError
from assistant.triage import Crash, TriageResult, triage_path
from assistant.triage.stores import stored_crash

if TYPE_CHECKING:
    from probes.drgn.dwarf import DebugFiles

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
@debug_options
@store_options
@llm_options
def report(
    path: str | None,
    index: int,
    output: str | None,
    llm_flags: LlmFlags,
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
    dump, explained = _dump(vmcore, vmlinux, debug_dir) if vmcore is not None else (None, None)
    crash = _crash(path, index, db, url, dump, vmcore)
    debug = _log_debug(crash, vmlinux, debug_dir) if vmcore is None else None
    cfg = llm_flags.config()
    llm = backend_or_none(cfg, llm_flags.no_llm)
    if llm is None and not llm_flags.no_llm and cfg.llm.backend != "none":
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
        crash,
        llm,
        llm_flags.max_tokens,
        write,
        dump.vmcore if dump else None,
        explanation=explained,
        debug=debug,
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


def _dump(vmcore: str, vmlinux: str | None, debug_dir: str | None) -> tuple[TriageResult, str]:
    # The vmcore's triage and rootcause's explanation of its first crash (Markdown).
    from assistant.rootcause.explain import explain_target, explanation_markdown
    from assistant.vmcore import analyse_target, open_target, triage_analysis

    target = open_target(vmcore, vmlinux, debug_dir, progress=notice)
    dump = triage_analysis(analyse_target(target))
    first = dump.crashes[0] if dump.crashes else None
    return dump, explanation_markdown(
        explain_target(target, first, first.report if first else None)
    )


def _crash(
    path: str | None,
    index: int,
    db: str | None,
    url: str | None,
    dump: TriageResult | None,
    vmcore: str | None,
) -> Crash:
    # The crash to report: a stored one named by its signature, else the index-th of the
    # log (or of the dump).
    if path is not None and path != "-" and not os.path.exists(path) and _SIGNATURE.fullmatch(path):
        return _stored(path, db, url)
    if path is not None:
        stdin_notice(path)
    result = triage_path(path) if path is not None else dump
    assert result is not None
    if len(result.crashes) < index:
        found = len(result.crashes)
        what = "no kernel crash found" if not found else f"only {found} crash(es) found"
        raise KassistError(
            f"{path or vmcore}: {what}",
            "give a log that holds a crash report (kassist triage shows what was found)",
        )
    return result.crashes[index - 1]


def _log_debug(crash: Crash, vmlinux: str | None, debug_dir: str | None) -> DebugFiles | None:
    # A log's crash with the kernel's debug files: file:line, the faulting member.
    if vmlinux is None and debug_dir is None:
        return None
    from assistant.rootcause.report import log_context

    context = log_context([crash], vmlinux, debug_dir, with_kb=False)
    for note in context.notes:
        notice(printable(note))
    return context.debug
