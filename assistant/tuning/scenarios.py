"""The scenario table: what each tuning scenario reads, when it fires, what it proposes.

A scenario is a row: an id, a title, its kernel sources of truth, the keys it may
change, and a detector — a small function from an :class:`Observation` to a
:class:`Detection` (evidence lines quoting counter, rate, window and log line, and
proposals whose values come from :mod:`assistant.tuning.values`) or ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from assistant.tuning.evidence import Observation
from assistant.tuning.values import Machine, cap, grow, keep_at_most, ordered_growth, shrink


@dataclass(frozen=True)
class Proposal:
    """One key's proposed value.

    :param key: the sysctl (dotted name) or, for a cgroup limit, ``cgroup:<file>``.
    :param current: its value now (int or list of ints).
    :param value: the proposed value.
    """

    key: str
    current: int | list[int]
    value: int | list[int]

    @property
    def direction(self) -> str:
        """``up`` or ``down``: a range's size, a min/default/max vector's max, or the value."""
        return "up" if _magnitude(self.value) > _magnitude(self.current) else "down"


def _magnitude(value: int | list[int]) -> int:
    # A two-element vector is a range (its size counts); a longer one is min/default/max
    # (its max counts, then its min).
    if isinstance(value, int):
        return value
    if len(value) == 2:
        return value[1] - value[0]
    return value[-1] * (1 << 32) + value[0]


@dataclass
class Detection:
    """What a detector found: evidence lines, proposals, and notes (limits, caveats)."""

    evidence: list[str]
    proposals: list[Proposal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


Detector = Callable[[Observation, Machine], Detection | None]


@dataclass(frozen=True)
class Scenario:
    """A row of the table.

    :param sources: the kernel's sources of truth the detector reads.
    :param keys: every key the scenario may propose.
    :param effect: what the change should do, for ``expected_effect``.
    :param risk: the risk tune gives its recommendations.
    """

    id: str
    title: str
    sources: tuple[str, ...]
    keys: tuple[str, ...]
    detect: Detector
    rationale: str
    effect: str
    risk: str = "low"


# --- evidence helpers ------------------------------------------------------------------


def _counter_line(obs: Observation, name: str) -> str:
    n = obs.count(name)
    section, _, rest = name.partition(".")
    rate = ""
    seconds = obs.window_s if obs.window_s is not None else obs.uptime_s
    if seconds > 0:
        rate = f" ({n / seconds:.3g}/s)"
    return f"{section} {rest} +{n:g} {obs.window_text()}{rate}"


def _fired(obs: Observation, names: Sequence[str], minimum: float) -> list[str]:
    return [_counter_line(obs, n) for n in names if obs.count(n) >= minimum]


def _log_lines(obs: Observation, pattern: str) -> list[str]:
    lines = obs.log.get(pattern, [])
    n = obs.log_counts.get(pattern, len(lines))
    head = f"kernel log, {n} lines {obs.window_text()}" if n > len(lines) else "kernel log"
    return [f"{head}: {line}" for line in lines]


def _int(obs: Observation, key: str) -> int | None:
    value = obs.sysctl(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ints(obs: Observation, key: str) -> list[int] | None:
    value = obs.sysctl(key)
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return list(value)
    return None


def _sysctl_line(obs: Observation, key: str) -> str:
    value = obs.sysctl(key)
    shown = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return f"sysctl {key} = {shown}"


def _grown(obs: Observation, m: Machine, key: str, factor: float) -> Proposal | None:
    current = _int(obs, key)
    if current is None:
        return None
    new = grow(current, factor, cap(key, m))
    return Proposal(key, current, new) if new != current else None


def _factor(count: float, heavy: float) -> float:
    # Heavy loss takes the agent's whole step (x4); light loss a gentle one (x2).
    return 4.0 if count >= heavy else 2.0


def _syscall_line(obs: Observation, syscalls: Sequence[str], errno: str) -> str:
    n = obs.errors(syscalls, errno)
    return (
        f"syserrors probe: {'/'.join(syscalls)} failed {n} times with {errno} {obs.window_text()}"
    )


# --- the detectors ---------------------------------------------------------------------

LISTEN = ("netstat.TcpExt.ListenOverflows", "netstat.TcpExt.ListenDrops")


def listen_overflow(obs: Observation, m: Machine) -> Detection | None:
    """Accept queues overflowed: connections completed the handshake but found no room."""
    lines = _fired(obs, LISTEN, 10)
    if not lines:
        return None
    d = Detection([*lines, _sysctl_line(obs, "net.core.somaxconn")])
    somaxconn_now = _int(obs, "net.core.somaxconn") or 0
    full = [(a, q, limit) for a, q, limit in obs.listeners if q >= limit]
    d.evidence += [f"ss: {a} accept queue {q} of {limit} (full)" for a, q, limit in full]
    if full and all(limit < somaxconn_now for _, _, limit in full):
        # Every full queue is bound by its program's listen() backlog, not by somaxconn.
        d.notes.append(
            "every full accept queue is below somaxconn: the program's listen() backlog is "
            "the limit (it is fixed at listen(); restart the program after raising it)"
        )
        return d
    factor = _factor(obs.count(LISTEN[0]), 100)
    somaxconn = _grown(obs, m, "net.core.somaxconn", factor)
    if somaxconn is not None:
        d.proposals.append(somaxconn)
        syn = _int(obs, "net.ipv4.tcp_max_syn_backlog")
        if syn is not None and syn < int(somaxconn.value):  # type: ignore[arg-type]
            want = min(int(somaxconn.value), cap("net.ipv4.tcp_max_syn_backlog", m))  # type: ignore[arg-type]
            new = grow(syn, want / max(syn, 1), want)
            if new != syn:
                d.proposals.append(Proposal("net.ipv4.tcp_max_syn_backlog", syn, new))
    d.notes.append(
        "the accept queue is min(the backlog a program passes to listen(), somaxconn): "
        "a program that asks for less must be changed too"
    )
    return d


SYN = ("netstat.TcpExt.TCPReqQFullDrop", "netstat.TcpExt.TCPReqQFullDoCookies")


def syn_flood(obs: Observation, m: Machine) -> Detection | None:
    """SYN queues filled: half-open connections dropped, or answered with cookies."""
    lines = _fired(obs, SYN[:1], 1) + _fired(obs, SYN[1:], 10)
    if not lines and not (obs.netns is None and obs.log.get("syn_flood")):
        return None
    d = Detection(lines + _log_lines(obs, "syn_flood"))
    d.evidence.append(_sysctl_line(obs, "net.ipv4.tcp_max_syn_backlog"))
    backlog = _grown(obs, m, "net.ipv4.tcp_max_syn_backlog", 2)
    if backlog is not None:
        d.proposals.append(backlog)
    cookies = _int(obs, "net.ipv4.tcp_syncookies")
    d.evidence.append(_sysctl_line(obs, "net.ipv4.tcp_syncookies"))
    if cookies == 0:
        d.proposals.append(Proposal("net.ipv4.tcp_syncookies", 0, 1))
    else:
        d.notes.append("net.ipv4.tcp_syncookies stays on: it is the defence against a real flood")
    return d


def softnet_backlog(obs: Observation, m: Machine) -> Detection | None:
    """Per-CPU input queues dropped packets, or the receive softirq ran out of budget."""
    dropped = sum(r[1] for r in obs.softnet)
    squeezed = sum(r[2] for r in obs.softnet)
    processed = sum(r[0] for r in obs.softnet)
    d = Detection([])
    if dropped >= 1:
        per_cpu = ", ".join(f"cpu{i} {r[1]}" for i, r in enumerate(obs.softnet) if r[1])
        d.evidence.append(f"softnet_stat dropped +{dropped} {obs.window_text()} ({per_cpu})")
        d.evidence.append(_sysctl_line(obs, "net.core.netdev_max_backlog"))
        p = _grown(obs, m, "net.core.netdev_max_backlog", _factor(dropped, 1000))
        if p is not None:
            d.proposals.append(p)
    if squeezed >= 100 and squeezed * 1000 >= processed:
        d.evidence.append(
            f"softnet_stat time_squeeze +{squeezed} {obs.window_text()} of {processed} packets"
        )
        for key in ("net.core.netdev_budget", "net.core.netdev_budget_usecs"):
            d.evidence.append(_sysctl_line(obs, key))
            p = _grown(obs, m, key, 2)
            if p is not None:
                d.proposals.append(p)
    return d if d.evidence else None


PRUNE = (
    "netstat.TcpExt.PruneCalled",
    "netstat.TcpExt.RcvPruned",
    "netstat.TcpExt.TCPRcvCollapsed",
)
MEMORY_PRESSURE = ("netstat.TcpExt.TCPMemoryPressures",)


def tcp_receive_memory(obs: Observation, m: Machine) -> Detection | None:
    """TCP pruned or collapsed receive queues, or hit its global memory pressure limit."""
    pressure = _fired(obs, MEMORY_PRESSURE, 1)
    pruned = _fired(obs, PRUNE[:2], 10) + _fired(obs, PRUNE[2:], 100)
    if not pressure and not pruned:
        return None
    d = Detection(pressure + pruned)
    if pressure:
        mem = _ints(obs, "net.ipv4.tcp_mem")
        d.evidence.append(_sysctl_line(obs, "net.ipv4.tcp_mem"))
        if mem is not None and len(mem) == 3:
            top = cap("net.ipv4.tcp_mem", m)
            new = [min(grow(v, 2, top), top) for v in mem]
            if new != mem:
                d.proposals.append(Proposal("net.ipv4.tcp_mem", mem, new))
    if pruned:
        _rmem_growth(obs, m, d)
    return d


def _rmem_growth(obs: Observation, m: Machine, d: Detection) -> None:
    rmem = _ints(obs, "net.ipv4.tcp_rmem")
    rmem_max = _int(obs, "net.core.rmem_max")
    d.evidence += [_sysctl_line(obs, "net.ipv4.tcp_rmem"), _sysctl_line(obs, "net.core.rmem_max")]
    if rmem is None or len(rmem) != 3 or rmem_max is None:
        return
    top = grow(rmem[2], 2, cap("net.ipv4.tcp_rmem", m))
    new_max = rmem_max
    if top > rmem_max and obs.writable("net.core.rmem_max"):
        new_max = grow(rmem_max, 4, cap("net.core.rmem_max", m))
    # The agent keeps tcp_rmem's max <= rmem_max (or no further from it than now).
    top = keep_at_most(top, rmem[2], new_max, rmem_max)
    new = ordered_growth(rmem, top)
    if new != rmem:
        d.proposals.append(Proposal("net.ipv4.tcp_rmem", rmem, new))
    if new_max != rmem_max:
        d.proposals.append(Proposal("net.core.rmem_max", rmem_max, new_max))


UDP = ("snmp.Udp.RcvbufErrors", "snmp.Udp6.RcvbufErrors", "snmp.UdpLite.RcvbufErrors")


def udp_receive_buffer(obs: Observation, m: Machine) -> Detection | None:
    """UDP datagrams were dropped because a socket's receive buffer was full."""
    lines = _fired(obs, UDP, 10)
    if not lines:
        return None
    d = Detection(lines)
    rmem_max = _int(obs, "net.core.rmem_max")
    rmem_default = _int(obs, "net.core.rmem_default")
    d.evidence += [
        _sysctl_line(obs, "net.core.rmem_max"),
        _sysctl_line(obs, "net.core.rmem_default"),
    ]
    if rmem_max is None or rmem_default is None:
        return d
    new_max = grow(rmem_max, 4, cap("net.core.rmem_max", m))
    new_default = min(grow(rmem_default, 2, cap("net.core.rmem_default", m)), new_max)
    if new_max != rmem_max:
        d.proposals.append(Proposal("net.core.rmem_max", rmem_max, new_max))
    if new_default != rmem_default:
        d.proposals.append(Proposal("net.core.rmem_default", rmem_default, new_default))
    d.notes.append(
        "rmem_max bounds what a program may ask for with SO_RCVBUF; rmem_default is what "
        "a socket gets when it asks for nothing"
    )
    return d


