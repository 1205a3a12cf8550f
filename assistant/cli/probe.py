"""``kassist probe``: kernel statistics, kernel logs and the eBPF probe library."""

from __future__ import annotations

import json
import textwrap
import time

import click

from assistant.cli.common import format_option, notice
from probes.bpf import find_probe, list_probes, render_result, run_probe, unavailable_reason
from probes.logs import SourceStats, iter_records
from probes.stats import Snapshot, rates, take_snapshot
from probes.stats.summary import rates_lines, snapshot_summary, summary_lines


@click.group()
def probe() -> None:
    """Read kernel statistics and logs, and run eBPF probes (bpftrace)."""


@probe.command("list")
@format_option("text", "json")
def list_cmd(fmt: str) -> None:
    """List the eBPF probes, and whether each can run here (and why not)."""
    rows = [(spec, unavailable_reason(spec)) for spec in list_probes()]
    if fmt == "json":
        data = [
            {
                "name": s.name,
                "summary": s.summary,
                "available": why is None,
                "why_not": why,
                "needs": s.needs,
                "overhead": s.overhead,
                "default": s.default == "yes",
                "path": str(s.path),
            }
            for s, why in rows
        ]
        click.echo(json.dumps({"schema": "kassist.probes/1", "probes": data}, indent=2))
        return
    width = max(len(s.name) for s, _ in rows)
    indent = " " * (width + 2)
    for spec, why in rows:
        status = "available" if why is None else f"not available: {why}"
        if spec.default != "yes":
            status += " (on demand only: costly, see its overhead line)"
        for i, text in enumerate((spec.summary, status)):
            first = f"{spec.name:<{width}}  " if i == 0 else indent
            click.echo(textwrap.fill(text, 80, initial_indent=first, subsequent_indent=indent))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@probe.command("run")
@click.argument("name")
@click.option(
    "--duration",
    type=click.FloatRange(0.1, 86400),
    default=5.0,
    show_default=True,
    help="Seconds to trace (Ctrl-C stops earlier and still prints what was seen).",
)
@format_option("text", "json")
def run_cmd(name: str, duration: float, fmt: str) -> None:
    """Run the eBPF probe NAME (see `kassist probe list`) and print what it saw."""
    spec = find_probe(name)

    def attached() -> None:
        if fmt == "text":
            click.echo(f"Tracing with {spec.name} for {duration:g} s; Ctrl-C ends early.", err=True)

    result = run_probe(name, duration, on_attach=attached, say=notice)
    if fmt == "json":
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(render_result(result))


@probe.command("stats")
@click.option(
    "--interval",
    type=click.FloatRange(0.05, 3600),
    default=None,
    help="Take two snapshots this many seconds apart and print per-second rates.",
)
@click.option("--cgroup", default=None, help="Include this cgroup v2's statistics.")
@format_option("text", "json")
def stats_cmd(interval: float | None, cgroup: str | None, fmt: str) -> None:
    """Print a snapshot of kernel statistics, or rates over --interval seconds."""
    first = take_snapshot(cgroup)
    if interval is None:
        if fmt == "json":
            click.echo(json.dumps({"schema": "kassist.stats/1", **first.to_dict()}, indent=2))
        else:
            click.echo(_render_snapshot(first))
        return
    time.sleep(interval)
    second = take_snapshot(cgroup, sysctls=False, kconfig=False)
    per_second = rates(first, second)
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "schema": "kassist.rates/1",
                    "interval_s": second.taken - first.taken,
                    "rates": per_second,
                },
                indent=2,
            )
        )
    else:
        click.echo("\n".join(rates_lines(per_second, second.taken - first.taken)))


def _render_snapshot(snap: Snapshot) -> str:
    p = snap.proc
    lines = summary_lines(snapshot_summary(snap))
    if "diskstats" in p:
        busy = [
            n
            for n, d in p["diskstats"].items()
            if d.get("reads_completed") or d.get("writes_completed")
        ]
        lines.append(
            _cut(f"disks      {len(p['diskstats'])} ({len(busy)} with I/O: {' '.join(busy)})", 80)
        )
    lines.append(
        f"block      {len(snap.block_queues)} queues; schedulers: "
        + _cut(
            " ".join(sorted({f"{d}={q.get('scheduler')}" for d, q in snap.block_queues.items()})),
            50,
        )
    )
    writable = sum(1 for s in snap.sysctls.values() if s.writable)
    lines.append(f"sysctls    {len(snap.sysctls)} ({writable} writable)")
    lines.append(
        f"kconfig    {len(snap.kconfig)} options from {snap.kconfig_source or '(not found)'}"
    )
    flags = "".join(str(f["letter"]) for f in snap.taint["flags"]) or "not tainted"
    lines.append(f"taint      {snap.taint['mask']} ({flags})")
    lines.append(
        f"modules    {len(p['modules'])} loaded"
        if "modules" in p
        else "modules    none (no /proc/modules)"
    )
    if snap.cgroup:
        files = snap.cgroup["files"]
        lines.append(_cut(f"cgroup     {snap.cgroup['path']}: {', '.join(sorted(files))}", 80))
    lines.append(_cut(f"cmdline    {snap.cmdline}", 80))
    lines.append(f"(snapshot took {snap.duration_ms:.1f} ms)")
    return "\n".join(_cut(line, 80) for line in lines)


@probe.command("logs")
@click.argument("source", default="kmsg")
@click.option("--follow", is_flag=True, help="For kmsg: keep printing new records.")
@click.option(
    "--level",
    type=click.IntRange(0, 7),
    default=None,
    help="Only records at this level or more urgent.",
)
@format_option("text", "jsonl")
def logs_cmd(source: str, follow: bool, level: int | None, fmt: str) -> None:
    """Print kernel log records from SOURCE: kmsg, journal[:BOOT], pstore[:DIR], a file or dir."""
    stats = SourceStats()
    for record in iter_records(source, stats, follow=follow):
        if level is not None and (record.level is None or record.level > level):
            continue
        if fmt == "jsonl":
            click.echo(json.dumps(record.to_dict()))
        else:
            lvl = f"<{record.level}>" if record.level is not None else ""
            click.echo(f"{lvl}{record.as_dmesg_line()}")
    for warning in stats.warnings():
        click.echo(f"kassist: warning: {warning}", err=True)
