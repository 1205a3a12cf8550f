"""Known limits, stricter than the kernel's, and cross-key invariants.

Everything here is plain data — pattern -> type, range, allowed values, risk — so
that a later step can compile it into a BPF map for a
``BPF_PROG_TYPE_CGROUP_SYSCTL`` program. Caps that depend on the machine are
written as a fraction of RAM (``ram_div``: the cap is RAM / ram_div, in the
key's ``unit``) or a multiple of the CPU count (``per_cpu``); :func:`machine`
reads RAM and CPUs once and :func:`resolve_spec` turns them into numbers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from actions.knobs import glob_match

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

#: Built-in limits by sysctl key or sysfs pattern. Fields: ``type`` (int, ints, choice),
#: ``min``, ``max``, ``length`` (ints), ``values`` (choice), ``risk``, ``ram_div`` and
#: ``unit`` (bytes, kB or pages) or ``per_cpu`` for machine-relative caps, ``max_step``
#: (0: the key is not step-bounded, e.g. a port range).
LIMITS: dict[str, dict[str, Any]] = {
    # Sockets and TCP (namespaced: Kubernetes' safe sysctls are among them).
    "net.core.somaxconn": {"type": "int", "min": 128, "max": 65535, "risk": "low"},
    "net.core.netdev_max_backlog": {"type": "int", "min": 1000, "max": 65536, "risk": "low"},
    "net.core.netdev_budget": {"type": "int", "min": 300, "max": 3000, "risk": "medium"},
    # Microseconds one NET_RX softirq round may run; the kernel's floor is 2 ticks
    # (2000 at HZ=1000, 8000 at HZ=250), the ceiling 20 ms of softirq at a time.
    "net.core.netdev_budget_usecs": {"type": "int", "min": 2000, "max": 20000, "risk": "medium"},
    "net.core.rps_sock_flow_entries": {"type": "int", "min": 0, "max": 1 << 20, "per_cpu": 32768},
    "net.core.rmem_max": {"type": "int", "min": 4096, "max": GiB, "ram_div": 64, "unit": "bytes"},
    "net.core.wmem_max": {"type": "int", "min": 4096, "max": GiB, "ram_div": 64, "unit": "bytes"},
    "net.core.rmem_default": {"type": "int", "min": 4096, "max": 64 * MiB, "unit": "bytes"},
    "net.core.wmem_default": {"type": "int", "min": 4096, "max": 64 * MiB, "unit": "bytes"},
    "net.core.optmem_max": {"type": "int", "min": 10240, "max": 4 * MiB},
    "net.core.default_qdisc": {
        "type": "choice",
        "values": ["fq", "fq_codel", "pfifo_fast", "cake", "sfq"],
    },
    "net.ipv4.tcp_rmem": {
        "type": "ints", "length": 3, "min": 4096, "max": GiB, "ram_div": 64, "unit": "bytes",
        "risk": "low",
    },
    "net.ipv4.tcp_wmem": {
        "type": "ints", "length": 3, "min": 4096, "max": GiB, "ram_div": 64, "unit": "bytes",
        "risk": "low",
    },
    # Pages all TCP sockets may use: at most 1/4 of RAM.
    "net.ipv4.tcp_mem": {
        "type": "ints", "length": 3, "min": 1024, "max": 1 << 40, "ram_div": 4, "unit": "pages",
    },
    "net.ipv4.udp_mem": {
        "type": "ints", "length": 3, "min": 1024, "max": 1 << 40, "ram_div": 4, "unit": "pages",
    },
    "net.ipv4.ip_local_port_range": {
        "type": "ints", "length": 2, "min": 1024, "max": 65535, "max_step": 0, "risk": "low",
    },
    "net.ipv4.ping_group_range": {
        "type": "ints", "length": 2, "min": 0, "max": 2147483647, "max_step": 0,
    },
    "net.ipv4.ip_unprivileged_port_start": {"type": "int", "min": 0, "max": 1024, "max_step": 0},
    "net.ipv4.tcp_fin_timeout": {"type": "int", "min": 5, "max": 120, "risk": "low"},
    "net.ipv4.tcp_keepalive_time": {"type": "int", "min": 30, "max": 7200, "risk": "low"},
    "net.ipv4.tcp_keepalive_intvl": {"type": "int", "min": 5, "max": 300, "risk": "low"},
    "net.ipv4.tcp_keepalive_probes": {"type": "int", "min": 1, "max": 20, "risk": "low"},
    "net.ipv4.tcp_max_syn_backlog": {"type": "int", "min": 128, "max": 262144, "risk": "low"},
    # A TIME-WAIT socket is ~200 bytes: at most one per 4 KiB of RAM (< 5 % of it).
    "net.ipv4.tcp_max_tw_buckets": {
        "type": "int", "min": 4096, "max": 4 * 1024 * 1024, "ram_div": 4 * KiB, "unit": "bytes",
    },
    # A baseline key too (never lowered); the default policy narrows it to 1..2 (on).
    "net.ipv4.tcp_syncookies": {"type": "int", "min": 0, "max": 2, "risk": "low"},
    "net.ipv4.tcp_slow_start_after_idle": {"type": "int", "min": 0, "max": 1, "risk": "low"},
    "net.ipv4.tcp_tw_reuse": {"type": "int", "min": 0, "max": 2, "risk": "low"},
    "net.ipv4.tcp_mtu_probing": {"type": "int", "min": 0, "max": 2, "risk": "low"},
    "net.ipv4.tcp_fastopen": {"type": "int", "min": 0, "max": 3},
    "net.ipv4.tcp_notsent_lowat": {"type": "int", "min": 16384, "max": 2147483647},
    "net.ipv4.tcp_syn_retries": {"type": "int", "min": 2, "max": 8},
    "net.ipv4.tcp_synack_retries": {"type": "int", "min": 2, "max": 8},
    "net.ipv4.tcp_retries2": {"type": "int", "min": 5, "max": 15},
    "net.ipv4.tcp_sack": {"type": "int", "min": 0, "max": 1},
    "net.ipv4.tcp_timestamps": {"type": "int", "min": 0, "max": 2},
    "net.ipv4.tcp_window_scaling": {"type": "int", "min": 1, "max": 1},
    "net.ipv4.tcp_congestion_control": {
        "type": "choice", "values": ["cubic", "reno", "bbr", "htcp", "dctcp"],
    },
    "net.ipv4.icmp_ratelimit": {"type": "int", "min": 0, "max": 10000},
    "net.ipv4.ipfrag_high_thresh": {"type": "int", "min": 262144, "max": 64 * MiB},
    "net.ipv4.ipfrag_low_thresh": {"type": "int", "min": 196608, "max": 64 * MiB},
    # Neighbour tables (global: one for every namespace). An entry is ~0.5 KiB: at most
    # one per 4 KiB of RAM; 1 <= 2 <= 3 is an invariant below. Floors: 0 / 128 / 256.
    **{
        f"net.*.neigh.default.gc_thresh{i}": {
            "type": "int", "min": floor, "max": 1 << 20, "ram_div": 4 * KiB, "unit": "bytes",
            "risk": "medium",
        }
        for i, floor in ((1, 0), (2, 128), (3, 256))
    },
    # Connection tracking: an entry is ~320 bytes plus its hash bucket; at most one per
    # 2 KiB of RAM (~1/6 of it). The floor is the kernel's smallest default (1024).
    "net.netfilter.nf_conntrack_max": {
        "type": "int", "min": 1024, "max": 1 << 24, "ram_div": 2 * KiB, "unit": "bytes",
        "risk": "medium",
    },
    # Memory management (global: tests validate these, never write them for real).
    "vm.swappiness": {"type": "int", "min": 0, "max": 100, "risk": "low"},
    "vm.dirty_ratio": {"type": "int", "min": 5, "max": 80, "risk": "medium"},
    "vm.dirty_background_ratio": {"type": "int", "min": 1, "max": 50, "risk": "medium"},
    # *_bytes = 0 means "the ratio is in use", and 0 cannot be written back (the kernel's
    # floor is 2 pages, and writing the bytes zeroes the ratio): the floors keep the
    # switch ratio -> bytes (a step from 0, counted as 1) for a person, never a changeset.
    "vm.dirty_bytes": {
        "type": "int", "min": 4 * MiB, "max": 1 << 40, "ram_div": 2, "unit": "bytes",
    },
    "vm.dirty_background_bytes": {
        "type": "int", "min": MiB, "max": 1 << 40, "ram_div": 4, "unit": "bytes",
    },
    "vm.dirty_expire_centisecs": {"type": "int", "min": 100, "max": 60000},
    "vm.dirty_writeback_centisecs": {"type": "int", "min": 100, "max": 6000},
    "vm.vfs_cache_pressure": {"type": "int", "min": 10, "max": 1000},
    # Reserve at most 5 % of RAM (higher starves allocations and invites the OOM killer).
    "vm.min_free_kbytes": {"type": "int", "min": 1024, "max": 1 << 40, "ram_div": 20, "unit": "kB"},
    # Units of 0.01 % of RAM between watermarks: the kernel takes 1..3000; at most 10 %.
    "vm.watermark_scale_factor": {"type": "int", "min": 10, "max": 1000},
    "vm.max_map_count": {"type": "int", "min": 65530, "max": 16 * 1024 * 1024},
    "vm.overcommit_memory": {"type": "int", "min": 0, "max": 2, "risk": "high"},
    "vm.overcommit_ratio": {"type": "int", "min": 10, "max": 100, "risk": "high"},
    "vm.zone_reclaim_mode": {"type": "int", "min": 0, "max": 1},
    "vm.stat_interval": {"type": "int", "min": 1, "max": 10},
    # Files and the scheduler.
    # The kernel's default is ~10 % of RAM at 1 KiB per file: at most 10x that.
    "fs.file-max": {"type": "int", "min": 8192, "max": 1 << 40, "ram_div": 1024, "unit": "bytes"},
    "fs.nr_open": {"type": "int", "min": 1024, "max": 1 << 24},
    "fs.aio-max-nr": {"type": "int", "min": 65536, "max": 1 << 24},
    "fs.inotify.max_user_watches": {
        "type": "int", "min": 8192, "max": 1 << 24, "ram_div": 10 * KiB, "unit": "bytes",
    },
    "fs.inotify.max_user_instances": {"type": "int", "min": 128, "max": 8192},
    "kernel.numa_balancing": {"type": "int", "min": 0, "max": 1},
    "kernel.sched_autogroup_enabled": {"type": "int", "min": 0, "max": 1},
    # The kernel's default is RAM / (8 * THREAD_SIZE) = RAM / 128 KiB (x86-64), so that
    # thread structures take at most 1/8 of RAM; the cap is twice that (1/4 of RAM).
    "kernel.threads-max": {
        "type": "int", "min": 4096, "max": 1 << 22, "ram_div": 64 * KiB, "unit": "bytes",
    },
    # PID_MAX_LIMIT (4M on 64-bit), and at most 1M per CPU.
    "kernel.pid_max": {"type": "int", "min": 32768, "max": 4194304, "per_cpu": 1 << 20},
    # sysfs knobs of the catalogue.
    "block/*/queue/scheduler": {
        "type": "choice", "values": ["none", "mq-deadline", "kyber", "bfq"], "risk": "medium",
    },
    "block/*/queue/read_ahead_kb": {"type": "int", "min": 0, "max": 16384, "risk": "low"},
    "block/*/queue/nr_requests": {"type": "int", "min": 4, "max": 4096, "risk": "low"},
    "kernel/mm/transparent_hugepage/enabled": {
        "type": "choice", "values": ["always", "madvise", "never"], "risk": "medium",
    },
    "kernel/mm/transparent_hugepage/defrag": {
        "type": "choice",
        "values": ["always", "defer", "defer+madvise", "madvise", "never"],
        "risk": "medium",
    },
    "devices/system/cpu/cpu*/cpufreq/scaling_governor": {
        "type": "choice",
        "values": ["performance", "powersave", "schedutil", "ondemand", "conservative"],
        "risk": "medium",
    },
}  # fmt: skip

#: Choice keys whose words are kernel modules: key -> word -> the module that provides it
#: (``None``: always built in). Writing a word whose module is not loaded would make the
#: kernel load it (``request_module``), so such a word is refused until it is loaded.
CHOICE_MODULES: dict[str, dict[str, str | None]] = {
    "net.core.default_qdisc": {
        "pfifo_fast": None,
        "fq": "sch_fq",
        "fq_codel": "sch_fq_codel",
        "cake": "sch_cake",
        "sfq": "sch_sfq",
    },
}

#: Keys whose value is a security floor: never lowered without an explicit policy override.
SECURITY_BASELINE: tuple[str, ...] = (
    "kernel.kptr_restrict",
    "kernel.dmesg_restrict",
    "kernel.randomize_va_space",
    "kernel.yama.ptrace_scope",
    "kernel.unprivileged_bpf_disabled",
    "net.ipv4.tcp_syncookies",
    "fs.protected_hardlinks",
    "fs.protected_symlinks",
    "fs.protected_fifos",
    "fs.protected_regular",
    "kernel.modules_disabled",
    "kernel.kexec_load_disabled",
    "kernel.perf_event_paranoid",
    "net.core.bpf_jit_harden",
)

#: Baseline keys whose numeric order is not their security order: key -> every value it
#: may hold, from the least strict to the strictest. ``kernel.unprivileged_bpf_disabled``:
#: 0 lets anyone load BPF, 2 refuses it until an admin writes 0, 1 refuses it for good
#: (the kernel then refuses 0 and 2). Keys not named here are ordered by their number.
SECURITY_ORDER: dict[str, tuple[int, ...]] = {
    "kernel.unprivileged_bpf_disabled": (0, 2, 1),
}


@dataclass(frozen=True)
class Machine:
    """What caps are relative to.

    :param ram: total RAM in bytes.
    :param cpus: online CPUs.
    :param page_size: bytes per page.
    """

    ram: int
    cpus: int
    page_size: int


def machine() -> Machine:
    """Read this machine's RAM and CPU count."""
    page = os.sysconf("SC_PAGE_SIZE")
    return Machine(page * os.sysconf("SC_PHYS_PAGES"), os.cpu_count() or 1, page)