def conntrack_full(obs: Observation, m: Machine) -> Detection | None:
    """The connection-tracking table was full and new flows were dropped."""
    count = _int(obs, "net.netfilter.nf_conntrack_count")
    limit = _int(obs, "net.netfilter.nf_conntrack_max")
    near = count is not None and limit is not None and limit > 0 and count >= 0.9 * limit
    logged = _log_lines(obs, "conntrack_full")
    if not near and not (logged and obs.netns is None):
        return None
    d = Detection(logged)
    if count is not None and limit is not None:
        d.evidence.append(
            f"sysctl net.netfilter.nf_conntrack_count = {count} of nf_conntrack_max = {limit}"
        )
    p = _grown(obs, m, "net.netfilter.nf_conntrack_max", 2)
    if p is not None:
        d.proposals.append(p)
    return d


def _neigh_proposals(obs: Observation, m: Machine, family: str) -> list[Proposal]:
    keys = [f"net.{family}.neigh.default.gc_thresh{i}" for i in (1, 2, 3)]
    values = [_int(obs, k) for k in keys]
    if any(v is None for v in values):
        return []
    t1, t2, t3 = (int(v) for v in values)  # type: ignore[arg-type]
    new3 = grow(t3, 2, cap(f"net.{family}.neigh.default.gc_thresh3", m))
    new2 = max(t2, min(grow(t2, 2, new3), new3))
    new1 = min(t1, new2)
    return [
        Proposal(k, a, b)
        for k, a, b in zip(keys, (t1, t2, t3), (new1, new2, new3), strict=True)
        if a != b
    ]


