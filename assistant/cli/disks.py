"""``kassist disks``: fail-slow and failing drives, with the evidence for each finding."""

from __future__ import annotations

import json
import textwrap
import time
from typing import Any

import click

from assistant.cli.common import notice
from assistant.disks.model import peer_group
from assistant.errors import InputError

#: The JSON contract's name and version.
SCHEMA = "kassist.disks/1"


def _device_rows(monitor: Any) -> list[dict[str, Any]]:
    rows = []
    before = monitor.log.before if monitor.log is not None else {}
    for name, dev in sorted(monitor.detector.devices.items()):
        w = monitor.windows.get(name)
        if w is None or dev.size_bytes == 0:
            continue
        rows.append(
            {
                "device": name,
                "peer_group": peer_group(dev),
                "driver": dev.driver,
                "rotational": dev.rotational,
                "size_bytes": dev.size_bytes,
                "model": dev.model,
                "iops": round(w.iops, 1),
                "bytes_per_s": round(w.bytes_per_s),
                "await_ms": None if w.await_ms is None else round(w.await_ms, 3),
                "util": round(w.util, 3),
                "queue_depth": round(w.queue_depth, 2),
                "p50_us": None if w.p50_us is None else round(w.p50_us),
                "p99_us": None if w.p99_us is None else round(w.p99_us),
                "errors": w.errors,
                "timeouts": w.timeouts,
                "errors_before": before.get(name, {}).get("errors", 0),
                "timeouts_before": before.get(name, {}).get("timeouts", 0),
            }
        )
    return rows


def _document(monitor: Any, findings: list[Any], windows: int, interval: float) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "interval_s": interval,
        "windows": windows,
        "persistence_windows": monitor.cfg.persistence,
        "groups": monitor.detector.groups(),
        "devices": _device_rows(monitor),
        "findings": [f.to_dict() for f in findings],
        "notices": list(monitor.notices),
    }


def _cell(value: Any, spec: str) -> str:
    width = int(spec.split(".", maxsplit=1)[0].rstrip("df") or 0)
    return "-".rjust(width) if value is None else format(value, spec)


def _print_devices(rows: list[dict[str, Any]]) -> None:
    # The last window of each device, 80 columns: what the kernel counted for it.
    click.echo(
        f"{'device':10} {'peer group':18} {'IO/s':>8} {'await ms':>9} {'util':>5} "
        f"{'p50 µs':>7} {'p99 µs':>7} {'errors':>6}"
    )
    for r in rows:
        click.echo(
            f"{r['device']:10} {r['peer_group']:18} {r['iops']:8.1f} "
            f"{_cell(r['await_ms'], '9.3f')} {r['util'] * 100:4.0f}% "
            f"{_cell(r['p50_us'], '7d')} {_cell(r['p99_us'], '7d')} "
            f"{r['errors'] + r['timeouts']:6d}"
        )


def _print_finding(finding: Any, explanation: str | None) -> None:
    click.echo(f"{finding.device}: {finding.kind} ({finding.pattern})  [{finding.key}]")
    for text in (finding.summary, explanation, f"advice: {finding.advice}"):
        if text:
            click.echo(textwrap.fill(text, 80, initial_indent="  ", subsequent_indent="  "))


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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json", "jsonl"]),
    default="text",
    show_default=True,
    help="text; json: one kassist.disks/1 object at the end; jsonl: one per window.",
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
                click.echo(json.dumps(_document(monitor, findings, n, interval)))
            elif fmt == "text":
                for finding in fresh:
                    _print_finding(finding, explainer(finding) if explainer else None)
    finally:
        monitor.close()
    if fmt == "json":
        click.echo(json.dumps(_document(monitor, findings, count, interval), indent=2))
    elif fmt == "text":
        _print_devices(_device_rows(monitor))
        watched = sum(len(m) for m in monitor.detector.groups().values())
        groups = len(monitor.detector.groups())
        still = f"{len(findings)} finding(s) hold" if findings else "no finding"
        click.echo(
            f"{watched} device(s) in {groups} peer group(s) watched for {count} window(s) "
            f"of {interval:g} s: {still}."
        )


def _explainer() -> Any:
    from assistant.cli.common import backend_or_none, config_from_flags
    from assistant.disks.explain import Explainer

    return Explainer(backend_or_none(config_from_flags(), no_llm=False), notify=notice)
