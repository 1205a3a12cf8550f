"""Read procfs, sysfs and cgroup files into typed statistics (the reading half; see parse.py)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from probes.errors import ProbeError
from probes.stats.parse import Value, typed_value

#: Largest file read whole; procfs and sysfs statistics files are far smaller.
MAX_FILE_BYTES = 1 << 20


def read_text(path: str, chunk: int = 65536, short_read_ends: bool = False) -> str | None:
    """Return the text of a small procfs/sysfs file, or ``None`` if it cannot be read.

    :param chunk: bytes per read(2).
    :param short_read_ends: stop at the first read shorter than ``chunk`` (a /proc/sys
        handler hands its whole value over in one read when the buffer is big enough).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        size = 0
        while size < MAX_FILE_BYTES:
            data = os.read(fd, chunk)
            chunks.append(data)
            size += len(data)
            if not data or (short_read_ends and len(data) < chunk):
                break
        return b"".join(chunks).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def read_block_queues(root: str = "/sys/block") -> dict[str, dict[str, Value]]:
    """Read ``/sys/block/<dev>/queue/*`` for every block device, typed.

    :return: device name → attribute → value (the active I/O scheduler as ``scheduler``).
    """
    out: dict[str, dict[str, Value]] = {}
    try:
        devices = sorted(os.listdir(root))
    except OSError:
        return out
    for dev in devices:
        queue = os.path.join(root, dev, "queue")
        attrs: dict[str, Value] = {}
        try:
            entries = list(os.scandir(queue))
        except OSError:
            continue
        for entry in entries:
            if not entry.is_file() or not entry.stat().st_mode & 0o444:
                continue
            text = read_text(entry.path)
            if text is None:
                continue
            if entry.name == "scheduler":
                active = [w.strip("[]") for w in text.split() if w.startswith("[")]
                attrs[entry.name] = active[0] if active else text.strip()
            else:
                attrs[entry.name] = typed_value(text)
        out[dev] = attrs
    return out


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Return where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` or ``.../unified``)."""
    text = read_text(mountinfo) or ""
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return left.split()[4]
    return None


def resolve_cgroup(cgroup: str) -> Path:
    """Find a cgroup v2 directory from an absolute path or a path below the cgroup2 mount.

    :param cgroup: ``/sys/fs/cgroup/system.slice``, ``system.slice`` or ``/system.slice``.
    :raises ProbeError: there is no cgroup v2 hierarchy, or no such cgroup in it.
    """
    path = Path(cgroup)
    if path.is_absolute() and (path / "cgroup.procs").exists():
        return path
    mount = cgroup2_mount()
    if mount is None:
        raise ProbeError("no cgroup v2 hierarchy is mounted", "mount one, or give a cgroup v2 path")
    candidate = Path(mount) / cgroup.lstrip("/")
    if not (candidate / "cgroup.procs").exists():
        raise ProbeError(
            f"{cgroup}: no such cgroup under {mount}", f"list cgroups with `ls {mount}`"
        )
    return candidate


def read_kconfig_text() -> tuple[str, str] | None:
    """Return the running kernel's config text and where it came from, or ``None``.

    Tries /proc/config.gz (CONFIG_IKCONFIG_PROC), then /boot/config-$(uname -r).
    """
    try:
        with gzip.open("/proc/config.gz", "rt", encoding="utf-8", errors="replace") as fh:
            return fh.read(), "/proc/config.gz"
    except OSError:
        pass
    boot = f"/boot/config-{os.uname().release}"
    text = read_text(boot)
    return (text, boot) if text is not None else None


def read_uptime() -> float:
    """Return seconds since boot (/proc/uptime's first field; 0.0 when it cannot be read)."""
    text = read_text("/proc/uptime") or "0"
    return float(text.split()[0])


def read_boot_id() -> str:
    """Return this boot's id (``/proc/sys/kernel/random/boot_id``, a UUID), or ``""``."""
    return (read_text("/proc/sys/kernel/random/boot_id") or "").strip()


#: cgroup v1 memory controller files (``memory.<name>``): usage and limit in bytes, and
#: ``failcnt``, how often usage hit the limit. v2 files come with the snapshot.
CGROUP_V1_MEMORY = ("usage_in_bytes", "limit_in_bytes", "failcnt")


def read_cgroup_v1_memory(directory: str | None) -> dict[str, int]:
    """Read a cgroup v1 memory controller's usage, limit (bytes) and failcnt, if it is one.

    :param directory: the cgroup's directory (``None``: none asked for).
    :return: file name (``usage_in_bytes``) → value; empty for a cgroup v2 directory.
    """
    out: dict[str, int] = {}
    if directory is None:
        return out
    for name in CGROUP_V1_MEMORY:
        text = read_text(f"{directory}/memory.{name}")
        if text is not None and text.strip().isdigit():
            out[name] = int(text)
    return out


def boot_time(stat: str = "/proc/stat") -> float | None:
    """Return when this machine booted, in seconds since the epoch (``btime`` of /proc/stat).

    :return: ``None`` when /proc/stat cannot be read or has no ``btime`` line.
    """
    for line in (read_text(stat) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == "btime" and value.strip().isdigit():
            return float(value)
    return None