def neighbour_overflow(obs: Observation, m: Machine) -> Detection | None:
    """The ARP or NDISC neighbour table was full (gc_thresh3 reached)."""
    fulls = {t: n for t, n in obs.neigh_table_fulls.items() if n >= 1}
    logged = _log_lines(obs, "neigh_overflow")
    if not fulls and not (logged and obs.netns is None):
        return None
    d = Detection(
        [f"/proc/net/stat/{t} table_fulls +{n} {obs.window_text()}" for t, n in fulls.items()]
        + logged
    )
    families = {"arp_cache": "ipv4", "ndisc_cache": "ipv6"}
    wanted = [families[t] for t in fulls] or ["ipv6" if "ndisc" in " ".join(logged) else "ipv4"]
    for family in wanted:
        d.evidence.append(_sysctl_line(obs, f"net.{family}.neigh.default.gc_thresh3"))
        d.proposals += _neigh_proposals(obs, m, family)
    d.notes.append(
        "gc_thresh1 <= gc_thresh2 <= gc_thresh3 is kept; the thresholds are global: one "
        "table serves every network namespace"
    )
    return d


def time_wait_overflow(obs: Observation, m: Machine) -> Detection | None:
    """TIME-WAIT sockets were destroyed early: the bucket table was full."""
    lines = _fired(obs, ("netstat.TcpExt.TCPTimeWaitOverflow",), 1)
    logged = _log_lines(obs, "tw_overflow")
    if not lines and not (logged and obs.netns is None):
        return None
    d = Detection(lines + logged)
    tw = obs.gauge("sockstat", "TCP", "tw")
    if tw is not None:
        d.evidence.append(f"sockstat TCP tw = {tw} sockets in TIME-WAIT now")
    d.evidence.append(_sysctl_line(obs, "net.ipv4.tcp_max_tw_buckets"))
    p = _grown(obs, m, "net.ipv4.tcp_max_tw_buckets", 2)
    if p is not None:
        d.proposals.append(p)
    return d


