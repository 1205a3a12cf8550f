"""Pure parsers for procfs and sysfs statistics files: text in, typed values out.

Every function here takes the text of one file and returns plain data; no file is
read here, so each one can be tested on inline text.
"""

from __future__ import annotations

import re

#: A sysctl or sysfs value: one integer, a vector of integers, or a string.
Value = int | list[int] | str

#: Taint bits of /proc/sys/kernel/tainted (kernel/panic.c ``taint_flags``): bit → letter, meaning.
TAINT_FLAGS: dict[int, tuple[str, str]] = {
    0: ("P", "proprietary module was loaded"),
    1: ("F", "module was force loaded"),
    2: ("S", "kernel running on an out of specification system"),
    3: ("R", "module was force unloaded"),
    4: ("M", "processor reported a Machine Check Exception (MCE)"),
    5: ("B", "bad page referenced or some unexpected page flags"),
    6: ("U", "taint requested by userspace application"),
    7: ("D", "kernel died recently, i.e. there was an OOPS or BUG"),
    8: ("A", "ACPI table overridden by user"),
    9: ("W", "kernel issued warning"),
    10: ("C", "staging driver was loaded"),
    11: ("I", "workaround for bug in platform firmware applied"),
    12: ("O", "externally-built (out-of-tree) module was loaded"),
    13: ("E", "unsigned module was loaded"),
    14: ("L", "soft lockup occurred"),
    15: ("K", "kernel has been live patched"),
    16: ("X", "auxiliary taint, defined for and used by distros"),
    17: ("T", "kernel was built with the struct randomization plugin"),
    18: ("N", "an in-kernel test has been run"),
    19: ("J", "userspace used a mutating debug operation in fwctl"),
}

#: /proc/diskstats fields after major, minor and name (Documentation/admin-guide/iostats.rst).
DISKSTATS_FIELDS = (
    "reads_completed",
    "reads_merged",
    "sectors_read",
    "read_ms",
    "writes_completed",
    "writes_merged",
    "sectors_written",
    "write_ms",
    "ios_in_progress",
    "io_ms",
    "weighted_io_ms",
    "discards_completed",
    "discards_merged",
    "sectors_discarded",
    "discard_ms",
    "flushes_completed",
    "flush_ms",
)

#: Field names of a ``cpu`` line of /proc/stat, in USER_HZ ticks.
CPU_FIELDS = (
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guest_nice",
)


def typed_value(text: str) -> Value:
    """Type a sysctl-style value: one int, a vector of ints, or else the string.

    >>> typed_value("4096\\t131072\\t6291456\\n"), typed_value("1\\n"), typed_value("cubic\\n")
    ([4096, 131072, 6291456], 1, 'cubic')
    """
    stripped = text.strip()
    tokens = stripped.split()
    if not tokens:
        return stripped
    try:
        numbers = [int(t) for t in tokens]
    except ValueError:
        return stripped
    return numbers[0] if len(numbers) == 1 else numbers


