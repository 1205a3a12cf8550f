"""A snapshot of the kernel's statistics, and per-second rates between two snapshots."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from probes.stats import parse
from probes.stats.parse import Value
from probes.stats.read import read_block_queues, read_kconfig_text, read_text, resolve_cgroup
from probes.stats.sysctl import Sysctl, read_sysctl_keys, read_sysctls

#: procfs files of a snapshot: section name → (path, parser).
PROC_FILES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "meminfo": ("/proc/meminfo", parse.parse_meminfo),
    "vmstat": ("/proc/vmstat", parse.parse_name_value),
    "loadavg": ("/proc/loadavg", parse.parse_loadavg),
    "stat": ("/proc/stat", parse.parse_stat),
    "psi_cpu": ("/proc/pressure/cpu", parse.parse_pressure),
    "psi_memory": ("/proc/pressure/memory", parse.parse_pressure),
    "psi_io": ("/proc/pressure/io", parse.parse_pressure),
    "snmp": ("/proc/net/snmp", parse.parse_snmp),
    "netstat": ("/proc/net/netstat", parse.parse_snmp),
    "sockstat": ("/proc/net/sockstat", parse.parse_sockstat),
    "diskstats": ("/proc/diskstats", parse.parse_diskstats),
    "modules": ("/proc/modules", parse.parse_modules),
}

#: cgroup v2 files of a snapshot: file name → parser.
CGROUP_FILES: dict[str, Callable[[str], Any]] = {
    "cpu.stat": parse.parse_name_value,
    "memory.stat": parse.parse_name_value,
    "memory.events": parse.parse_name_value,
    "memory.current": parse.typed_value,
    "memory.max": parse.typed_value,
    "memory.swap.current": parse.typed_value,
    "pids.current": parse.typed_value,
    "pids.max": parse.typed_value,
    "io.stat": parse.parse_cgroup_io_stat,
    "cpu.pressure": parse.parse_pressure,
    "memory.pressure": parse.parse_pressure,
    "io.pressure": parse.parse_pressure,
}

#: Sections whose numbers are counters (they only grow), so a rate makes sense.
COUNTER_SECTIONS = (
    "vmstat",
    "stat",
    "psi_cpu",
    "psi_memory",
    "psi_io",
    "snmp",
    "netstat",
    "diskstats",
)
#: Keys of counter sections that are gauges nonetheless (flattened names, prefix match).
GAUGE_PREFIXES = (
    "vmstat.nr_",
    "stat.procs_",
    "stat.btime",
    "snmp.Tcp.CurrEstab",
    "snmp.Tcp.MaxConn",
    "snmp.Tcp.Rto",
    "snmp.Ip.Forwarding",
    "snmp.Ip.DefaultTTL",
)


@dataclass
class Snapshot:
    """Everything read at one instant; sections missing on this kernel are left out.

    :param taken: ``time.monotonic()`` when the snapshot started (seconds).
    :param duration_ms: how long taking it took, in milliseconds.
    :param proc: section name → parsed procfs file (see :data:`PROC_FILES`).
    :param block_queues: device → ``queue/`` attribute → value.
    :param sysctls: dotted name → :class:`Sysctl`.
    :param cgroup: the cgroup's path and parsed files, when one was asked for.
    :param cmdline: /proc/cmdline.
    :param kconfig: CONFIG_* → value, and where it was read from in ``kconfig_source``.
    :param taint: the taint mask and its decoded flags.
    """

    taken: float
    duration_ms: float = 0.0
    proc: dict[str, Any] = field(default_factory=dict)
    block_queues: dict[str, dict[str, Value]] = field(default_factory=dict)
    sysctls: dict[str, Sysctl] = field(default_factory=dict)
    cgroup: dict[str, Any] = field(default_factory=dict)
    cmdline: str = ""
    kconfig: dict[str, str | int | bool] = field(default_factory=dict)
    kconfig_source: str | None = None
    taint: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the snapshot as JSON-ready data."""
        return asdict(self)

    def counters(self) -> dict[str, int | float]:
        """Return the snapshot's counters under dotted names (``snmp.Tcp.RetransSegs``)."""
        flat: dict[str, int | float] = {}
        for section in COUNTER_SECTIONS:
            if section in self.proc:
                _flatten(section, self.proc[section], flat)
        for name in ("cpu.stat", "memory.events", "cpu.pressure", "memory.pressure", "io.pressure"):
            if name in self.cgroup.get("files", {}):
                _flatten(f"cgroup.{name}", self.cgroup["files"][name], flat)
        return {
            k: v for k, v in flat.items() if not k.startswith(GAUGE_PREFIXES) and "avg" not in k
        }