CONNECT = ("connect",)
#: The lowest low end tune proposes: below it sit many services' well-known ports.
PORT_RANGE_FLOOR = 10000


def ephemeral_ports(obs: Observation, m: Machine) -> Detection | None:
    """connect() ran out of local ports, or TIME-WAIT sockets hold most of the range."""
    ports = _ints(obs, "net.ipv4.ip_local_port_range")
    if ports is None or len(ports) != 2:
        return None
    size = ports[1] - ports[0] + 1
    tw = obs.gauge("sockstat", "TCP", "tw") or 0
    failed = obs.errors(CONNECT, "EADDRNOTAVAIL")
    held = size > 0 and tw >= 0.8 * size
    if failed < 10 and not held:
        return None
    d = Detection([])
    if failed:
        d.evidence.append(_syscall_line(obs, CONNECT, "EADDRNOTAVAIL"))
    d.evidence.append(f"sockstat TCP tw = {tw} of {size} local ports")
    d.evidence.append(_sysctl_line(obs, "net.ipv4.ip_local_port_range"))
    # Double the range: take room below the low end first (never under the floor, nor
    # under a low end already below it), then above the high end.
    low = max(min(PORT_RANGE_FLOOR, ports[0]), ports[0] - size)
    high = min(65535, ports[1] + max(0, size - (ports[0] - low)))
    if [low, high] != ports:
        d.proposals.append(Proposal("net.ipv4.ip_local_port_range", ports, [low, high]))
    d.notes.append(
        "ports below the new low end that services listen on must be reserved "
        "(net.ipv4.ip_local_reserved_ports)"
    )
    return d


INOTIFY_INIT = ("inotify_init", "inotify_init1")


def inotify_limits(obs: Observation, m: Machine) -> Detection | None:
    """A user ran out of inotify watches (ENOSPC) or instances (EMFILE)."""
    watches = _int(obs, "fs.inotify.max_user_watches")
    instances = _int(obs, "fs.inotify.max_user_instances")
    if watches is None or instances is None:
        return None
    d = Detection([])
    full_w = [(u, w) for u, (_, w) in obs.inotify.items() if w >= 0.9 * watches]
    full_i = [(u, i) for u, (i, _) in obs.inotify.items() if i >= instances]
    enospc = obs.errors(("inotify_add_watch",), "ENOSPC")
    emfile = obs.errors(INOTIFY_INIT, "EMFILE")
    if enospc or full_w:
        if enospc:
            d.evidence.append(_syscall_line(obs, ("inotify_add_watch",), "ENOSPC"))
        d.evidence += [f"/proc/*/fdinfo: uid {u} holds {w} inotify watches" for u, w in full_w]
        d.evidence.append(_sysctl_line(obs, "fs.inotify.max_user_watches"))
        p = _grown(obs, m, "fs.inotify.max_user_watches", 2)
        if p is not None:
            d.proposals.append(p)
    if emfile or full_i:
        if emfile:
            d.evidence.append(_syscall_line(obs, INOTIFY_INIT, "EMFILE"))
        d.evidence += [f"/proc/*/fd: uid {u} holds {i} inotify instances" for u, i in full_i]
        d.evidence.append(_sysctl_line(obs, "fs.inotify.max_user_instances"))
        p = _grown(obs, m, "fs.inotify.max_user_instances", 2)
        if p is not None:
            d.proposals.append(p)
        if emfile and not full_i:
            d.notes.append("EMFILE from inotify_init may also be the process's RLIMIT_NOFILE")
    return d if d.evidence else None


