"""What the detectors read: one :class:`Observation` of the kernel over a window.

Reading (:func:`observe`) is kept apart from parsing (``parse_*``, pure functions
tested on inline text). The sources of truth: ``probes.stats`` (netstat, snmp,
sockstat, vmstat, PSI, /proc/sys, cgroup files), /proc/net/softnet_stat and
/proc/net/stat/{arp,ndisc}_cache (per-CPU and neighbour-table counters),
/proc/*/fdinfo (inotify instances and watches per user), kernel log lines
(``probes.logs``) and, on demand, the ``syserrors`` eBPF probe (failed system
calls by syscall and errno).
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistant.errors import InputError, NotAvailable
from probes.errors import ProbeError
from probes.stats import Snapshot, Sysctl, take_snapshot, typed_value
from probes.stats.read import read_text
from probes.stats.snapshot import PROC_FILES

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
    softnet: list[tuple[int, int, int]] = field(default_factory=list)
    neigh_table_fulls: dict[str, int] = field(default_factory=dict)
    inotify: dict[int, tuple[int, int]] = field(default_factory=dict)
    log: dict[str, list[str]] = field(default_factory=dict)
    log_counts: dict[str, int] = field(default_factory=dict)
    listeners: list[tuple[str, int, int]] = field(default_factory=list)
    syscall_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    traced: bool = False
    netns: str | None = None
    cgroup_memory: dict[str, int] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    def count(self, name: str) -> float:
        """Return a counter's increase (0 when the kernel has no such counter)."""
        return self.counters.get(name, 0)

    def sysctl(self, key: str) -> Any:
        """Return a /proc/sys value (int, list of ints or text), or ``None``."""
        entry = self.after.sysctls.get(key)
        return None if entry is None else entry.value

    def writable(self, key: str) -> bool:
        """Tell whether a /proc/sys key may be written here (False in a netns for global keys)."""
        entry = self.after.sysctls.get(key)
        return entry is not None and entry.writable

    def gauge(self, section: str, *path: str) -> Any:
        """Return a value of the last snapshot's procfs section (``sockstat``, ``TCP``, ``tw``)."""
        value: Any = self.after.proc.get(section)
        for part in path:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    def cgroup_file(self, name: str) -> Any:
        """Return a parsed file of the cgroup asked for, or ``None``."""
        return self.after.cgroup.get("files", {}).get(name)

    def errors(self, syscalls: Iterable[str], errno: str) -> int:
        """Return the failed calls of any of ``syscalls`` with ``errno`` in the window."""
        return sum(self.syscall_errors.get((s, errno), 0) for s in syscalls)

    def window_text(self) -> str:
        """Say what the counts cover: ``in 10 s`` or ``since boot (3.2 h)``."""
        if self.window_s is None:
            return f"since boot ({self.uptime_s / 3600:.1f} h)"
        return f"in {self.window_s:.3g} s"


# --- parsing (pure) --------------------------------------------------------------------


def parse_softnet(text: str) -> list[tuple[int, int, int]]:
    """Parse /proc/net/softnet_stat: per CPU, packets processed, dropped and time squeezes.

    Columns are hexadecimal ``unsigned int`` counters; the first three are
    ``processed``, ``dropped`` (input queue longer than netdev_max_backlog) and
    ``time_squeeze`` (net_rx_action ran out of netdev_budget or netdev_budget_usecs).
    """
    rows = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 3:
            rows.append((int(cols[0], 16), int(cols[1], 16), int(cols[2], 16)))
    return rows


def parse_neigh_stat(text: str) -> int:
    """Return ``table_fulls`` of /proc/net/stat/arp_cache (or ndisc_cache), summed over CPUs.

    The header names the columns; values are hexadecimal.
    """
    lines = text.splitlines()
    if not lines:
        return 0
    names = lines[0].split()
    if "table_fulls" not in names:
        return 0
    col = names.index("table_fulls")
    return sum(int(cols[col], 16) for cols in (ln.split() for ln in lines[1:]) if len(cols) > col)


