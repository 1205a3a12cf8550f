"""The statistics feature's summary and its renderer: load against CPUs, PSI, memory, TCP.

:func:`summarise` turns one :class:`~probes.stats.snapshot.Snapshot` (or the few files
:func:`read_summary` reads) into a typed :class:`StatsSummary`; :func:`summary_lines`
renders it. ``kassist probe stats``, ``kassist ask``, the chat's ``stats`` and ``health``
tools and the TUI's pressure panel all show these figures, so they agree by construction.
:func:`rates_lines` renders per-second rates (CPU time as a share of one CPU, not ticks).

Units: memory in bytes (``/proc/meminfo`` gives kB = 1024 bytes), PSI ``avg10`` in percent
of wall time, load averages in runnable tasks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from probes.stats.read import read_text
from probes.stats.snapshot import PROC_FILES, Snapshot

#: PSI resources, in the order they are shown.
PSI_RESOURCES = ("cpu", "memory", "io")
#: The files :func:`read_summary` reads: a subset of a snapshot's sections.
SUMMARY_SECTIONS = ("loadavg", "meminfo", "stat", "psi_cpu", "psi_memory", "psi_io", "sockstat",
                    "snmp")  # fmt: skip
_CPU_LINE = re.compile(r"^cpu\d+$")


@dataclass(frozen=True)
class PsiLine:
    """One PSI resource: the share of the last 10 s in which some / all tasks stalled (%).

    ``full`` is ``None`` for ``cpu`` on kernels before 5.13, which report only ``some``.
    """

    some_avg10: float
    full_avg10: float | None = None


@dataclass(frozen=True)
class StatsSummary:
    """The figures a person asks for first, from one reading of /proc.

    :param cpus: online CPUs (the ``cpuN`` lines of /proc/stat).
    :param load1: the 1-minute load average (runnable + uninterruptible tasks).
    :param mem_total: ``MemTotal`` in bytes; ``mem_available``: ``MemAvailable`` in bytes.
    :param swap_total: ``SwapTotal`` in bytes (0: no swap); ``swap_free``: ``SwapFree``.
    :param psi: resource → its PSI line; empty without CONFIG_PSI (or ``psi=0``).
    :param tcp_inuse: TCP sockets in use (/proc/net/sockstat); ``tcp_tw``: in TIME-WAIT.
    :param tcp_established: ``Tcp: CurrEstab`` of /proc/net/snmp.
    """

    cpus: int
    load1: float | None = None
    load5: float | None = None
    load15: float | None = None
    runnable: int | None = None
    tasks: int | None = None
    mem_total: int | None = None
    mem_available: int | None = None
    swap_total: int | None = None
    swap_free: int | None = None
    psi: dict[str, PsiLine] = field(default_factory=dict)
    tcp_inuse: int | None = None
    tcp_tw: int | None = None
    tcp_established: int | None = None

    @property
    def load_per_cpu(self) -> float | None:
        """Return the 1-minute load divided by the online CPUs."""
        return None if self.load1 is None else self.load1 / max(self.cpus, 1)

    @property
    def mem_available_share(self) -> float | None:
        """Return ``MemAvailable / MemTotal`` (0..1)."""
        if not self.mem_total or self.mem_available is None:
            return None
        return self.mem_available / self.mem_total

    @property
    def swap_used(self) -> int | None:
        """Return the swap in use, in bytes."""
        if self.swap_total is None or self.swap_free is None:
            return None
        return self.swap_total - self.swap_free

    def to_dict(self) -> dict[str, Any]:
        """Return the summary as JSON-ready data (bytes, percent)."""
        return asdict(self)


def _int(table: Mapping[str, Any], key: str) -> int | None:
    value = table.get(key)
    return int(value) if isinstance(value, int | float) else None


def _psi(proc: Mapping[str, Any]) -> dict[str, PsiLine]:
    out: dict[str, PsiLine] = {}
    for res in PSI_RESOURCES:
        data = proc.get(f"psi_{res}") or {}
        some = data.get("some", {}).get("avg10")
        full = data.get("full", {}).get("avg10")
        if some is not None:
            out[res] = PsiLine(float(some), None if full is None else float(full))
    return out


def summarise(proc: Mapping[str, Any], cpus: int | None = None) -> StatsSummary:
    """Summarise a snapshot's parsed procfs sections (``Snapshot.proc``).

    :param proc: section name → parsed file, as :data:`~probes.stats.snapshot.PROC_FILES`.
    :param cpus: online CPUs; default: the ``cpuN`` lines of the ``stat`` section.
    """
    if cpus is None:
        cpus = sum(1 for k in proc.get("stat", {}) if _CPU_LINE.match(k)) or (os.cpu_count() or 1)
    load = proc.get("loadavg", {})
    mem = proc.get("meminfo", {})
    tcp = proc.get("sockstat", {}).get("TCP", {})
    snmp_tcp = proc.get("snmp", {}).get("Tcp", {})
    return StatsSummary(
        cpus=cpus,
        load1=load.get("load1"),
        load5=load.get("load5"),
        load15=load.get("load15"),
        runnable=load.get("runnable"),
        tasks=load.get("tasks"),
        mem_total=_int(mem, "MemTotal"),
        mem_available=_int(mem, "MemAvailable"),
        swap_total=_int(mem, "SwapTotal"),
        swap_free=_int(mem, "SwapFree"),
        psi=_psi(proc),
        tcp_inuse=_int(tcp, "inuse"),
        tcp_tw=_int(tcp, "tw"),
        tcp_established=_int(snmp_tcp, "CurrEstab"),
    )


def snapshot_summary(snap: Snapshot) -> StatsSummary:
    """Summarise a whole snapshot (the CLI's ``probe stats`` and the chat take one)."""
    return summarise(snap.proc)


def read_summary() -> StatsSummary:
    """Read only the files a summary needs (a few small ones: for live panels)."""
    proc: dict[str, Any] = {}
    for section in SUMMARY_SECTIONS:
        path, parser = PROC_FILES[section]
        text = read_text(path)
        if text is not None:
            proc[section] = parser(text)
    return summarise(proc)


# -- the renderer ---------------------------------------------------------------------------


def gib(n: int) -> str:
    """Format bytes as GiB with one decimal (``23.5 GiB``)."""
    return f"{n / (1 << 30):.1f} GiB"


def load_line(s: StatsSummary) -> str | None:
    """Return the load line: the three averages, runnable tasks, and load per CPU."""
    if s.load1 is None:
        return None
    per_cpu = s.load_per_cpu or 0.0
    tasks = f"   runnable {s.runnable}/{s.tasks}" if s.runnable is not None else ""
    return (
        f"load       {s.load1:.2f} {s.load5:.2f} {s.load15:.2f}{tasks}"
        f"   ({s.cpus} CPUs: {per_cpu:.2f} per CPU)"
    )


def memory_line(s: StatsSummary) -> str | None:
    """Return the memory line: total, available (share) and swap (or that there is none)."""
    if s.mem_total is None or s.mem_available is None:
        return None
    share = s.mem_available_share or 0.0
    if not s.swap_total:
        swap = "no swap"
    else:
        swap = f"swap {(s.swap_used or 0) / (1 << 30):.1f} of {gib(s.swap_total)} used"
    return (
        f"memory     total {gib(s.mem_total)}  available {gib(s.mem_available)} "
        f"({share:.0%})  {swap}"
    )


def pressure_line(s: StatsSummary) -> str:
    """Return the PSI line: ``some``/``full`` avg10 per resource, or why there is none."""
    if not s.psi:
        return "pressure   not available (kernel without CONFIG_PSI, or booted with psi=0)"
    parts = []
    for res, line in s.psi.items():
        full = "" if line.full_avg10 is None else f"/{line.full_avg10:.2f}%"
        parts.append(f"{res} {line.some_avg10:.2f}%{full}")
    return "pressure   avg10 some/full: " + "  ".join(parts)


def tcp_line(s: StatsSummary) -> str | None:
    """Return the TCP line: established, in use, TIME-WAIT."""
    if s.tcp_inuse is None and s.tcp_established is None:
        return None
    return (
        f"tcp        established {s.tcp_established if s.tcp_established is not None else '?'}"
        f"  in use {s.tcp_inuse if s.tcp_inuse is not None else '?'}"
        f"  time-wait {s.tcp_tw if s.tcp_tw is not None else '?'}"
    )


#: The width every summary line fits in (columns), and where its figures start.
WIDTH = 80
LABEL = 11


def fit(line: str, width: int = WIDTH, indent: int = LABEL) -> list[str]:
    """Wrap a line wider than ``width`` at its gaps (two spaces or more, past the label)
    onto lines indented by ``indent``, so that no figure is cut: under load a PSI line
    with every avg10 at two digits is wider than 80 columns. A line without such a gap
    is returned whole."""
    out: list[str] = []
    while len(line) > width:
        cut = line.rfind("  ", indent + 1, width + 1)
        if cut < 0:
            break
        out.append(line[:cut].rstrip())
        line = " " * indent + line[cut:].lstrip()
    return [*out, line]


def summary_lines(s: StatsSummary) -> list[str]:
    """Render a summary as fixed-width lines, at most :data:`WIDTH` columns each (a line
    that would be wider continues on the next, indented: figures are never cut)."""
    lines = [load_line(s), memory_line(s), pressure_line(s), tcp_line(s)]
    return [part for line in lines if line is not None for part in fit(line)]


# -- rates ----------------------------------------------------------------------------------

#: Rates shown first in text output, when they moved: dotted name → label.
HEADLINE_RATES = {
    "stat.ctxt": "context switches",
    "stat.intr": "interrupts",
    "stat.processes": "forks",
    "vmstat.pgfault": "page faults",
    "vmstat.pgmajfault": "major page faults",
    "vmstat.pgscan_direct": "pages scanned (direct reclaim)",
    "vmstat.pswpout": "pages swapped out",
    "snmp.Tcp.OutSegs": "TCP segments out",
    "snmp.Tcp.RetransSegs": "TCP retransmits",
    "psi_cpu.some.total": "CPU stall µs (some)",
    "psi_memory.some.total": "memory stall µs (some)",
    "psi_io.some.total": "I/O stall µs (some)",
}
_CPU_TIME = re.compile(r"^stat\.(cpu\d*)\.(\w+)$")


def user_hz() -> int:
    """Return USER_HZ, the unit of /proc/stat's CPU times (ticks per second)."""
    return int(os.sysconf("SC_CLK_TCK"))


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def cpu_share_rates(per_second: Mapping[str, float], hz: int) -> dict[str, float]:
    """Turn /proc/stat CPU-time rates (ticks per second) into percent of one CPU.

    >>> cpu_share_rates({"stat.cpu0.user": 50.0, "stat.ctxt": 9.0}, 100)
    {'stat.cpu0.user': 50.0}
    """
    return {k: v * 100.0 / hz for k, v in per_second.items() if _CPU_TIME.match(k)}


def rates_lines(
    per_second: Mapping[str, float], seconds: float, hz: int | None = None
) -> list[str]:
    """Render per-second rates: the headline counters, CPU time, then the busiest others.

    CPU time (``stat.cpu*.*``, counted in USER_HZ ticks) is shown as a percentage of one CPU
    (``cpu`` sums every CPU, so it reaches 100% times the CPUs).
    """
    cpu = cpu_share_rates(per_second, hz or user_hz())
    lines = [f"rates over {seconds:.2f} s (per second)"]
    for key, label in HEADLINE_RATES.items():
        if key in per_second:
            lines.append(f"  {label:<34} {per_second[key]:>14.1f}")
    total = {k.rsplit(".", 1)[1]: v for k, v in cpu.items() if k.startswith("stat.cpu.")}
    if total:
        busy = sorted(((v, k) for k, v in total.items() if v and k != "idle"), reverse=True)
        lines.append("cpu time, % of one CPU (all CPUs together)")
        lines += [f"  {name:<34} {value:>13.1f}%" for value, name in busy]
        if "idle" in total:
            lines.append(f"  {'idle':<34} {total['idle']:>13.1f}%")
    others = sorted(
        ((k, v) for k, v in per_second.items() if v and k not in HEADLINE_RATES and k not in cpu),
        key=lambda kv: -kv[1],
    )[:20]
    if others:
        lines.append("busiest other counters")
        lines.extend(f"  {_cut(k, 48):<48} {v:>14.1f}" for k, v in others)
    return lines


__all__ = [
    "HEADLINE_RATES",
    "PsiLine",
    "StatsSummary",
    "rates_lines",
    "read_summary",
    "snapshot_summary",
    "summarise",
    "summary_lines",
]