def _flatten(prefix: str, value: Any, out: dict[str, int | float]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = value


def read_section(section: str) -> Any:
    """Read and parse one procfs file of :data:`PROC_FILES` (``"psi_cpu"``), or ``None``.

    :raises KeyError: not a section of :data:`PROC_FILES`.
    """
    path, parser = PROC_FILES[section]
    text = read_text(path)
    return parser(text) if text is not None else None


def _read_sections(snap: Snapshot, sections: Iterable[str]) -> None:
    for section in sections:
        parsed = read_section(section)
        if parsed is not None:
            snap.proc[section] = parsed


def _read_cgroup(snap: Snapshot, cgroup: str) -> None:
    directory = resolve_cgroup(cgroup)
    files = {}
    for name, parser in CGROUP_FILES.items():
        text = read_text(str(directory / name))
        if text is not None:
            files[name] = parser(text)
    snap.cgroup = {"path": str(directory), "files": files}


def take_snapshot(
    cgroup: str | None = None, *, sysctls: bool = True, kconfig: bool = True
) -> Snapshot:
    """Read every statistic this module knows.

    :param cgroup: a cgroup v2 path (absolute, or below the cgroup2 mount) to include.
    :param sysctls: include the whole /proc/sys tree.
    :param kconfig: include the kernel configuration.
    :raises ProbeError: the cgroup was asked for and does not exist.
    """
    start = time.monotonic()
    snap = Snapshot(taken=start)
    _read_sections(snap, PROC_FILES)
    snap.block_queues = read_block_queues()
    if sysctls:
        snap.sysctls = read_sysctls()
    if cgroup is not None:
        _read_cgroup(snap, cgroup)
    snap.cmdline = (read_text("/proc/cmdline") or "").strip()
    if kconfig and (found := read_kconfig_text()) is not None:
        snap.kconfig = parse.parse_kconfig(found[0])
        snap.kconfig_source = found[1]
    tainted = parse.typed_value(read_text("/proc/sys/kernel/tainted") or "0")
    mask = tainted if isinstance(tainted, int) else 0
    snap.taint = {"mask": mask, "flags": parse.decode_taint(mask)}
    snap.duration_ms = (time.monotonic() - start) * 1000
    return snap


def take_partial_snapshot(
    sections: Iterable[str], cgroup: str | None = None, sysctls: Iterable[str] = ()
) -> Snapshot:
    """Read only some of a snapshot: procfs sections, a cgroup and some sysctls.

    Cheap enough to take every second (no /proc/sys walk, no block queues, no kconfig).

    :param sections: names of :data:`PROC_FILES` (``"netstat"``, ``"psi_memory"``).
    :param cgroup: a cgroup (v2 files; a v1 directory's files of the same names too).
    :param sysctls: dotted names; those absent here are left out.
    :raises ProbeError: the cgroup does not exist.
    """
    start = time.monotonic()
    snap = Snapshot(taken=start)
    _read_sections(snap, sections)
    if cgroup is not None:
        _read_cgroup(snap, cgroup)
    snap.sysctls = read_sysctl_keys(sysctls)
    snap.duration_ms = (time.monotonic() - start) * 1000
    return snap


def rates(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """Return per-second rates of every counter that grew between two snapshots.

    Counters that went down (a device or cgroup that was reset) are left out.

    :param before: the earlier snapshot.
    :param after: the later one.
    :return: dotted counter name → increase per second.
    :raises ValueError: the snapshots are not in time order.
    """
    seconds = after.taken - before.taken
    if seconds <= 0:
        raise ValueError("the second snapshot must be taken after the first")
    a, b = before.counters(), after.counters()
    return {k: (b[k] - a[k]) / seconds for k in b if k in a and b[k] >= a[k]}