def file_handles(obs: Observation, m: Machine) -> Detection | None:
    """The system's open file handles neared fs.file-max."""
    nr = _ints(obs, "fs.file-nr")
    limit = _int(obs, "fs.file-max")
    logged = _log_lines(obs, "file_max")
    near = nr is not None and limit is not None and limit > 0 and nr[0] >= 0.9 * limit
    if not near and not logged:
        return None
    d = Detection(logged)
    if nr is not None:
        d.evidence.append(f"sysctl fs.file-nr = {nr[0]} allocated of fs.file-max = {limit}")
    p = _grown(obs, m, "fs.file-max", 2)
    if p is not None:
        d.proposals.append(p)
    return d


CLONE = ("clone", "clone3", "fork", "vfork")


def pid_exhaustion(obs: Observation, m: Machine) -> Detection | None:
    """fork/clone failed with EAGAIN, or tasks neared pid_max, threads-max or pids.max."""
    tasks = obs.gauge("loadavg", "tasks") or 0
    pid_max = _int(obs, "kernel.pid_max") or 0
    threads_max = _int(obs, "kernel.threads-max") or 0
    eagain = obs.errors(CLONE, "EAGAIN")
    current, limit = obs.cgroup_file("pids.current"), obs.cgroup_file("pids.max")
    # pids.max reads "max" when there is no limit.
    cg_limit = limit if isinstance(current, int) and isinstance(limit, int) else None
    in_cgroup = cg_limit is not None and isinstance(current, int) and current >= 0.9 * cg_limit
    near_pid = pid_max > 0 and tasks >= 0.8 * pid_max
    near_threads = threads_max > 0 and tasks >= 0.8 * threads_max
    if not (eagain >= 1 or in_cgroup or near_pid or near_threads):
        return None
    d = Detection([])
    if eagain:
        d.evidence.append(_syscall_line(obs, CLONE, "EAGAIN"))
    d.evidence.append(
        f"loadavg: {tasks} tasks; kernel.pid_max = {pid_max}, kernel.threads-max = {threads_max}"
    )
    if in_cgroup and cg_limit is not None:
        d.evidence.append(
            f"cgroup {obs.after.cgroup.get('path')}: pids.current = {current} of pids.max = {limit}"
        )
        d.proposals.append(Proposal("cgroup:pids.max", cg_limit, cg_limit * 2))
        d.notes.append(
            "the cgroup's pids.max is the limit, not a sysctl: raise it where the "
            "cgroup is managed (systemd TasksMax=, the container runtime)"
        )
    if near_pid:
        p = _grown(obs, m, "kernel.pid_max", 2)
        if p is not None:
            d.proposals.append(p)
    if near_threads:
        p = _grown(obs, m, "kernel.threads-max", 2)
        if p is not None:
            d.proposals.append(p)
    if eagain and not (in_cgroup or near_pid or near_threads):
        d.notes.append(
            "no system limit is near: EAGAIN from clone is then RLIMIT_NPROC "
            "or a cgroup's pids.max (give --cgroup)"
        )
    return d


ALLOCSTALL = tuple(
    f"vmstat.allocstall_{z}" for z in ("dma", "dma32", "normal", "movable", "device")
)


def _psi_share(obs: Observation, name: str) -> float | None:
    # PSI totals are microseconds; the share of the window some task was stalled.
    if obs.window_s is None or obs.window_s <= 0 or name not in obs.counters:
        return None
    return obs.count(name) / (obs.window_s * 1e6)


