"""Kernel statistics: procfs, sysfs, PSI, cgroups, /proc/sys, kernel config, taint, modules.

:func:`take_snapshot` reads them all at once; :func:`rates` turns two snapshots into
per-second rates of their counters. :mod:`probes.stats.sysctl` names and reads
/proc/sys; :mod:`~probes.stats.net`, :mod:`~probes.stats.inotify` and
:mod:`~probes.stats.netns` read what the snapshot does not.
"""

from probes.stats.parse import TAINT_FLAGS, Value, decode_taint, parse_pressure, typed_value
from probes.stats.read import read_boot_id, read_uptime, resolve_cgroup
from probes.stats.snapshot import (
    Snapshot,
    rates,
    read_section,
    take_partial_snapshot,
    take_snapshot,
)
from probes.stats.sysctl import (
    Sysctl,
    read_sysctl,
    read_sysctl_keys,
    read_sysctls,
    sysctl_name,
    sysctl_names,
    sysctl_path,
)

__all__ = [
    "TAINT_FLAGS",
    "Snapshot",
    "Sysctl",
    "Value",
    "decode_taint",
    "parse_pressure",
    "rates",
    "read_boot_id",
    "read_section",
    "read_sysctl",
    "read_sysctl_keys",
    "read_sysctls",
    "read_uptime",
    "resolve_cgroup",
    "sysctl_name",
    "sysctl_names",
    "sysctl_path",
    "take_partial_snapshot",
    "take_snapshot",
    "typed_value",
]
