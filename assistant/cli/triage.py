"""``kassist triage``: find and describe the kernel crashes in one or more logs."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial

import click

from assistant.cli.common import notice
from assistant.errors import KassistError
from assistant.triage import TriageResult, triage_path


def _text(result: TriageResult) -> str:
    n = len(result.crashes)
    lines = [f"{result.source}: {n} crash{'es' if n != 1 else ''} in {result.lines} lines"]
    for c in result.crashes:
        flags = [f for f, on in (("corrupted", c.corrupted), ("panicked", c.panicked)) if on]
        lines.append(f"  {c.title}  [{c.type}]" + (f"  ({', '.join(flags)})" if flags else ""))
        task = f"{c.task.comm} pid {c.task.pid} cpu {c.task.cpu}" if c.task.comm else "unknown task"
        lines.append(
            f"    lines {c.start_line}-{c.end_line} · frame {c.frame or '?'} · {task}"
            f" · kernel {c.kernel.release or '?'} · sig {c.signature}"
        )
    for e in result.events:
        lines.append(f"  event: {e.title}  [{e.type}]  lines {e.start_line}-{e.end_line}")
    return "\n".join(lines)


def _record(result: TriageResult) -> None:
    from assistant.triage.store import CrashStore

    with CrashStore() as db:
        new = db.record(result.crashes, result.source)
    notice(f"{result.source}: {new} new crash report(s) recorded in {db.path}")


@click.command()
@click.argument("inputs", nargs=-1, metavar="FILE|-...")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "jsonl"]),
    default="text",
    show_default=True,
    help="json: one object; jsonl: one object per input, in input order.",
)
@click.option("--no-llm", is_flag=True, help="Accepted for symmetry: triage never uses a model.")
@click.option(
    "--store",
    is_flag=True,
    help="Record the crashes found in the crash store (see `kassist crashes`).",
)
@click.option("--vmcore", type=click.Path(), help="Also triage a vmcore (drgn analyses added).")
@click.option("--vmlinux", type=click.Path(), help="The vmcore's vmlinux with debug info.")
@click.option("--debug-dir", type=click.Path(), help="A /usr/lib/debug tree for the vmcore.")
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
    or - for standard input.
    """
    jobs: list[Callable[[], TriageResult]] = [partial(triage_path, p) for p in inputs]
    if vmcore:
        from assistant.vmcore import triage_vmcore

        jobs.append(partial(triage_vmcore, vmcore, vmlinux, debug_dir, progress=notice))
    if not jobs:
        raise KassistError(
            "no input given", "name a log file, a kdump directory, or - for stdin", 2
        )
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
        if vmlinux and result.vmcore is None and result.crashes:
            # A log's traces are symbolised with the same vmlinux (and --debug-dir modules).
            from assistant.triage.symbolize import symbolize_result

            symbolize_result(result, vmlinux, debug_dir)
        for warning in result.warnings:
            notice(f"{result.source}: {warning}")
        if store and result.crashes:
            _record(result)
        if fmt == "text":
            click.echo(_text(result))
            if result.vmcore is not None:
                from assistant.cli.vmcore import vmcore_text

                click.echo(vmcore_text(result.vmcore))
        else:
            click.echo(json.dumps(result.to_dict(), indent=2 if fmt == "json" else None))
    if failed:
        raise click.exceptions.Exit(1)
