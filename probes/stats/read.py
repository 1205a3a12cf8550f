"""Read procfs, sysfs and cgroup files into typed statistics (the reading half; see parse.py)."""

from __future__ import annotations

import gzip
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from probes.errors import ProbeError
from probes.stats.parse import Value, typed_value

#: Files under /proc/sys that are never read: reading them does work in the kernel
#: (``vm.stat_refresh`` folds every CPU's counters) rather than report a value.
SYSCTL_SKIP = frozenset({"vm/stat_refresh"})
#: Largest file read whole; procfs and sysfs statistics files are far smaller.
MAX_FILE_BYTES = 1 << 20


def read_text(path: str) -> str | None:
    """Return the text of a small procfs/sysfs file, or ``None`` if it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        size = 0
        while size < MAX_FILE_BYTES:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _read_sysctl(path: str) -> str | None:
    # A /proc/sys handler hands over the whole value in one read when the buffer is big
    # enough, so a short read is the end; the kernel allocates a buffer the size of the
    # read, so reads stay small (one page) instead of read_text's 64 KiB.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 4096)
            chunks.append(chunk)
            if len(chunk) < 4096:
                break
        return b"".join(chunks).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


@dataclass
class Sysctl:
    """One /proc/sys entry.

    :param name: the dotted name sysctl(8) uses (``net.ipv4.tcp_rmem``).
    :param value: int, vector of ints, or string; ``None`` when reading it failed.
    :param writable: the file has a write bit, and the caller may open it for writing.
    :param error: why reading failed, when it did.
    """

    name: str
    value: Value | None
    writable: bool
    error: str | None = None


def sysctl_name(relative: str) -> str:
    """Turn a path below /proc/sys into sysctl's dotted name (a dot in a component becomes ``/``).

    >>> sysctl_name("net/ipv4/conf/eth0.10/forwarding")
    'net.ipv4.conf.eth0/10.forwarding'
    """
    return ".".join(part.replace(".", "/") for part in relative.split("/"))


def read_sysctls(root: str = "/proc/sys") -> dict[str, Sysctl]:
    """Read the whole /proc/sys tree as typed values with their writability.

    Write-only entries (no read bit) are listed with ``value=None`` and no read is tried.

    :param root: the sysctl tree (another directory in tests).
    :return: entries by dotted name.
    """
    out: dict[str, Sysctl] = {}
    is_root = os.geteuid() == 0
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel_dir)))
        except OSError:
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                stack.append(rel)
                continue
            if rel in SYSCTL_SKIP:
                continue
            mode = st.st_mode
            writable = bool(mode & (0o200 if is_root else 0o222)) and (
                is_root or os.access(entry.path, os.W_OK)
            )
            name = sysctl_name(rel)
            if not mode & 0o444:
                out[name] = Sysctl(name, None, writable, "write-only")
                continue
            text = _read_sysctl(entry.path)
            if text is None:
                out[name] = Sysctl(name, None, writable, "unreadable")
            else:
                out[name] = Sysctl(name, typed_value(text), writable)
    return out


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


def boot_time(stat: str = "/proc/stat") -> float | None:
    """Return when this machine booted, in seconds since the epoch (``btime`` of /proc/stat).

    :return: ``None`` when /proc/stat cannot be read or has no ``btime`` line.
    """
    for line in (read_text(stat) or "").splitlines():
        name, _, value = line.partition(" ")
        if name == "btime" and value.strip().isdigit():
            return float(value)
    return None
