"""What the detectors read: one :class:`Observation` of the kernel over a window.

:func:`observe` gathers what ``probes`` read (the kernel is read there only):
``probes.stats`` (netstat, snmp, sockstat, vmstat, PSI, /proc/sys, cgroup files,
per-CPU softnet and neighbour-table counters, inotify instances and watches per
user, listeners), kernel log lines (``probes.logs``) and, on demand, the
``syserrors`` eBPF probe (failed system calls by syscall and errno). What is
computed here (counter increases, log lines by pattern) is pure.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from probes.errors import ProbeError
from probes.stats import Snapshot, Value, read_uptime, take_partial_snapshot
from probes.stats.inotify import read_inotify_usage
from probes.stats.net import (
    Listener,
    SoftnetRow,
    read_listeners,
    read_neigh_fulls,
    read_softnet,
    softnet_deltas,
)
from probes.stats.read import read_cgroup_v1_memory

#: Kernel log lines a scenario quotes, by name: a regex over the record's text.
LOG_PATTERNS: dict[str, re.Pattern[str]] = {
    "syn_flood": re.compile(r"Possible SYN flooding on port"),
    "conntrack_full": re.compile(r"nf_conntrack: table full, dropping packet"),
    "neigh_overflow": re.compile(r"neighbou?r table overflow"),
    "tw_overflow": re.compile(r"time wait bucket table overflow"),
    "file_max": re.compile(r"VFS: file-max limit \d+ reached"),
    "alloc_failure": re.compile(r"page allocation failure: order:\d+"),
    "pid_max": re.compile(r"fork\(\) failed|cgroup: fork rejected by pids controller"),
}
#: The most log lines kept per pattern (the evidence quotes the first ones).
MAX_LOG_LINES = 5


@dataclass
class Observation:
    """The kernel over a window (or since boot), as the detectors see it.

    :param window_s: seconds between the two snapshots; ``None`` when the counters are
        totals since boot.
    :param uptime_s: seconds since boot (for since-boot rates).
    :param counters: dotted counter name (``netstat.TcpExt.ListenOverflows``) → increase
        over the window, or the total since boot.
    :param after: the (last) snapshot: gauges, /proc/sys values, cgroup files.
    :param softnet: per-CPU ``(processed, dropped, time_squeeze)`` increases.
    :param neigh_table_fulls: neighbour table → ``table_fulls`` increase (arp_cache, ndisc_cache).
    :param inotify: uid → ``(instances, watches)`` held now.
    :param log: pattern name → the distinct matching kernel log lines in the window.
    :param log_counts: pattern name → how many lines matched.
    :param listeners: listening TCP sockets ``(address, accept queue, its limit)``, read
        only when listen overflows were counted.
    :param syscall_errors: ``(syscall, errno)`` → failed calls in the window (from the
        ``syserrors`` probe; empty when it did not run).
    :param traced: the ``syserrors`` probe ran for the window.
    :param netns: the network namespace read (``None``: this process's own).
    :param cgroup_memory: a cgroup v1 memory controller's ``usage_in_bytes`` and
        ``limit_in_bytes`` (bytes, now) and ``failcnt`` (increase), when ``--cgroup`` is one.
    :param notices: lines for the user about sources that could not be read.
    """

    window_s: float | None
    uptime_s: float
    counters: dict[str, float]
    after: Snapshot
    softnet: list[SoftnetRow] = field(default_factory=list)
    neigh_table_fulls: dict[str, int] = field(default_factory=dict)
    inotify: dict[int, tuple[int, int]] = field(default_factory=dict)
    log: dict[str, list[str]] = field(default_factory=dict)
    log_counts: dict[str, int] = field(default_factory=dict)
    listeners: list[Listener] = field(default_factory=list)
    syscall_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    traced: bool = False
    netns: str | None = None
    cgroup_memory: dict[str, int] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    def count(self, name: str) -> float:
        """Return a counter's increase (0 when the kernel has no such counter)."""
        return self.counters.get(name, 0)

    def sysctl(self, key: str) -> Value | None:
        """Return a /proc/sys value (int, list of ints or text), or ``None``."""
        entry = self.after.sysctls.get(key)
        return None if entry is None else entry.value

    def writable(self, key: str) -> bool:
        """Tell whether a /proc/sys key may be written here (False in a netns for global keys)."""
        entry = self.after.sysctls.get(key)
        return entry is not None and entry.writable

    def gauge(self, section: str, *path: str) -> int | float | None:
        """Return a number of the last snapshot's procfs section (``sockstat``, ``TCP``, ``tw``).

        :return: ``None`` when the section has no such number.
        """
        value: object = self.after.proc.get(section)
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    def cgroup_file(self, name: str) -> Value | None:
        """Return a one-value file of the cgroup asked for (``pids.max``), or ``None``."""
        value = self.after.cgroup.get("files", {}).get(name)
        return value if isinstance(value, int | str | list) else None

    def errors(self, syscalls: Iterable[str], errno: str) -> int:
        """Return the failed calls of any of ``syscalls`` with ``errno`` in the window."""
        return sum(self.syscall_errors.get((s, errno), 0) for s in syscalls)

    def window_text(self) -> str:
        """Say what the counts cover: ``in 10 s`` or ``since boot (3.2 h)``."""
        if self.window_s is None:
            return f"since boot ({self.uptime_s / 3600:.1f} h)"
        return f"in {self.window_s:.3g} s"


# --- parsing (pure) --------------------------------------------------------------------


def match_log(lines: Iterable[str]) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Group kernel log lines by the :data:`LOG_PATTERNS` they match.

    :return: pattern name → the first distinct matching lines, and → how many lines matched.
    """
    found: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for line in lines:
        for name, pattern in LOG_PATTERNS.items():
            if pattern.search(line):
                counts[name] = counts.get(name, 0) + 1
                kept = found.setdefault(name, [])
                text = line.strip()
                if len(kept) < MAX_LOG_LINES and text not in kept:
                    kept.append(text)
    return found, counts


def counter_deltas(
    before: Mapping[str, float] | None, after: Mapping[str, float]
) -> dict[str, float]:
    """Return each counter's increase (a counter that went down is left out)."""
    if before is None:
        return dict(after)
    return {k: v - before[k] for k, v in after.items() if k in before and v >= before[k]}


def syscall_errors_of(result: Any) -> dict[tuple[str, str], int]:
    """Turn the ``syserrors`` probe's ``@errors`` map into ``(syscall, errno)`` → count."""
    errors = result.maps.get("@errors") or result.maps.get("errors")
    out: dict[tuple[str, str], int] = {}
    if errors is None:
        return out
    for entry in errors.entries:
        if len(entry.labels) >= 2:
            key = (entry.labels[0], entry.labels[1])
            out[key] = out.get(key, 0) + entry.total
    return out


# --- reading (through probes) ----------------------------------------------------------

#: The procfs sections of probes' snapshot that the scenarios read (the rest — diskstats,
#: modules, block queues, the whole /proc/sys — is left out, so watching stays cheap).
SECTIONS = ("meminfo", "vmstat", "loadavg", "psi_cpu", "psi_memory", "psi_io", "snmp",
            "netstat", "sockstat")  # fmt: skip


def _partial_snapshot(cgroup: str | None, sysctls: Iterable[str] = ()) -> Snapshot:
    return take_partial_snapshot(SECTIONS, cgroup, sysctls)


def _kmsg_lines(since_s: float | None) -> tuple[list[str], str | None]:
    # Kernel log lines stamped at or after a CLOCK_MONOTONIC time (None: all of the buffer);
    # printk stamps with local_clock(), which runs with CLOCK_MONOTONIC closely enough.
    from probes.logs import iter_kmsg

    since_us = None if since_s is None else int(since_s * 1e6)
    try:
        lines = [
            r.text
            for r in iter_kmsg()
            if since_us is None or r.ts_us is None or r.ts_us >= since_us
        ]
    except ProbeError as exc:
        return [], f"kernel log not read: {exc.one_line()}"
    return lines, None


# --- one observation -------------------------------------------------------------------


def _extras() -> tuple[list[SoftnetRow], dict[str, int]]:
    return read_softnet(), read_neigh_fulls()


def _trace_window(seconds: float, start: Callable[[], None]) -> tuple[Any, str | None]:
    from probes.bpf import run_probe

    try:
        return run_probe("syserrors", duration=seconds, on_attach=start), None
    except ProbeError as exc:
        return None, f"syserrors probe not run: {exc.one_line()}"


def observe(
    interval: float | None = None,
    *,
    sysctls: Iterable[str],
    cgroup: str | None = None,
    netns: str | None = None,
    trace: bool = False,
    read_log: bool = True,
) -> Observation:
    """Observe the kernel: counters over ``interval`` seconds, or since boot without one.

    :param sysctls: the /proc/sys keys read at the end of the window (dotted names; tune
        passes :data:`~assistant.tuning.scenarios.READ_KEYS`).
    :param cgroup: a cgroup path whose statistics (memory pressure, limits, pids) are read too.
    :param netns: the namespace read (the caller has entered it; recorded for the output).
    :param trace: run the ``syserrors`` eBPF probe for the window (root, bpftrace; about
        10 % overhead on syscall-heavy work while it runs).
    :param read_log: read kernel log lines from /dev/kmsg (those of the window only).
    :raises ProbeError: the cgroup does not exist.
    """
    notices: list[str] = []
    before: dict[str, Any] = {}

    def first() -> None:
        snap = _partial_snapshot(cgroup)
        before.update(
            snap=snap, counters=snap.counters(), extras=_extras(),
            cg_memory=read_cgroup_v1_memory(snap.cgroup.get("path")),
        )  # fmt: skip

    errors: dict[tuple[str, str], int] = {}
    traced = False
    if interval is None:
        if trace:
            notices.append("--trace needs --interval: the syserrors probe was not run")
    elif trace:
        result, why = _trace_window(interval, first)
        if result is None:
            notices.append(str(why))
            first()
            time.sleep(interval)
        else:
            errors, traced = syscall_errors_of(result), True
    else:
        first()
        time.sleep(interval)
    after = _partial_snapshot(cgroup, sysctls)
    softnet, fulls = _extras()
    log: dict[str, list[str]] = {}
    log_counts: dict[str, int] = {}
    if read_log:
        lines, why = _kmsg_lines(before["snap"].taken if before else None)
        if why:
            notices.append(why)
        log, log_counts = match_log(lines)
    window = None if interval is None else after.taken - before["snap"].taken
    memory = read_cgroup_v1_memory(after.cgroup.get("path"))
    if "failcnt" in memory and "cg_memory" in before:
        memory["failcnt"] -= before["cg_memory"].get("failcnt", 0)
    b_soft, b_fulls = before["extras"] if before else (None, {})
    counters = counter_deltas(before.get("counters"), after.counters())
    # A counter says that queues overflowed, not whose limit bound them: ask ss then.
    overflowed = counters.get("netstat.TcpExt.ListenOverflows", 0) > 0
    return Observation(
        window_s=window,
        uptime_s=read_uptime(),
        counters=counters,
        after=after,
        softnet=softnet_deltas(b_soft, softnet),
        neigh_table_fulls={k: v - b_fulls.get(k, 0) for k, v in fulls.items()},
        inotify=read_inotify_usage(),
        log=log,
        log_counts=log_counts,
        listeners=read_listeners() if overflowed else [],
        syscall_errors=errors,
        traced=traced,
        netns=netns,
        cgroup_memory=memory,
        notices=notices,
    )
