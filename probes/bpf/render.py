"""Draw probe results as text that fits 80 columns, histograms the way bpftrace draws them."""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from probes.bpf.runner import Bucket, MapEntry, MapResult, ProbeResult

WIDTH = 80
#: Width of a histogram's bar of @ signs (bpftrace uses 52; 40 keeps lines within 80 columns).
BAR_WIDTH = 40
#: Rows of a count map shown, largest first.
TOP_ROWS = 20


def _suffixed(n: int) -> str:
    # bpftrace's labels: 1K, 2M... for powers of 1024.
    for shift, unit in ((60, "E"), (50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K")):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def bucket_label(b: Bucket) -> str:
    """Return bpftrace's label of a bucket: ``[4, 8)``, ``[1K, 2K)``, ``(..., 0)``, ``[64, ...)``.

    >>> bucket_label(Bucket(4, 7, 1)), bucket_label(Bucket(1024, 2047, 1))
    ('[4, 8)', '[1K, 2K)')
    """
    if b.low is None:
        return f"(..., {_suffixed((b.high or -1) + 1)})"
    if b.high is None:
        return f"[{_suffixed(b.low)}, ...)"
    if b.high == b.low:
        return f"[{_suffixed(b.low)}]"
    return f"[{_suffixed(b.low)}, {_suffixed(b.high + 1)})"


def draw_histogram(buckets: list[Bucket]) -> list[str]:
    """Draw buckets as bpftrace does: label, count, and a bar scaled to the largest count."""
    top = max((b.count for b in buckets), default=0) or 1
    labels = [bucket_label(b) for b in buckets]
    lw = max((len(s) for s in labels), default=0)
    cw = max((len(str(b.count)) for b in buckets), default=1)
    bar = min(BAR_WIDTH, WIDTH - lw - cw - 5)
    return [
        f"{label:<{lw}} {b.count:>{cw}} |{'@' * (b.count * bar // top):<{bar}}|"
        for label, b in zip(labels, buckets, strict=True)
    ]


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _table(m: MapResult, seconds: float) -> list[str]:
    rows = sorted(m.entries, key=lambda e: e.total, reverse=True)
    shown = rows[:TOP_ROWS]
    headers = [*(m.keys or ["key"]), "count", "per s"]
    cells = [
        [*e.labels, str(e.total), f"{e.total / seconds:.1f}" if seconds > 0 else "-"] for e in shown
    ]
    widths = [
        max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    # Squeeze the widest key column until the row fits.
    while sum(widths) + 2 * (len(widths) - 1) > WIDTH and max(widths[:-2], default=0) > 8:
        i = widths.index(max(widths[:-2]))
        widths[i] -= 1
    fmt = [f"{{:<{w}}}" if i < len(widths) - 2 else f"{{:>{w}}}" for i, w in enumerate(widths)]
    out = ["  ".join(f.format(_cut(h, w)) for f, h, w in zip(fmt, headers, widths, strict=True))]
    for c in cells:
        out.append("  ".join(f.format(_cut(v, w)) for f, v, w in zip(fmt, c, widths, strict=True)))
    if len(rows) > len(shown):
        out.append(f"... and {len(rows) - len(shown)} more")
    return out


def _entry_title(m: MapResult, e: MapEntry) -> str:
    if not e.labels:
        return f"{m.name}:"
    return f"{m.name}[{', '.join(e.labels)}]:"


def _hist_lines(m: MapResult, _seconds: float) -> list[str]:
    out: list[str] = []
    for e in sorted(m.entries, key=lambda e: e.labels):
        if e.labels:
            out.append(_cut(_entry_title(m, e), WIDTH))
        out.extend(draw_histogram(e.buckets or []))
    return out


def _stats_lines(m: MapResult, _seconds: float) -> list[str]:
    out: list[str] = []
    for e in m.entries:
        stats = ", ".join(f"{k} {v}" for k, v in (e.stats or {}).items())
        out.append(_cut(f"{_entry_title(m, e)} {stats}", WIDTH))
    return out


def _count_lines(m: MapResult, seconds: float) -> list[str]:
    if not m.keys:
        return [f"{m.name}: {m.entries[0].total}"]
    return _table(m, seconds)


#: How a map of each kind is drawn (the rest are counts: one number, or a table by key).
_MAP_LINES: dict[str, Callable[[MapResult, float], list[str]]] = {
    "hist": _hist_lines,
    "stats": _stats_lines,
}


def _map_lines(m: MapResult, seconds: float) -> list[str]:
    out = [""]
    if m.description:
        out.extend(textwrap.wrap(f"{m.name}: {m.description}", WIDTH, subsequent_indent="  "))
    if not m.entries:
        return [*out, "(empty)"]
    return out + _MAP_LINES.get(m.kind, _count_lines)(m, seconds)


def render_result(result: ProbeResult) -> str:
    """Render a probe result as text for a terminal (at most 80 columns)."""
    out = [_cut(f"{result.name}: traced for {result.duration_s:.1f} s", WIDTH)]
    if result.interrupted:
        out.append("(interrupted)")
    for ev in result.events:
        words = [f"{k}={v}" for k, v in ev.items()]
        out.extend(textwrap.wrap("  ".join(words), WIDTH, subsequent_indent="    "))
    out.extend(_cut(line, WIDTH) for line in result.messages)
    for m in result.maps.values():
        out.extend(_map_lines(m, result.duration_s))
    if not result.maps and not result.events:
        out.append("")
        out.append("(nothing happened that this probe counts)")
    out.extend(_cut(f"warning: {w}", WIDTH) for w in result.warnings)
    return "\n".join(out)
