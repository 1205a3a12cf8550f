"""``kassist triage``: find and describe the kernel crashes in one or more logs."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import click

from actions.text import printable
from assistant.cli.common import debug_options, format_option, notice
from assistant.errors import KassistError
from assistant.triage import TriageResult, triage_path
from assistant.triage.render import triage_text

if TYPE_CHECKING:
    from assistant.rootcause.report import RootcauseContext


def _record(result: TriageResult) -> None:
    from assistant.triage.store import CrashStore

    with CrashStore() as db:
        new = db.record(result.crashes, result.source)
    notice(f"{printable(result.source)}: {new} new crash report(s) recorded in {db.path}")


def stdin_notice(path: str) -> None:
    """Say that ``-`` reads standard input, when it is a terminal (it would wait silently)."""
    if path == "-" and sys.stdin.isatty():
        notice("reading the log from standard input (paste it, then Ctrl-D; Ctrl-C to quit)")


@click.command()
@click.argument("inputs", nargs=-1, metavar="FILE|-...")
@format_option(
    "text", "json", "jsonl", text="json: one object; jsonl: one object per input, in input order."
)
@click.option("--no-llm", is_flag=True, help="Accepted for symmetry: triage never uses a model.")
@click.option(
    "--store",
    is_flag=True,
    help="Record the crashes found in the crash store (see `kassist crashes`).",
)
@click.option("--vmcore", type=click.Path(), help="Also triage a vmcore (drgn analyses added).")
@debug_options
def triage(
    inputs: tuple[str, ...],
    fmt: str,
    no_llm: bool,
    store: bool = False,
    vmcore: str | None = None,
    vmlinux: str | None = None,
    debug_dir: str | None = None,
) -> None:
    """Find kernel crash reports in console logs, dmesg output or kdump directories.

    Each FILE may be a plain or compressed (gzip, xz, zstd) log, a kdump directory,
    /dev/kmsg (what the ring buffer holds now), or - for standard input. Repeats are
    grouped by signature; to follow a log as it grows, use `kassist watch`.
    """
    jobs = _jobs(inputs, vmcore, vmlinux, debug_dir)
    if fmt == "json" and len(jobs) > 1:
        raise KassistError("--format json takes one input", "use --format jsonl for several", 2)
    failed = 0
    for run in jobs:
        try:
            result = run()
        except KassistError as exc:
            if len(jobs) == 1:
                raise
            notice(exc.one_line())
            failed += 1
            continue
        _show(result, fmt, store, vmlinux, debug_dir)
    if failed:
        raise click.exceptions.Exit(1)


def _jobs(
    inputs: tuple[str, ...], vmcore: str | None, vmlinux: str | None, debug_dir: str | None
) -> list[Callable[[], TriageResult]]:
    # One triage per input (the vmcore last), in the order given.
    for path in inputs:
        stdin_notice(path)
    jobs: list[Callable[[], TriageResult]] = [partial(triage_path, p) for p in inputs]
    if vmcore:
        from assistant.vmcore import triage_vmcore

        jobs.append(partial(triage_vmcore, vmcore, vmlinux, debug_dir, progress=notice))
    if not jobs:
        raise KassistError(
            "no input given", "name a log file, a kdump directory, or - for stdin", 2
        )
    return jobs


def _log_context(
    result: TriageResult, fmt: str, vmlinux: str | None, debug_dir: str | None
) -> RootcauseContext | None:
    # A log's traces are symbolised with the same vmlinux (and --debug-dir modules);
    # the JSON's fault and assessment use them and the knowledge base.
    if result.vmcore is not None or not result.crashes:
        return None
    if fmt == "text" and not vmlinux and not debug_dir:
        return None
    from assistant.rootcause.report import log_context

    context = log_context(result.crashes, vmlinux, debug_dir, with_kb=fmt != "text")
    result.warnings += context.notes
    return context


def _show(
    result: TriageResult, fmt: str, store: bool, vmlinux: str | None, debug_dir: str | None
) -> None:
    # Print one input's result (its warnings on stderr), and record it when asked.
    context = _log_context(result, fmt, vmlinux, debug_dir)
    for warning in result.warnings:
        notice(f"{printable(result.source)}: {warning}")
    if store and result.crashes:
        _record(result)
    if fmt != "text":
        click.echo(json.dumps(result.to_dict(context), indent=2 if fmt == "json" else None))
        return
    click.echo(triage_text(result))
    if result.vmcore is not None:
        from assistant.cli.vmcore import vmcore_text

        click.echo(vmcore_text(result.vmcore))