@dataclass(frozen=True)
class Spec:
    """The resolved rule for one key: what type its value has and where it may go.

    :param type: ``int``, ``ints`` (a vector of ``length`` ints) or ``choice``.
    :param min: the lowest value of each int (``None``: no floor).
    :param max: the highest value of each int (``None``: no ceiling).
    :param values: the words a choice may take.
    :param max_step: the most one change may multiply or divide a value (0: unbounded).
    :param source: where the range comes from, for messages.
    """

    type: str
    min: int | None = None
    max: int | None = None
    length: int = 1
    values: tuple[str, ...] = ()
    risk: str = "medium"
    max_step: float | None = None
    source: str = "kassist's table of known limits"

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as plain data (what a BPF map entry would hold)."""
        return {
            "type": self.type,
            "min": self.min,
            "max": self.max,
            "length": self.length,
            "values": list(self.values),
            "risk": self.risk,
            "max_step": self.max_step,
        }


_UNIT_BYTES = {"bytes": 1, "kB": 1024}


def machine_cap(entry: Mapping[str, Any], m: Machine) -> int | None:
    """Return the machine-relative cap an entry asks for, in the key's own unit.

    :return: ``None`` when the entry has no machine-relative cap.
    """
    caps: list[int] = []
    if "ram_div" in entry:
        unit = entry.get("unit", "bytes")
        per = m.page_size if unit == "pages" else _UNIT_BYTES[unit]
        caps.append(int(m.ram // per // entry["ram_div"]))
    if "per_cpu" in entry:
        caps.append(int(entry["per_cpu"]) * m.cpus)
    return min(caps) if caps else None


def resolve_spec(entry: Mapping[str, Any], m: Machine, source: str) -> Spec:
    """Turn a table entry into a :class:`Spec` with this machine's caps applied."""
    hi = entry.get("max")
    cap = machine_cap(entry, m)
    if cap is not None:
        hi = cap if hi is None else min(int(hi), cap)
    step = entry.get("max_step")
    return Spec(
        type=str(entry["type"]),
        min=entry.get("min"),
        max=hi,
        length=int(entry.get("length", 1)),
        values=tuple(entry.get("values", ())),
        risk=str(entry.get("risk", "medium")),
        max_step=None if step is None else float(step),
        source=source,
    )