def reclaim_stalls(obs: Observation, m: Machine) -> Detection | None:
    """Tasks stalled in direct reclaim, or memory pressure (PSI) stalled them.

    A cgroup (``--cgroup``) near its own memory limit while memory stalls explains the
    stalls by that limit: then the cgroup's limit is reported, not a global watermark.
    """
    stalls = sum(obs.count(n) for n in ALLOCSTALL)
    share = _psi_share(obs, "psi_memory.some.total")
    cg_share = _psi_share(obs, "cgroup.memory.pressure.some.total")
    failures = _log_lines(obs, "alloc_failure") if obs.netns is None else []
    limit = _cgroup_memory_limit(obs)
    # With a cgroup at its limit, 5 % of stalled time is its pressure; without one, the
    # whole system's must reach 10 % (one busy container must not move a global watermark).
    some = max(share or 0.0, cg_share or 0.0)
    d = Detection([])
    if limit is not None and some >= 0.05:
        name, usage, value = limit
        d.evidence.append(
            f"cgroup {obs.after.cgroup.get('path')}: {name} = {value}, "
            f"usage {usage} ({usage / value:.0%})"
        )
        if "failcnt" in obs.cgroup_memory:
            d.evidence.append(
                f"cgroup memory.failcnt +{obs.cgroup_memory['failcnt']} {obs.window_text()}"
            )
        d.proposals.append(Proposal(f"cgroup:{name}", value, value * 2))
        d.notes.append(
            f"the cgroup's {name} is what reclaims it, not a global watermark: "
            "raise it where the cgroup is managed (systemd MemoryHigh=/MemoryMax=)"
        )
    if stalls >= 50 or failures:
        # Watermarks matter only where allocations reclaim directly (allocstall) or fail.
        d.evidence.append(f"vmstat allocstall_* +{stalls:g} {obs.window_text()}")
        d.evidence += failures
        d.evidence.append(_sysctl_line(obs, "vm.watermark_scale_factor"))
        p = _grown(obs, m, "vm.watermark_scale_factor", 2)
        if p is not None:
            d.proposals.append(p)
        if failures:
            d.evidence.append(_sysctl_line(obs, "vm.min_free_kbytes"))
            q = _grown(obs, m, "vm.min_free_kbytes", 1.5)
            if q is not None:
                d.proposals.append(q)
    elif limit is None and (share or 0.0) >= 0.10:
        d.evidence.append(f"vmstat allocstall_* +{stalls:g} {obs.window_text()}")
        d.notes.append(
            "memory stalls without global direct reclaim: a cgroup's limit (give --cgroup) "
            "or a working set larger than RAM; no global watermark change helps"
        )
    if d.evidence:
        for label, x in (("PSI memory some", share), ("cgroup memory.pressure some", cg_share)):
            if x is not None and x > 0:
                d.evidence.append(f"{label}: stalled {x:.1%} of the window")
    return d if d.evidence else None


def _cgroup_memory_limit(obs: Observation) -> tuple[str, int, int] | None:
    # (limit file, usage, limit) of the cgroup asked for, when its usage is near the limit:
    # cgroup v2 memory.high / memory.max, or v1 memory.limit_in_bytes.
    usage = obs.cgroup_file("memory.current")
    candidates = [
        ("memory.high", obs.cgroup_file("memory.high")),
        ("memory.max", obs.cgroup_file("memory.max")),
    ]
    if not isinstance(usage, int):
        usage = obs.cgroup_memory.get("usage_in_bytes")
        candidates = [("memory.limit_in_bytes", obs.cgroup_memory.get("limit_in_bytes"))]
    if not isinstance(usage, int):
        return None
    for name, limit in candidates:
        # v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages).
        if isinstance(limit, int) and 0 < limit < (1 << 60) and usage >= 0.9 * limit:
            return name, usage, limit
    return None


def dirty_writeback(obs: Observation, m: Machine) -> Detection | None:
    """Writers stalled on I/O while dirty pages neared the dirty threshold."""
    share = _psi_share(obs, "psi_io.some.total")
    dirty = (obs.gauge("vmstat", "nr_dirty") or 0) + (obs.gauge("vmstat", "nr_writeback") or 0)
    threshold = obs.gauge("vmstat", "nr_dirty_threshold") or 0
    if share is None or share < 0.10 or threshold <= 0 or dirty < 0.8 * threshold:
        return None
    d = Detection(
        [
            f"PSI io some: stalled {share:.1%} of the window",
            f"vmstat nr_dirty + nr_writeback = {dirty} pages of nr_dirty_threshold = {threshold}",
        ]
    )
    dirty_bytes, background_bytes = (
        _int(obs, "vm.dirty_bytes"),
        _int(obs, "vm.dirty_background_bytes"),
    )
    if dirty_bytes and background_bytes:
        keys = ("vm.dirty_bytes", "vm.dirty_background_bytes")
        floors = (64 * 1024 * 1024, 16 * 1024 * 1024)
        olds: tuple[int, int] = (dirty_bytes, background_bytes)
    else:
        # Switching from *_ratio to *_bytes is a step from 0: keep the ratios and lower them.
        keys = ("vm.dirty_ratio", "vm.dirty_background_ratio")
        floors = (5, 1)
        olds = (_int(obs, keys[0]) or 0, _int(obs, keys[1]) or 0)
    d.evidence += [_sysctl_line(obs, k) for k in keys]
    new_dirty = shrink(olds[0], 2, floors[0])
    new_background = min(shrink(olds[1], 2, floors[1]), max(floors[1], new_dirty - 1))
    for key, old, new in zip(keys, olds, (new_dirty, new_background), strict=True):
        if old and new != old:
            d.proposals.append(Proposal(key, old, new))
    d.notes.append(
        "a lower threshold starts writeback sooner, in smaller batches, so a "
        "writer waits less at a time"
    )
    return d


