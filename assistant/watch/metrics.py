"""The watch daemon's counters, in Prometheus' text exposition format.

Served on a loopback port (``--metrics-port``) and/or written to a node_exporter textfile
(``--metrics-file``, atomically).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
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
}
_LABELLED = {"kassist_watch_crashes_total", "kassist_watch_events_total"}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Thread-safe counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plain: Counter[str] = Counter()
        self._by_type: dict[str, Counter[str]] = {m: Counter() for m in _LABELLED}

    def add(self, name: str, n: int = 1, kind: str | None = None) -> None:
        """Add ``n`` to a counter (``kind``: its ``type`` label, for labelled ones)."""
        if name not in METRICS:
            raise KeyError(name)
        with self._lock:
            if name in _LABELLED:
                self._by_type[name][kind or "unknown"] += n
            else:
                self._plain[name] += n

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