def builtin_entry(key: str, sep: str) -> tuple[str, dict[str, Any]] | None:
    """Return the built-in table's entry for a key (exact, else the first matching pattern)."""
    if key in LIMITS:
        return key, LIMITS[key]
    for pattern, entry in LIMITS.items():
        if "*" in pattern and glob_match(pattern, key, sep):
            return pattern, entry
    return None


# --- cross-key invariants -------------------------------------------------------------

Values = Mapping[str, tuple[int, ...]]
#: An invariant returns its deficit (0: holds; larger: further from holding) and a message.
Check = Callable[[Values], tuple[int, str]]


def _ordered(key: str) -> Check:
    def check(v: Values) -> tuple[int, str]:
        lo, mid, hi = v[key]
        deficit = max(0, lo - mid) + max(0, mid - hi)
        return deficit, f"{key} must be min <= default <= max, got {lo} {mid} {hi}"

    return check


def _less(a: str, b: str, strict: bool, a_idx: int = 0, b_idx: int = 0) -> Check:
    def check(v: Values) -> tuple[int, str]:
        x, y = v[a][a_idx], v[b][b_idx]
        deficit = max(0, x - y + (1 if strict else 0))
        rel = "<" if strict else "<="
        return deficit, f"{_at(a, a_idx, v)} ({x}) must be {rel} {_at(b, b_idx, v)} ({y})"

    return check


