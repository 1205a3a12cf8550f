"""The drives feature's renderer: findings, the per-device table, and one line for a run.

``kassist disks``, ``kassist ask``, the chat's ``disks`` and ``health`` tools render a
:class:`~assistant.disks.monitor.DiskMonitor`'s results here, so that they agree. Device
models and findings' text may come from a drive (SMART) or the kernel log: whoever prints
them sanitises them.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

from assistant.disks.model import Finding, peer_group
from assistant.disks.monitor import DiskMonitor

#: The JSON contract's name and version.
SCHEMA = "kassist.disks/1"


def device_rows(monitor: DiskMonitor) -> list[dict[str, Any]]:
    """Return the last window of each watched device as JSON-ready rows."""
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


def document(
    monitor: DiskMonitor, findings: Sequence[Finding], windows: int, interval: float
) -> dict[str, Any]:
    """Return the ``kassist.disks/1`` object of a run."""
    return {
        "schema": SCHEMA,
        "interval_s": interval,
        "windows": windows,
        "persistence_windows": monitor.cfg.persistence,
        "groups": monitor.detector.groups(),
        "devices": device_rows(monitor),
        "findings": [f.to_dict() for f in findings],
        "notices": list(monitor.notices),
    }


def _cell(value: Any, spec: str) -> str:
    width = int(spec.split(".", maxsplit=1)[0].rstrip("df") or 0)
    return "-".rjust(width) if value is None else format(value, spec)


def device_lines(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Render the devices' last window, 80 columns: what the kernel counted for each."""
    lines = [
        f"{'device':10} {'peer group':18} {'IO/s':>8} {'await ms':>9} {'util':>5} "
        f"{'p50 µs':>7} {'p99 µs':>7} {'errors':>6}"
    ]
    for r in rows:
        lines.append(
            f"{r['device']:10} {r['peer_group']:18} {r['iops']:8.1f} "
            f"{_cell(r['await_ms'], '9.3f')} {r['util'] * 100:4.0f}% "
            f"{_cell(r['p50_us'], '7d')} {_cell(r['p99_us'], '7d')} "
            f"{r['errors'] + r['timeouts']:6d}"
        )
    return lines


def finding_lines(finding: Finding, explanation: str | None = None) -> list[str]:
    """Render one finding: device, kind and pattern, its summary, explanation and advice."""
    lines = [f"{finding.device}: {finding.kind} ({finding.pattern})  [{finding.key}]"]
    for text in (finding.summary, explanation, f"advice: {finding.advice}"):
        if text:
            lines += textwrap.wrap(text, 80, initial_indent="  ", subsequent_indent="  ")
    return lines


def run_line(
    monitor: DiskMonitor, findings: Sequence[Finding], windows: int, interval: float
) -> str:
    """Return one line for a run: devices, peer groups, how long, and whether findings hold."""
    groups = monitor.detector.groups()
    watched = sum(len(m) for m in groups.values())
    still = f"{len(findings)} finding(s) hold" if findings else "no finding"
    return (
        f"{watched} device(s) in {len(groups)} peer group(s) watched for {windows} window(s) "
        f"of {interval:g} s: {still}."
    )
