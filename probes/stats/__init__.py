"""Kernel statistics: procfs, sysfs, PSI, cgroups, /proc/sys, kernel config, taint, modules.

:func:`take_snapshot` reads them all at once; :func:`rates` turns two snapshots into
per-second rates of their counters.
"""

from probes.stats.parse import TAINT_FLAGS, decode_taint, typed_value
from probes.stats.read import Sysctl, read_sysctls, resolve_cgroup
from probes.stats.snapshot import Snapshot, rates, take_snapshot

__all__ = [
    "TAINT_FLAGS",
    "Snapshot",
    "Sysctl",
    "decode_taint",
    "rates",
    "read_sysctls",
    "resolve_cgroup",
    "take_snapshot",
    "typed_value",
]
