"""Helpers for the fleet's tests: receivers' ports, stored rows, real forwarders."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path
from typing import Any

from tests.conftest import HANG_S, wait_until
from tests.watch_support import REAL_WATCH, WatchProcess


def port_of(watch: WatchProcess, source: str) -> int:
    """Return the port a watch process's ``source`` listens on (it logs it when bound)."""
    pattern = re.compile(re.escape(source) + r": listening on \S+:(\d+)")
    m = wait_until(
        lambda: pattern.search(watch.log.read_text(errors="replace")),
        f"{source} listening",
        poll_s=0.05,
        context=watch.log.read_text,
    )
    return int(m.group(1))


def hits(db: Path) -> list[dict[str, Any]]:
    """Return every stored hit with its signature's title (SQLite store)."""
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=HANG_S)) as c:
        c.row_factory = sqlite3.Row
        try:
            rows = c.execute(
                "SELECT h.*, c.title, c.type FROM hits h JOIN crashes c USING (signature)"
            ).fetchall()
        except sqlite3.OperationalError:
            return []
    return [dict(r) for r in rows]


def metric(watch_dir: Path, name: str) -> dict[str, float]:
    """Read a metrics textfile: ``{labels or "": value}`` of one metric."""
    out: dict[str, float] = {}
    path = watch_dir / "metrics.prom"
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            label = key[len(name) :].strip("{}")
            out[label.removeprefix('type="').removesuffix('"')] = float(value)
    return out


def receiver(tmp: Path, source: str, *args: str) -> tuple[WatchProcess, int]:
    """Start ``kassist watch`` on one network source (port 0: the kernel picks), metrics
    written to ``tmp/metrics.prom`` when it stops; return it and its port."""
    watch = WatchProcess(
        tmp, "--metrics-file", str(tmp / "metrics.prom"), *args,
        sources=(source,), command=REAL_WATCH,
    ).start()  # fmt: skip
    return watch, port_of(watch, source)