def parse_fdinfo_watches(text: str) -> int:
    """Count the watches of one inotify file descriptor (``inotify wd:`` lines of its fdinfo)."""
    return sum(1 for line in text.splitlines() if line.startswith("inotify wd:"))


def parse_ss_listeners(text: str) -> list[tuple[str, int, int]]:
    """Parse ``ss -ltnH``: per listening socket, its address, accept-queue length and limit.

    For a listener ss shows Recv-Q = the accept queue now (``sk_ack_backlog``) and
    Send-Q = its limit (``sk_max_ack_backlog``: min(listen()'s backlog, somaxconn)).
    """
    out = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 4 and cols[0] == "LISTEN" and cols[1].isdigit() and cols[2].isdigit():
            out.append((cols[3], int(cols[1]), int(cols[2])))
    return out


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


def softnet_deltas(
    before: list[tuple[int, int, int]] | None, after: list[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    """Return per-CPU increases of softnet_stat (unsigned 32-bit counters wrap)."""
    if before is None or len(before) != len(after):
        return after
    return [
        tuple((b - a) % (1 << 32) for a, b in zip(x, y, strict=True))  # type: ignore[misc]
        for x, y in zip(before, after, strict=True)
    ]


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


# --- reading ---------------------------------------------------------------------------

#: The procfs sections of probes' snapshot that the scenarios read (the rest — diskstats,
#: modules, block queues, the whole /proc/sys — is left out, so watching stays cheap).
SECTIONS = ("meminfo", "vmstat", "loadavg", "psi_cpu", "psi_memory", "psi_io", "snmp",
            "netstat", "sockstat")  # fmt: skip
#: /proc/sys values read besides the keys the scenarios may propose.
GAUGE_SYSCTLS = ("net.netfilter.nf_conntrack_count", "fs.file-nr", "fs.aio-nr")


def read_sysctl_keys(keys: Iterable[str], root: str = "/proc/sys") -> dict[str, Sysctl]:
    """Read some /proc/sys keys as typed values with their writability (absent ones left out).

    :param keys: dotted names (``net.core.somaxconn``).
    """
    out: dict[str, Sysctl] = {}
    is_root = os.geteuid() == 0
    for key in keys:
        path = os.path.join(root, *key.split("."))
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        text = read_text(path)
        if text is None:
            continue
        writable = bool(mode & 0o200) if is_root else os.access(path, os.W_OK)
        out[key] = Sysctl(key, typed_value(text), writable)
    return out


def light_snapshot(cgroup: str | None = None, sysctls: Iterable[str] = ()) -> Snapshot:
    """Take the part of probes' snapshot the scenarios read, with its own parsers.

    :param cgroup: a cgroup (v2 files; a v1 directory's files of the same names too).
    :param sysctls: the /proc/sys keys to read.
    :raises ProbeError: the cgroup does not exist.
    """
    start = time.monotonic()
    if cgroup is not None:
        # probes' own snapshot reads the cgroup; /proc/sys comes from the keys below.
        snap = take_snapshot(cgroup, sysctls=False, kconfig=False)
    else:
        snap = Snapshot(taken=start)
        for section in SECTIONS:
            path, parser = PROC_FILES[section]
            text = read_text(path)
            if text is not None:
                snap.proc[section] = parser(text)
    snap.sysctls = read_sysctl_keys(sysctls)
    snap.duration_ms = (time.monotonic() - start) * 1000
    return snap


def read_softnet() -> list[tuple[int, int, int]]:
    """Read /proc/net/softnet_stat (empty when it cannot be read)."""
    text = read_text("/proc/net/softnet_stat")
    return parse_softnet(text) if text else []


def read_neigh_fulls() -> dict[str, int]:
    """Read ``table_fulls`` of the ARP and NDISC neighbour tables."""
    out = {}
    for table in ("arp_cache", "ndisc_cache"):
        text = read_text(f"/proc/net/stat/{table}")
        if text:
            out[table] = parse_neigh_stat(text)
    return out


def read_inotify_usage(proc: Path = Path("/proc")) -> dict[int, tuple[int, int]]:
    """Count inotify instances and watches per user, over every process's open files.

    :return: uid → (instances, watches). Processes that vanish or hide are skipped.
    """
    usage: dict[int, list[int]] = {}
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            uid = pid_dir.stat().st_uid
            fds = os.listdir(pid_dir / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(pid_dir / "fd" / fd) != "anon_inode:inotify":
                    continue
            except OSError:
                continue
            text = read_text(str(pid_dir / "fdinfo" / fd)) or ""
            counts = usage.setdefault(uid, [0, 0])
            counts[0] += 1
            counts[1] += parse_fdinfo_watches(text)
    return {uid: (c[0], c[1]) for uid, c in usage.items()}


#: cgroup v1 memory files read for ``--cgroup`` (v2 files come with the snapshot).
CGROUP_V1_MEMORY = ("usage_in_bytes", "limit_in_bytes", "failcnt")


def read_cgroup_v1_memory(directory: str | None) -> dict[str, int]:
    """Read a cgroup v1 memory controller's usage, limit (bytes) and failcnt, if it is one."""
    out: dict[str, int] = {}
    if directory is None:
        return out
    for name in CGROUP_V1_MEMORY:
        text = read_text(f"{directory}/memory.{name}")
        if text is not None and text.strip().isdigit():
            out[name] = int(text)
    return out


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


def read_listeners() -> list[tuple[str, int, int]]:
    """Run ``ss -ltnH`` (iproute2) in this network namespace; empty when it cannot run."""
    import subprocess

    try:
        proc = subprocess.run(
            ["ss", "-ltnH"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_ss_listeners(proc.stdout) if proc.returncode == 0 else []


def _uptime() -> float:
    text = read_text("/proc/uptime") or "0"
    return float(text.split()[0])


# --- network namespaces ----------------------------------------------------------------

CLONE_NEWNET = 0x40000000


def netns_path(spec: str) -> str:
    """Return the namespace file for ``--netns NAME|PID`` (``ip netns`` name or a process id).

    :raises InputError: no such namespace.
    """
    path = f"/proc/{spec}/ns/net" if spec.isdigit() else f"/run/netns/{spec}"
    if not os.path.exists(path):
        what = "process" if spec.isdigit() else "network namespace (ip netns list)"
        raise InputError(f"no {what} {spec!r}", "give an `ip netns` name or a pid")
    return path


def enter_netns(spec: str) -> None:
    """Move this process into a network namespace, so that /proc/net and /proc/sys/net are its.

    :raises NotAvailable: setns(2) failed (needs CAP_SYS_ADMIN).
    """
    path = netns_path(spec)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NotAvailable(
                f"cannot enter network namespace {spec}: {os.strerror(err)}", "run as root"
            )
    finally:
        os.close(fd)


# --- one observation -------------------------------------------------------------------

#: What :func:`observe` reads besides the snapshot, so tests and the benchmark can feed
#: captured text instead.
Extras = Callable[[], tuple[list[tuple[int, int, int]], dict[str, int]]]


def _extras() -> tuple[list[tuple[int, int, int]], dict[str, int]]:
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
    cgroup: str | None = None,
    netns: str | None = None,
    trace: bool = False,
    read_log: bool = True,
) -> Observation:
    """Observe the kernel: counters over ``interval`` seconds, or since boot without one.

    :param cgroup: a cgroup path whose statistics (memory pressure, limits, pids) are read too.
    :param netns: the namespace read (the caller has entered it; recorded for the output).
    :param trace: run the ``syserrors`` eBPF probe for the window (root, bpftrace; about
        10 % overhead on syscall-heavy work while it runs).
    :param read_log: read kernel log lines from /dev/kmsg (those of the window only).
    :raises ProbeError: the cgroup does not exist.
    """
    from assistant.tuning.scenarios import KNOWN_KEYS

    notices: list[str] = []
    before: dict[str, Any] = {}

    def first() -> None:
        snap = light_snapshot(cgroup)
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
    after = light_snapshot(cgroup, (*KNOWN_KEYS, *GAUGE_SYSCTLS))
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
        uptime_s=_uptime(),
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