def parse_meminfo(text: str) -> dict[str, int]:
    """Parse /proc/meminfo into bytes (``kB`` fields) or counts (``HugePages_*``).

    >>> parse_meminfo("MemTotal:  16 kB\\nHugePages_Total:  2\\n")
    {'MemTotal': 16384, 'HugePages_Total': 2}
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if not parts or not parts[0].isdigit():
            continue
        scale = 1024 if len(parts) > 1 and parts[1] == "kB" else 1
        out[name.strip()] = int(parts[0]) * scale
    return out


def parse_name_value(text: str) -> dict[str, int]:
    """Parse ``name value`` lines (/proc/vmstat, cgroup ``*.stat``).

    >>> parse_name_value("pgfault 10\\npgmajfault 2\\n")
    {'pgfault': 10, 'pgmajfault': 2}
    """
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def parse_loadavg(text: str) -> dict[str, float | int]:
    """Parse /proc/loadavg: 1, 5 and 15-minute averages, runnable and total tasks, last pid."""
    parts = text.split()
    running, _, total = parts[3].partition("/")
    return {
        "load1": float(parts[0]),
        "load5": float(parts[1]),
        "load15": float(parts[2]),
        "runnable": int(running),
        "tasks": int(total),
        "last_pid": int(parts[4]),
    }


def parse_stat(text: str) -> dict[str, int | dict[str, int]]:
    """Parse /proc/stat: ``cpu``/``cpuN`` lines as dicts of ticks, the rest as totals.

    ``intr`` and ``softirq`` keep only their first number, the total.
    """
    out: dict[str, int | dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0].startswith("cpu"):
            out[parts[0]] = dict(zip(CPU_FIELDS, (int(p) for p in parts[1:]), strict=False))
        elif len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_pressure(text: str) -> dict[str, dict[str, float | int]]:
    """Parse a PSI file (/proc/pressure/*, ``*.pressure``): avg10/60/300 in %, total in µs.

    >>> parse_pressure("some avg10=1.50 avg60=0.00 avg300=0.00 total=12\\n")
    {'some': {'avg10': 1.5, 'avg60': 0.0, 'avg300': 0.0, 'total': 12}}
    """
    out: dict[str, dict[str, float | int]] = {}
    for line in text.splitlines():
        kind, *pairs = line.split()
        values: dict[str, float | int] = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            values[key] = int(value) if key == "total" else float(value)
        out[kind] = values
    return out


def parse_snmp(text: str) -> dict[str, dict[str, int]]:
    """Parse /proc/net/snmp and /proc/net/netstat: pairs of header and value lines.

    >>> parse_snmp("Tcp: RtoMin RetransSegs\\nTcp: 200 7\\n")
    {'Tcp': {'RtoMin': 200, 'RetransSegs': 7}}
    """
    out: dict[str, dict[str, int]] = {}
    lines = text.splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        proto, _, names = header.partition(":")
        proto2, _, numbers = values.partition(":")
        if proto != proto2:
            continue
        table = out.setdefault(proto, {})
        for name, number in zip(names.split(), numbers.split(), strict=False):
            try:
                table[name] = int(number)
            except ValueError:
                continue
    return out


def parse_sockstat(text: str) -> dict[str, dict[str, int]]:
    """Parse /proc/net/sockstat: ``TCP: inuse 5 orphan 0 ...`` lines.

    >>> parse_sockstat("TCP: inuse 5 orphan 0\\n")
    {'TCP': {'inuse': 5, 'orphan': 0}}
    """
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        proto, _, rest = line.partition(":")
        words = rest.split()
        out[proto] = {
            k: int(v) for k, v in zip(words[::2], words[1::2], strict=False) if v.isdigit()
        }
    return out


def parse_diskstats(text: str) -> dict[str, dict[str, int]]:
    """Parse /proc/diskstats into per-device counters named after iostats.rst."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 7:
            continue
        stats = dict(zip(DISKSTATS_FIELDS, (int(p) for p in parts[3:]), strict=False))
        stats["major"], stats["minor"] = int(parts[0]), int(parts[1])
        out[parts[2]] = stats
    return out


def parse_modules(text: str) -> list[dict[str, str | int | list[str]]]:
    """Parse /proc/modules: name, size in bytes, use count, users, state, taint letters."""
    out: list[dict[str, str | int | list[str]]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5:
            continue
        users = [u for u in parts[3].split(",") if u and u != "-"]
        taint = parts[6].strip("()") if len(parts) > 6 else ""
        out.append(
            {
                "name": parts[0],
                "size": int(parts[1]),
                "refcount": int(parts[2]) if parts[2].isdigit() else -1,
                "users": users,
                "state": parts[4],
                "taint": taint,
            }
        )
    return out


def decode_taint(value: int) -> list[dict[str, str | int]]:
    """Decode the taint mask of /proc/sys/kernel/tainted into its set flags.

    >>> [f["letter"] for f in decode_taint(512 + 1)]
    ['P', 'W']
    """
    out: list[dict[str, str | int]] = []
    for bit in range(max(value.bit_length(), 1)):
        if value & (1 << bit):
            letter, meaning = TAINT_FLAGS.get(bit, ("?", f"unknown taint bit {bit}"))
            out.append({"bit": bit, "letter": letter, "meaning": meaning})
    return out


_CONFIG_SET = re.compile(r"^(CONFIG_\w+)=(.*)$")
_CONFIG_UNSET = re.compile(r"^# (CONFIG_\w+) is not set$")


def parse_kconfig(text: str) -> dict[str, str | int | bool]:
    """Parse a kernel .config: ``y``/``m`` as strings, numbers as ints, unset as ``False``.

    >>> parse_kconfig('CONFIG_BPF=y\\nCONFIG_HZ=250\\n# CONFIG_KASAN is not set\\nCONFIG_X="a"\\n')
    {'CONFIG_BPF': 'y', 'CONFIG_HZ': 250, 'CONFIG_KASAN': False, 'CONFIG_X': 'a'}
    """
    out: dict[str, str | int | bool] = {}
    for line in text.splitlines():
        if m := _CONFIG_SET.match(line):
            raw = m.group(2)
            if raw.startswith('"'):
                out[m.group(1)] = raw.strip('"')
            else:
                try:
                    out[m.group(1)] = int(raw, 0)
                except ValueError:
                    out[m.group(1)] = raw
        elif m := _CONFIG_UNSET.match(line):
            out[m.group(1)] = False
    return out


def parse_cgroup_io_stat(text: str) -> dict[str, dict[str, int]]:
    """Parse a cgroup v2 ``io.stat``: ``8:0 rbytes=1 wbytes=2 ...`` per device."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        dev, *pairs = line.split()
        out[dev] = {k: int(v) for k, _, v in (p.partition("=") for p in pairs) if v.isdigit()}
    return out
