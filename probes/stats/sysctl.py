"""/proc/sys: a sysctl's name and its file, the walk over the tree, typed values.

A sysctl has two spellings: the dotted name sysctl(8) uses (``net.ipv4.conf.eth0/10.rp_filter``)
and its file below /proc/sys (``net/ipv4/conf/eth0.10/rp_filter``). The kernel's own
rule (and procps' and systemd-sysctl's) swaps the two separators: a ``/`` inside a
dotted component is a ``.`` in the file name, and back. :func:`sysctl_path` and
:func:`sysctl_name` are that rule, once; every reader below goes through them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from probes.stats.parse import Value, typed_value
from probes.stats.read import read_text

#: The sysctl tree.
PROC_SYS = "/proc/sys"
#: Files under /proc/sys that are never read: reading them does work in the kernel
#: (``vm.stat_refresh`` folds every CPU's counters) rather than report a value.
SYSCTL_SKIP = frozenset({"vm/stat_refresh"})


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


def sysctl_relative(name: str) -> str:
    """Turn a sysctl's name into its path below /proc/sys.

    A dotted name swaps its separators (``/`` in a component is ``.`` in the file name);
    a name whose first separator is ``/`` is a path already (systemd-sysctl's rule).

    >>> sysctl_relative("net.ipv4.conf.eth0/10.rp_filter")
    'net/ipv4/conf/eth0.10/rp_filter'
    >>> sysctl_relative("net/ipv4/conf/eth0.10/rp_filter")
    'net/ipv4/conf/eth0.10/rp_filter'

    :raises ValueError: an empty, ``.`` or ``..`` component (nothing outside the tree is named).
    """
    name = name.strip()
    dot, slash = name.find("."), name.find("/")
    if slash != -1 and (dot == -1 or slash < dot):
        parts = name.split("/")
    else:
        parts = [part.replace("/", ".") for part in name.split(".")]
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"{name!r} is not a sysctl name")
    return "/".join(parts)


def sysctl_path(name: str, root: str = PROC_SYS) -> str:
    """Return a sysctl's file: ``/proc/sys/`` and :func:`sysctl_relative`.

    >>> sysctl_path("net.ipv4.conf.eth0/10.rp_filter")
    '/proc/sys/net/ipv4/conf/eth0.10/rp_filter'

    :param root: the sysctl tree (another directory in tests).
    :raises ValueError: not a sysctl name.
    """
    return f"{root.rstrip('/')}/{sysctl_relative(name)}"


def _walk(root: str) -> Iterator[tuple[str, os.DirEntry[str], os.stat_result]]:
    # Every file below root (depth first, SYSCTL_SKIP left out): its path below root,
    # its directory entry and its lstat.
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
            elif rel not in SYSCTL_SKIP:
                yield rel, entry, st


def sysctl_names(root: str = PROC_SYS) -> list[str]:
    """Return the dotted name of every sysctl of this kernel (this network namespace's), sorted.

    :param root: the sysctl tree (another directory in tests).
    """
    return sorted(sysctl_name(rel) for rel, _entry, _st in _walk(root))


def _entry(name: str, path: str, mode: int, is_root: bool) -> Sysctl:
    # One file as a Sysctl: write-only entries (no read bit) are not read.
    writable = bool(mode & (0o200 if is_root else 0o222)) and (is_root or os.access(path, os.W_OK))
    if not mode & 0o444:
        return Sysctl(name, None, writable, "write-only")
    # The kernel allocates a buffer the size of the read: keep reads to a page.
    text = read_text(path, chunk=4096, short_read_ends=True)
    if text is None:
        return Sysctl(name, None, writable, "unreadable")
    return Sysctl(name, typed_value(text), writable)


def read_sysctls(root: str = PROC_SYS) -> dict[str, Sysctl]:
    """Read the whole /proc/sys tree as typed values with their writability.

    Write-only entries (no read bit) are listed with ``value=None`` and no read is tried.

    :param root: the sysctl tree (another directory in tests).
    :return: entries by dotted name.
    """
    is_root = os.geteuid() == 0
    out: dict[str, Sysctl] = {}
    for rel, entry, st in _walk(root):
        name = sysctl_name(rel)
        out[name] = _entry(name, entry.path, st.st_mode, is_root)
    return out


def read_sysctl(name: str, root: str = PROC_SYS) -> Sysctl | None:
    """Read one sysctl, typed, with its writability; ``None`` when there is no such file.

    :param name: dotted (``net.core.somaxconn``) or a path below /proc/sys.
    """
    try:
        path = sysctl_path(name, root)
        mode = os.stat(path).st_mode
    except (ValueError, OSError):
        return None
    if stat.S_ISDIR(mode):
        return None
    return _entry(name, path, mode, os.geteuid() == 0)


def read_sysctl_keys(keys: Iterable[str], root: str = PROC_SYS) -> dict[str, Sysctl]:
    """Read some sysctls; those absent or unreadable here are left out.

    :param keys: dotted names (``net.core.somaxconn``).
    """
    found = (read_sysctl(key, root) for key in keys)
    return {s.name: s for s in found if s is not None and s.value is not None}
