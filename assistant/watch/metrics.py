"""The watch daemon's counters, in Prometheus' text exposition format.

Served on a loopback port (``--metrics-port``) and/or written to a node_exporter textfile
(``--metrics-file``, atomically).
"""

from __future__ import annotations

import os
import threading
from collections import Counter, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

#: metric name -> help text. Labelled metrics take a ``type`` label.
METRICS: dict[str, str] = {
    "kassist_watch_crashes_total": "Crash reports stored, by crash type.",
    "kassist_watch_events_total": "Production events stored, by event type.",
    "kassist_watch_new_signatures_total": "Signatures seen for the first time.",
    "kassist_watch_records_read_total": "Kernel log records read.",
    "kassist_watch_records_lost_total": "Records overwritten in the ring buffer before reading.",
    "kassist_watch_records_not_kernel_total": (
        "Records user space wrote to the kernel log (a facility other than the kernel's),"
        " kept out of the crash store."
    ),
    "kassist_watch_store_failures_total": "Store writes that failed (disk full...) and wait.",
    "kassist_watch_store_dropped_total": "Crashes and events dropped: too many waiting.",
    "kassist_watch_drafts_queued_total": "Bug report drafts queued.",
    "kassist_watch_drafts_written_total": "Bug report drafts written to the outbox.",
    "kassist_watch_drafts_dropped_total": "Drafts dropped (queue full or hourly limit).",
    "kassist_watch_hook_failures_total": "Hook runs that failed after every retry.",
    "kassist_watch_hook_runs_total": "Hook runs that succeeded.",
    "kassist_watch_drafts_failed_total": "Drafts that could not be written (disk full...).",
    "kassist_watch_drafts_elsewhere_total": (
        "New signatures another receiver of the fleet store drafts (it holds the lease)."
    ),
    "kassist_watch_network_total": (
        'What the network sources counted, by source and counter (type="netconsole:lost"):'
        " messages, lost, late, malformed, fragments refused or incomplete, dropped..."
    ),
    "kassist_watch_otlp_exported_total": "New signatures exported as OTLP log records.",
    "kassist_watch_otlp_failures_total": "OTLP exports that failed after every retry.",
}
_LABELLED = {
    "kassist_watch_crashes_total",
    "kassist_watch_events_total",
    "kassist_watch_network_total",
}
#: Summaries: name -> help text; the last :data:`RESERVOIR` observations give quantiles.
SUMMARIES: dict[str, str] = {
    "kassist_watch_store_latency_seconds": (
        "Seconds from a report closing (its window) to its crash being stored."
    ),
}
RESERVOIR = 10_000


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plain: Counter[str] = Counter()
        self._by_type: dict[str, Counter[str]] = {m: Counter() for m in _LABELLED}
        self._observed: dict[str, deque[float]] = {m: deque(maxlen=RESERVOIR) for m in SUMMARIES}
        self._sums: dict[str, float] = {}
        self._counts: Counter[str] = Counter()

    def add(self, name: str, n: int = 1, kind: str | None = None) -> None:
        """Add ``n`` to a counter (``kind``: its ``type`` label, for labelled ones)."""
        if name not in METRICS:
            raise KeyError(name)
        with self._lock:
            if name in _LABELLED:
                self._by_type[name][kind or "unknown"] += n
            else:
                self._plain[name] += n

    def set(self, name: str, value: int, kind: str | None = None) -> None:
        """Set a counter to ``value`` (one a source keeps itself: it only grows)."""
        if name not in METRICS:
            raise KeyError(name)
        with self._lock:
            if name in _LABELLED:
                self._by_type[name][kind or "unknown"] = value
            else:
                self._plain[name] = value

    def observe(self, name: str, seconds: float) -> None:
        """Record one observation of a summary (a latency, in seconds)."""
        with self._lock:
            self._observed[name].append(seconds)
            self._sums[name] = self._sums.get(name, 0.0) + seconds
            self._counts[name] += 1

    def quantile(self, name: str, q: float) -> float | None:
        """Return the ``q`` quantile of a summary's recent observations, or ``None``."""
        with self._lock:
            values = sorted(self._observed[name])
        if not values:
            return None
        return values[min(len(values) - 1, int(q * len(values)))]

    def value(self, name: str, kind: str | None = None) -> int:
        """Return a counter's value (a labelled one summed over types without ``kind``)."""
        with self._lock:
            if name in _LABELLED:
                c = self._by_type[name]
                return c[kind] if kind is not None else sum(c.values())
            return self._plain[name]

    def render(self) -> str:
        """Return every counter in Prometheus text format."""
        out: list[str] = []
        with self._lock:
            for name, help_ in METRICS.items():
                out += [f"# HELP {name} {help_}", f"# TYPE {name} counter"]
                if name in _LABELLED:
                    for kind, n in sorted(self._by_type[name].items()):
                        out.append(f'{name}{{type="{_label(kind)}"}} {n}')
                else:
                    out.append(f"{name} {self._plain[name]}")
            counts, sums = dict(self._counts), dict(self._sums)
        for name, help_ in SUMMARIES.items():
            out += [f"# HELP {name} {help_}", f"# TYPE {name} summary"]
            for q in (0.5, 0.99):
                value = self.quantile(name, q)
                if value is not None:
                    out.append(f'{name}{{quantile="{q}"}} {value:.6f}')
            out += [f"{name}_sum {sums.get(name, 0.0):.6f}", f"{name}_count {counts.get(name, 0)}"]
        return "\n".join(out) + "\n"

    def write_textfile(self, path: Path) -> None:
        """Write the counters for node_exporter's textfile collector (atomically)."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.render())
        os.replace(tmp, path)

    def serve(self, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
        """Serve ``/metrics`` on a loopback port in a daemon thread; return the server."""
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = metrics.render().encode()
                self.send_response(200 if self.path in ("/metrics", "/") else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((host, port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
        return server
