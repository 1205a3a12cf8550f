"""What is using the CPU, memory and I/O: per-process figures from /proc/<pid>, like top(1).

:func:`read_tasks` reads every process once (``/proc/<pid>/stat`` and, where this user
may, ``/proc/<pid>/io``); :func:`task_usage` turns two readings into rates;
:func:`top_tasks` ranks them and :func:`top_lines` renders them (the chat's ``top`` tool
and the ``health`` verdict use it). The parsers are pure and tested on inline text.

Units: CPU as a percentage of one CPU over the interval (``utime + stime`` are USER_HZ
ticks, proc(5)); memory as resident set size in bytes (``rss`` pages times the page size); I/O as
bytes per second that reached the storage layer (``read_bytes + write_bytes`` of
``/proc/<pid>/io``, which needs the same user or root: others show ``-``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from probes.stats.read import read_text

#: What a ranking can be by: the word, and the column it sorts on.
BY = ("cpu", "memory", "io")


@dataclass(frozen=True)
class TaskSample:
    """One process at one instant.

    :param cpu_ticks: ``utime + stime`` in USER_HZ ticks (``unsigned long``), threads included.
    :param rss_bytes: resident set size in bytes.
    :param io_bytes: ``read_bytes + write_bytes`` (``u64``), or ``None`` when unreadable.
    """

    pid: int
    comm: str
    state: str
    cpu_ticks: int
    rss_bytes: int
    io_bytes: int | None


@dataclass(frozen=True)
class TaskUse:
    """One process over an interval.

    :param cpu_percent: CPU time as a percentage of one CPU (can exceed 100 with threads).
    :param io_per_s: storage bytes per second, or ``None`` when unreadable.
    """

    pid: int
    comm: str
    state: str
    cpu_percent: float
    rss_bytes: int
    io_per_s: float | None

    def to_dict(self) -> dict[str, Any]:
        """Return the row as JSON-ready data."""
        return asdict(self)


def parse_pid_stat(text: str) -> tuple[str, str, int, int] | None:
    """Parse /proc/<pid>/stat: ``(comm, state, utime + stime ticks, rss pages)``.

    ``comm`` may hold spaces and parentheses: it ends at the last ``)``.

    >>> parse_pid_stat("42 (a) b) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 9 100 25 0")
    ('a) b', 'R', 10, 25)
    """
    left, sep, right = text.rpartition(")")
    if not sep or "(" not in left:
        return None
    comm = left.split("(", 1)[1]
    fields = right.split()
    # fields[0] is field 3 (state); utime, stime are fields 14, 15; rss is field 24.
    if len(fields) < 22:
        return None
    try:
        return comm, fields[0], int(fields[11]) + int(fields[12]), int(fields[21])
    except ValueError:
        return None


def parse_pid_io(text: str) -> int | None:
    """Parse /proc/<pid>/io: ``read_bytes + write_bytes`` (bytes that reached storage).

    >>> parse_pid_io("rchar: 9\\nread_bytes: 4096\\nwrite_bytes: 8192\\n")
    12288
    """
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if value.strip().isdigit():
            values[name.strip()] = int(value)
    if "read_bytes" not in values or "write_bytes" not in values:
        return None
    return values["read_bytes"] + values["write_bytes"]


def read_tasks(proc: str = "/proc") -> dict[int, TaskSample]:
    """Read every process of this PID namespace once (a process that exits is skipped).

    :param proc: the procfs mount.
    """
    page = os.sysconf("SC_PAGE_SIZE")
    out: dict[int, TaskSample] = {}
    try:
        names = os.listdir(proc)
    except OSError:
        return out
    for name in names:
        if not name.isdigit():
            continue
        stat = read_text(f"{proc}/{name}/stat")
        parsed = parse_pid_stat(stat) if stat else None
        if parsed is None:
            continue
        comm, state, ticks, rss = parsed
        io_text = read_text(f"{proc}/{name}/io")
        io = parse_pid_io(io_text) if io_text else None
        out[int(name)] = TaskSample(int(name), comm, state, ticks, rss * page, io)
    return out


def task_usage(
    before: Mapping[int, TaskSample],
    after: Mapping[int, TaskSample],
    seconds: float,
    hz: int,
) -> list[TaskUse]:
    """Return each process's use between two readings (processes in both, same name).

    :param seconds: wall time between the readings.
    :param hz: USER_HZ (``os.sysconf("SC_CLK_TCK")``).
    """
    seconds = max(seconds, 1e-3)
    out: list[TaskUse] = []
    for pid, a in after.items():
        b = before.get(pid)
        if b is None or b.comm != a.comm:
            continue  # a new process (or a reused pid): no interval to measure
        cpu = max(a.cpu_ticks - b.cpu_ticks, 0) * 100.0 / hz / seconds
        io = None
        if a.io_bytes is not None and b.io_bytes is not None:
            io = max(a.io_bytes - b.io_bytes, 0) / seconds
        out.append(TaskUse(pid, a.comm, a.state, cpu, a.rss_bytes, io))
    return out


def _key(by: str) -> Any:
    if by == "memory":
        return lambda t: t.rss_bytes
    if by == "io":
        return lambda t: t.io_per_s or 0.0
    return lambda t: t.cpu_percent


def top_tasks(usage: Iterable[TaskUse], by: str = "cpu", limit: int = 10) -> list[TaskUse]:
    """Return the ``limit`` processes using the most of ``by`` (``cpu``, ``memory``, ``io``).

    :raises ValueError: ``by`` is not one of :data:`BY`.
    """
    if by not in BY:
        raise ValueError(f"by must be one of {', '.join(BY)}")
    return sorted(usage, key=_key(by), reverse=True)[:limit]


def _mib(n: float) -> str:
    return f"{n / (1 << 20):.1f}"


def top_lines(rows: Iterable[TaskUse], by: str, seconds: float) -> list[str]:
    """Render ranked processes as a fixed-width table (``comm`` is the process's own name:
    untrusted text, sanitised by whoever prints it)."""
    head = {
        "cpu": f"processes by CPU over {seconds:.1f} s (% of one CPU)",
        "memory": "processes by resident memory (RSS)",
        "io": f"processes by storage I/O over {seconds:.1f} s",
    }[by]
    lines = [head, f"{'PID':>7}  {'CPU%':>6}  {'RSS MiB':>9}  {'I/O KiB/s':>10}  S  COMMAND"]
    for t in rows:
        io = "-" if t.io_per_s is None else f"{t.io_per_s / 1024:.1f}"
        lines.append(
            f"{t.pid:>7}  {t.cpu_percent:>6.1f}  {_mib(t.rss_bytes):>9}  {io:>10}  "
            f"{t.state:1}  {t.comm}"
        )
    return lines
