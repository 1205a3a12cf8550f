"""Where the side panels read from: the real machine, or fixed data for snapshot tests.

The live readers are the features' own: the statistics summary (load, PSI) of
``probes.stats.summary``, the crash store, and :func:`actions.client.try_status`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pressure:
    """One reading of the panels' gauges.

    :param load1: the one-minute load average.
    :param psi: resource (``cpu``, ``memory``, ``io``) -> PSI ``some avg10`` in percent.
    """

    load1: float
    psi: dict[str, float] = field(default_factory=dict)


def read_pressure() -> Pressure:
    """Read the load average and PSI (the statistics summary's few small files)."""
    from probes.stats.summary import read_summary

    s = read_summary()
    return Pressure(s.load1 or 0.0, {res: line.some_avg10 for res, line in s.psi.items()})


def recent_crashes(store: str | None, limit: int = 8) -> list[tuple[str, str, int]]:
    """Return (signature, title, count) of the newest crashes in the store."""
    from pathlib import Path

    from assistant.triage.store import CrashStore, default_path, open_readonly_check

    path = Path(store) if store else default_path()
    if not open_readonly_check(path):
        return []
    with CrashStore(path) as db:
        rows = sorted(db.signatures(), key=lambda r: r.last_seen, reverse=True)
    return [(r.signature, r.title, r.count) for r in rows[:limit]]


def agent_state(socket: str) -> str:
    """Return one line on the agent: up and what it manages, or why it is not reachable."""
    from actions.client import try_status

    return try_status(socket).line()


@dataclass(frozen=True)
class Sources:
    """The panels' readers; tests pass fixed ones so that snapshots are stable."""

    pressure: Callable[[], Pressure] = read_pressure
    crashes: Callable[[str | None], list[tuple[str, str, int]]] = recent_crashes
    agent: Callable[[str], str] = agent_state
    live: bool = True
