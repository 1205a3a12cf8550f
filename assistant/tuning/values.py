"""Value rules: bounded steps, caps relative to RAM and CPUs, invariants of related keys.

Every value ``tune`` proposes comes from here, never from a model. The caps are
tune's own and never above the agent's (``actions/limits.py``): a value the agent
would refuse is a bug in tune, and the tests check every scenario against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from probes.stats import Snapshot

KiB = 1024
MiB = 1024 * KiB

#: The agent's bound on one change (``max_step`` of the default policy): x4 or /4.
MAX_STEP = 4


@dataclass(frozen=True)
class Machine:
    """What caps are relative to: RAM in bytes, online CPUs, bytes per page."""

    ram: int
    cpus: int
    page_size: int


def machine_of(snap: Snapshot) -> Machine:
    """Return RAM (``MemTotal``, bytes) and CPUs of the machine a snapshot was taken on."""
    meminfo = snap.proc.get("meminfo", {})
    page = os.sysconf("SC_PAGE_SIZE")
    ram = int(meminfo.get("MemTotal") or page * os.sysconf("SC_PHYS_PAGES"))
    return Machine(ram, os.cpu_count() or 1, page)


#: Caps per key: (absolute ceiling, RAM divisor in the key's unit or 0, per-CPU multiple or 0,
#: unit: "bytes", "kB", "pages" or "" for counts). Stricter than or equal to the agent's table
#: (``actions/limits.py``, the default policy): ``tests/test_tune_units.py`` checks each.
CAPS: dict[str, tuple[int, int, int, str]] = {
    "net.core.somaxconn": (65535, 0, 0, ""),
    "net.ipv4.tcp_max_syn_backlog": (262144, 0, 0, ""),
    "net.core.netdev_max_backlog": (65536, 0, 0, ""),
    "net.core.netdev_budget": (3000, 0, 0, ""),
    "net.core.netdev_budget_usecs": (10000, 0, 0, ""),
    "net.core.rmem_max": (256 * MiB, 128, 0, "bytes"),
    "net.core.rmem_default": (16 * MiB, 256, 0, "bytes"),
    "net.ipv4.tcp_rmem": (256 * MiB, 128, 0, "bytes"),
    "net.ipv4.tcp_mem": (1 << 40, 8, 0, "pages"),
    "net.netfilter.nf_conntrack_max": (1 << 24, 4 * KiB, 0, "bytes"),
    "net.ipv4.neigh.default.gc_thresh3": (1 << 20, 8 * KiB, 0, "bytes"),
    "net.ipv6.neigh.default.gc_thresh3": (1 << 20, 8 * KiB, 0, "bytes"),
    "net.ipv4.tcp_max_tw_buckets": (4 * 1024 * 1024, 16 * KiB, 0, "bytes"),
    "fs.inotify.max_user_watches": (1 << 24, 20 * KiB, 0, "bytes"),
    "fs.inotify.max_user_instances": (8192, 0, 0, ""),
    "fs.file-max": (1 << 40, 2048, 0, "bytes"),
    "kernel.pid_max": (4194304, 0, 1 << 20, ""),
    # The kernel's default is RAM / 128 KiB; tune may double it (the agent's cap).
    "kernel.threads-max": (1 << 22, 64 * KiB, 0, "bytes"),
    "vm.watermark_scale_factor": (1000, 0, 0, ""),
    "vm.min_free_kbytes": (1 << 40, 40, 0, "kB"),
    "fs.aio-max-nr": (1 << 22, 0, 0, ""),
}


def cap(key: str, m: Machine) -> int:
    """Return the highest value tune proposes for ``key`` on this machine.

    :raises KeyError: the key has no cap (a programming error in a scenario).
    """
    ceiling, ram_div, per_cpu, unit = CAPS[key]
    caps = [ceiling]
    if ram_div:
        per = {"bytes": 1, "kB": KiB, "pages": m.page_size}[unit]
        caps.append(m.ram // per // ram_div)
    if per_cpu:
        caps.append(per_cpu * m.cpus)
    return min(caps)


def grow(current: int, factor: float, ceiling: int) -> int:
    """Multiply ``current`` by ``factor`` (at most :data:`MAX_STEP`), never above ``ceiling``.

    :return: the new value; ``current`` itself when it is already at or above the ceiling.
    """
    step = min(float(factor), float(MAX_STEP))
    return max(current, min(int(max(current, 1) * step), ceiling))


def shrink(current: int, factor: float, floor: int) -> int:
    """Divide ``current`` by ``factor`` (at most :data:`MAX_STEP`), never below ``floor``."""
    step = min(float(factor), float(MAX_STEP))
    return min(current, max(int(current / step), floor))


def ordered_growth(values: list[int], top: int) -> list[int]:
    """Grow a ``min <= default <= max`` style vector so its last element becomes ``top``.

    Elements keep their order; none moves by more than :data:`MAX_STEP`.
    """
    out = list(values)
    out[-1] = max(out[-1], top)
    for i in range(len(out) - 2, -1, -1):
        out[i] = min(out[i], out[i + 1])
    return out


def keep_at_most(a_new: int, a_old: int, b_new: int, b_old: int) -> int:
    """Bound ``a`` so that ``a <= b`` holds after the change, or is no further from holding.

    The agent refuses a changeset that moves further from an invariant it already
    breaks (``tcp_rmem`` max <= ``rmem_max``, ...).
    """
    deficit = max(0, a_old - b_old)
    return min(a_new, b_new + deficit) if a_new > b_new else a_new
