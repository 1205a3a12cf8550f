"""Where the side panels read from: the real machine, or fixed data for snapshot tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Pressure:
    """One reading of the panels' gauges.

    :param load1: the one-minute load average.
    :param psi: resource (``cpu``, ``memory``, ``io``) -> PSI ``some avg10`` in percent.
    """

    load1: float
    psi: dict[str, float] = field(default_factory=dict)


def read_pressure() -> Pressure:
    """Read the load average and PSI through probes.stats (a few small files).

    :raises OSError: /proc/loadavg cannot be read.
    """
    from probes.stats import read_section

    loadavg = read_section("loadavg")
    if loadavg is None:
        raise OSError("/proc/loadavg cannot be read")
    psi: dict[str, float] = {}
    for res in ("cpu", "memory", "io"):
        parsed = read_section(f"psi_{res}")  # probes.stats.parse_pressure's result
        if parsed is not None and "avg10" in parsed.get("some", {}):
            psi[res] = float(parsed["some"]["avg10"])
    return Pressure(float(loadavg["load1"]), psi)


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
    """Return one line on the agent: reachable and how many keys it manages, or why not."""
    from actions.client import AgentClient
    from actions.errors import ActionError

    try:
        with AgentClient(socket, timeout=2.0) as client:
            answer: Any = client.status()
    except (ActionError, OSError) as exc:
        return f"not reachable ({str(exc)[:60]})"
    if answer.status is None:
        return f"answers {answer.verdict}"
    return f"up, {len(answer.status.managed)} managed key(s)"


@dataclass(frozen=True)
class Sources:
    """The panels' readers; tests pass fixed ones so that snapshots are stable."""

    pressure: Callable[[], Pressure] = read_pressure
    crashes: Callable[[str | None], list[tuple[str, str, int]]] = recent_crashes
    agent: Callable[[str], str] = agent_state
    live: bool = True
