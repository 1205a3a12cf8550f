"""``kassist disks``: fail-slow and failing drives, with the evidence for each finding."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from actions.text import printable_lines
from assistant.cli.common import format_option, notice
from assistant.disks.render import device_lines, device_rows, document, finding_lines, run_line
from assistant.errors import InputError


@click.command()
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 3600),
    default=10.0,
    show_default=True,
    help="Seconds per window.",
)
@click.option(
    "--count",
    type=click.IntRange(1, 1_000_000),
    default=6,
    show_default=True,
    help="Windows to watch before the final answer.",
)
@format_option(
    "text",
    "json",
    "jsonl",
    text="text; json: one kassist.disks/1 object at the end; jsonl: one per window.",
)
@click.option(
    "--device",
    "devices",
    multiple=True,
    metavar="NAME",
    help="Watch only this device (repeatable; default: every block device).",
)
@click.option("--no-bpf", is_flag=True, help="Do not trace per-request latency with eBPF.")
@click.option("--no-smart", is_flag=True, help="Do not read SMART health counters.")
@click.option(
    "--explain",
    is_flag=True,
    help="Have the local model explain each finding (checked; withheld when it fails).",
)
def disks(
    interval: float,
    count: int,
    fmt: str,
    devices: tuple[str, ...],
    no_bpf: bool,
    no_smart: bool,
    explain: bool,
) -> None:
    """Find fail-slow and failing drives: each device against its peers at the same load.

    Findings are advice for a person (drain, replace, check cabling); nothing is changed.
    """
    from assistant.disks.monitor import DiskMonitor, new_findings
    from probes.stats.blockdev import read_block_devices

    known = read_block_devices()
    for name in devices:
        if name not in known:
            raise InputError(f"disks: no block device called {name!r}", "see `lsblk -d`")
    starting = [what for what, on in (("the latency probe", not no_bpf), ("SMART", not no_smart))
                if on]  # fmt: skip
    notice("disks: starting " + " and ".join(["the kernel's counters", *starting]))
    monitor = DiskMonitor(only=devices or None, bpf=not no_bpf, smart=not no_smart)
    seen: set[str] = set()
    findings: list[Any] = []
    explainer = _explainer() if explain else None
    try:
        for note in monitor.notices:
            notice(note)
        if count < monitor.cfg.persistence:
            notice(
                f"{count} window(s) are fewer than the {monitor.cfg.persistence} a slowdown "
                "must last: only errors and SMART can give findings"
            )
        notice(
            f"disks: watching {count} window(s) of {interval:g} s "
            f"(about {count * interval:g} s); findings are shown as they hold"
        )
        for n in range(1, count + 1):
            time.sleep(interval)
            findings = monitor.sample()
            fresh = new_findings(findings, seen)
            if fmt != "jsonl":
                notice(f"disks: window {n} of {count}: {len(findings)} finding(s) hold")
            if fmt == "jsonl":
                click.echo(json.dumps(document(monitor, findings, n, interval)))
            elif fmt == "text":
                for finding in fresh:
                    lines = finding_lines(finding, explainer(finding) if explainer else None)
                    click.echo(printable_lines("\n".join(lines)))
    finally:
        monitor.close()
    if fmt == "json":
        click.echo(json.dumps(document(monitor, findings, count, interval), indent=2))
    elif fmt == "text":
        click.echo(printable_lines("\n".join(device_lines(device_rows(monitor)))))
        click.echo(run_line(monitor, findings, count, interval))


def _explainer() -> Any:
    from assistant.cli.common import backend_or_none, config_from_flags
    from assistant.disks.explain import Explainer

    return Explainer(backend_or_none(config_from_flags(), no_llm=False), notify=notice)
