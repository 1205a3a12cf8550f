"""Values of commonly tuned sysctls at crash time, read from the kernel variables behind them."""

from __future__ import annotations

from dataclasses import dataclass

import drgn

#: sysctl key → the C expression that holds it (a global, then members).
#: A key whose variable does not exist in this kernel is left out.
SYSCTL_VARIABLES: dict[str, tuple[str, ...]] = {
    "kernel.panic": ("panic_timeout",),
    "kernel.panic_on_oops": ("panic_on_oops",),
    "kernel.hung_task_timeout_secs": ("sysctl_hung_task_timeout_secs",),
    "kernel.pid_max": ("pid_max",),
    "kernel.threads-max": ("max_threads",),
    "vm.swappiness": ("vm_swappiness",),
    "vm.dirty_ratio": ("vm_dirty_ratio",),
    "vm.dirty_background_ratio": ("dirty_background_ratio",),
    "vm.dirty_expire_centisecs": ("dirty_expire_interval",),
    "vm.dirty_writeback_centisecs": ("dirty_writeback_interval",),
    "vm.overcommit_memory": ("sysctl_overcommit_memory",),
    "vm.overcommit_ratio": ("sysctl_overcommit_ratio",),
    "vm.min_free_kbytes": ("min_free_kbytes",),
    "vm.vfs_cache_pressure": ("sysctl_vfs_cache_pressure",),
    "vm.max_map_count": ("sysctl_max_map_count",),
    "vm.panic_on_oom": ("sysctl_panic_on_oom",),
    "fs.file-max": ("files_stat", "max_files"),
    "net.core.somaxconn": ("init_net", "core", "sysctl_somaxconn"),
    "net.core.netdev_max_backlog": ("netdev_max_backlog",),
    "net.core.rmem_max": ("sysctl_rmem_max",),
    "net.core.wmem_max": ("sysctl_wmem_max",),
    "net.ipv4.tcp_max_syn_backlog": ("init_net", "ipv4", "sysctl_max_syn_backlog"),
    "net.ipv4.tcp_congestion_control": (
        "init_net",
        "ipv4",
        "tcp_congestion_control",
        "name",
    ),
}


@dataclass
class SysctlValue:
    """One sysctl as ``sysctl KEY`` would have printed it.

    :param key: the dotted key, e.g. ``vm.swappiness``.
    :param value: the value as text.
    :param variable: the C expression it was read from, e.g. ``init_net.core.sysctl_somaxconn``.
    """

    key: str
    value: str
    variable: str


def _read(prog: drgn.Program, path: tuple[str, ...]) -> str:
    obj = prog[path[0]]
    for member in path[1:]:
        obj = obj.member_(member)
    kind = obj.type_.unqualified().kind
    if kind in (drgn.TypeKind.ARRAY, drgn.TypeKind.POINTER):
        text: bytes = obj.string_()
        return text.decode(errors="replace")
    return str(obj.value_())


def sysctl_values(prog: drgn.Program) -> list[SysctlValue]:
    """Return the sysctls of :data:`SYSCTL_VARIABLES` that this kernel has, in table order."""
    out = []
    for key, path in SYSCTL_VARIABLES.items():
        try:
            value = _read(prog, path)
        except (KeyError, LookupError, AttributeError, drgn.FaultError):
            continue
        out.append(SysctlValue(key, value, ".".join(path)))
    return out