def _pair(a: str, b: str, strict: bool, a_idx: int = 0) -> tuple[tuple[str, ...], Check]:
    return (a, b), _less(a, b, strict, a_idx)


def _at(key: str, idx: int, v: Values) -> str:
    if len(v[key]) == 1:
        return key
    return f"{key}[{('min', 'default', 'max')[idx] if len(v[key]) == 3 else idx}]"


def _range(key: str) -> Check:
    def check(v: Values) -> tuple[int, str]:
        lo, hi = v[key]
        return max(0, lo - hi + 1), f"{key}: low ({lo}) must be < high ({hi})"

    return check


def _nonzero_less(a: str, b: str) -> Check:
    # dirty_*_bytes: 0 means "use the ratio instead"; compare only when both are set.
    def check(v: Values) -> tuple[int, str]:
        x, y = v[a][0], v[b][0]
        if x == 0 or y == 0:
            return 0, ""
        return max(0, x - y + 1), f"{a} ({x}) must be < {b} ({y})"

    return check


#: Cross-key invariants: the keys each reads and its check. A changeset that touches one
#: of the keys may not break an invariant, nor move further from it if it already fails.
INVARIANTS: tuple[tuple[tuple[str, ...], Check], ...] = (
    (("net.ipv4.tcp_rmem",), _ordered("net.ipv4.tcp_rmem")),
    (("net.ipv4.tcp_wmem",), _ordered("net.ipv4.tcp_wmem")),
    (("net.ipv4.tcp_mem",), _ordered("net.ipv4.tcp_mem")),
    (("net.ipv4.udp_mem",), _ordered("net.ipv4.udp_mem")),
    (("net.ipv4.ip_local_port_range",), _range("net.ipv4.ip_local_port_range")),
    _pair("net.ipv4.tcp_rmem", "net.core.rmem_max", strict=False, a_idx=2),
    _pair("net.ipv4.tcp_wmem", "net.core.wmem_max", strict=False, a_idx=2),
    _pair("net.core.rmem_default", "net.core.rmem_max", strict=False),
    _pair("net.core.wmem_default", "net.core.wmem_max", strict=False),
    _pair("vm.dirty_background_ratio", "vm.dirty_ratio", strict=True),
    (
        ("vm.dirty_background_bytes", "vm.dirty_bytes"),
        _nonzero_less("vm.dirty_background_bytes", "vm.dirty_bytes"),
    ),
    _pair("net.ipv4.ipfrag_low_thresh", "net.ipv4.ipfrag_high_thresh", strict=True),
    *(
        _pair(f"net.{family}.neigh.default.gc_thresh{i}",
              f"net.{family}.neigh.default.gc_thresh{i + 1}", strict=False)
        for family in ("ipv4", "ipv6")
        for i in (1, 2)
    ),
)  # fmt: skip