def aio_limit(obs: Observation, m: Machine) -> Detection | None:
    """io_setup() failed with EAGAIN, or aio-nr neared fs.aio-max-nr."""
    nr, limit = _int(obs, "fs.aio-nr"), _int(obs, "fs.aio-max-nr")
    eagain = obs.errors(("io_setup",), "EAGAIN")
    near = nr is not None and limit is not None and limit > 0 and nr >= 0.9 * limit
    if not eagain and not near:
        return None
    d = Detection([])
    if eagain:
        d.evidence.append(_syscall_line(obs, ("io_setup",), "EAGAIN"))
    d.evidence.append(f"sysctl fs.aio-nr = {nr} of fs.aio-max-nr = {limit}")
    p = _grown(obs, m, "fs.aio-max-nr", 2)
    if p is not None:
        d.proposals.append(p)
    return d


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "listen-overflow", "Listen queue overflow",
        ("/proc/net/netstat TcpExt ListenOverflows, ListenDrops", "/proc/sys/net/core/somaxconn"),
        ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog"), listen_overflow,
        "Connections were dropped because accept queues were full; somaxconn caps every "
        "listen() backlog.", "fewer dropped connections (ListenOverflows stops rising)",
    ),
    Scenario(
        "syn-flood", "SYN queue full (SYN flood pressure)",
        ("/proc/net/netstat TcpExt TCPReqQFullDrop, TCPReqQFullDoCookies",
         "kernel log: Possible SYN flooding", "/proc/sys/net/ipv4/tcp_syncookies"),
        ("net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_syncookies"), syn_flood,
        "Half-open connections filled the SYN queue; a longer queue keeps legitimate "
        "handshakes, and SYN cookies stay on.", "fewer SYN drops (TCPReqQFullDrop stops rising)",
    ),
    Scenario(
        "softnet-backlog", "Per-CPU backlog drops and time squeeze",
        ("/proc/net/softnet_stat dropped, time_squeeze", "/proc/sys/net/core/netdev_*"),
        ("net.core.netdev_max_backlog", "net.core.netdev_budget", "net.core.netdev_budget_usecs"),
        softnet_backlog,
        "The per-CPU input queue overflowed or the receive softirq ran out of budget.",
        "no softnet drops; fewer time squeezes", "medium",
    ),
    Scenario(
        "tcp-rcvbuf", "TCP receive-buffer pruning and memory pressure",
        ("/proc/net/netstat TcpExt PruneCalled, RcvPruned, TCPRcvCollapsed, TCPMemoryPressures",
         "/proc/sys/net/ipv4/tcp_rmem, tcp_mem"),
        ("net.ipv4.tcp_rmem", "net.core.rmem_max", "net.ipv4.tcp_mem"), tcp_receive_memory,
        "TCP had to prune or collapse receive queues, or entered memory pressure.",
        "no pruning or collapsing (PruneCalled, TCPRcvCollapsed stop rising)",
    ),
    Scenario(
        "udp-rcvbuf", "UDP receive-buffer errors",
        ("/proc/net/snmp Udp RcvbufErrors", "/proc/sys/net/core/rmem_max, rmem_default"),
        ("net.core.rmem_max", "net.core.rmem_default"), udp_receive_buffer,
        "UDP datagrams were dropped because receive buffers were full.",
        "fewer dropped datagrams (RcvbufErrors stops rising)",
    ),
    Scenario(
        "conntrack-full", "Connection-tracking table full",
        ("kernel log: nf_conntrack: table full, dropping packet",
         "/proc/sys/net/netfilter/nf_conntrack_count, nf_conntrack_max"),
        ("net.netfilter.nf_conntrack_max",), conntrack_full,
        "The conntrack table is (nearly) full, so new flows are dropped.",
        "no 'table full' drops", "medium",
    ),
    Scenario(
        "neigh-overflow", "Neighbour table overflow",
        ("kernel log: neighbor table overflow", "/proc/net/stat/arp_cache table_fulls",
         "/proc/sys/net/ipv4/neigh/default/gc_thresh1..3"),
        tuple(f"net.{f}.neigh.default.gc_thresh{i}" for f in ("ipv4", "ipv6") for i in (1, 2, 3)),
        neighbour_overflow,
        "The neighbour table reached gc_thresh3, so new neighbours could not be resolved.",
        "no neighbour-table overflows", "medium",
    ),
    Scenario(
        "tw-overflow", "TIME-WAIT bucket table overflow",
        ("/proc/net/netstat TcpExt TCPTimeWaitOverflow",
         "kernel log: time wait bucket table overflow"),
        ("net.ipv4.tcp_max_tw_buckets",), time_wait_overflow,
        "TIME-WAIT sockets were destroyed early because the bucket table was full.",
        "TCPTimeWaitOverflow stops rising", "medium",
    ),
    Scenario(
        "ephemeral-ports", "Ephemeral-port exhaustion",
        ("syserrors probe: connect EADDRNOTAVAIL", "/proc/net/sockstat TCP tw",
         "/proc/sys/net/ipv4/ip_local_port_range"),
        ("net.ipv4.ip_local_port_range",), ephemeral_ports,
        "Outgoing connections ran out of local ports.", "connect() finds free local ports",
    ),
    Scenario(
        "inotify", "inotify limits",
        ("syserrors probe: inotify_add_watch ENOSPC, inotify_init EMFILE",
         "/proc/*/fdinfo inotify watches per user", "/proc/sys/fs/inotify/*"),
        ("fs.inotify.max_user_watches", "fs.inotify.max_user_instances"), inotify_limits,
        "A user reached the per-user inotify limit.", "inotify_add_watch and inotify_init succeed",
    ),
    Scenario(
        "file-max", "File-handle exhaustion",
        ("/proc/sys/fs/file-nr, file-max", "kernel log: VFS: file-max limit reached"),
        ("fs.file-max",), file_handles,
        "The system is near its limit of open files.", "open() stops failing with ENFILE", "medium",
    ),
    Scenario(
        "pid-exhaustion", "PID / thread exhaustion",
        ("syserrors probe: clone EAGAIN", "/proc/loadavg tasks",
         "/proc/sys/kernel/pid_max, threads-max", "cgroup pids.current, pids.max"),
        ("kernel.pid_max", "kernel.threads-max"), pid_exhaustion,
        "New tasks could not be created: a pid or thread limit is (nearly) reached.",
        "fork and clone succeed", "medium",
    ),
    Scenario(
        "reclaim-stalls", "Direct-reclaim stalls and memory pressure",
        ("/proc/vmstat allocstall_*", "/proc/pressure/memory", "cgroup memory.pressure",
         "kernel log: page allocation failure"),
        ("vm.watermark_scale_factor", "vm.min_free_kbytes"), reclaim_stalls,
        "Allocations stalled in direct reclaim; kswapd should start earlier.",
        "fewer direct-reclaim stalls (allocstall_* and memory PSI fall)", "medium",
    ),
    Scenario(
        "dirty-writeback", "Dirty-writeback stalls",
        ("/proc/pressure/io", "/proc/vmstat nr_dirty, nr_writeback, nr_dirty_threshold"),
        ("vm.dirty_ratio", "vm.dirty_background_ratio", "vm.dirty_bytes",
         "vm.dirty_background_bytes"), dirty_writeback,
        "Writers were throttled while dirty pages neared the dirty threshold.",
        "shorter writeback stalls (io PSI falls)", "medium",
    ),
    Scenario(
        "aio-max-nr", "aio-max-nr reached",
        ("syserrors probe: io_setup EAGAIN", "/proc/sys/fs/aio-nr, aio-max-nr"),
        ("fs.aio-max-nr",), aio_limit,
        "Asynchronous I/O contexts could not be created: aio-nr reached aio-max-nr.",
        "io_setup succeeds",
    ),
)  # fmt: skip

BY_ID: dict[str, Scenario] = {s.id: s for s in SCENARIOS}
#: Every sysctl some scenario may propose (a model's proposal may only name one of these).
KNOWN_KEYS: tuple[str, ...] = tuple(dict.fromkeys(k for s in SCENARIOS for k in s.keys))
#: /proc/sys values the detectors read besides the keys they may propose (gauges).
GAUGE_SYSCTLS = ("net.netfilter.nf_conntrack_count", "fs.file-nr", "fs.aio-nr")
#: Every /proc/sys key the detectors read: what an observation for them must hold
#: (``observe(interval, sysctls=READ_KEYS)``).
READ_KEYS: tuple[str, ...] = (*KNOWN_KEYS, *GAUGE_SYSCTLS)


def scenario_rows() -> list[dict[str, Any]]:
    """Return the table as plain data (``kassist tune --list``)."""
    return [
        {"id": s.id, "title": s.title, "sources": list(s.sources), "keys": list(s.keys)}
        for s in SCENARIOS
    ]
