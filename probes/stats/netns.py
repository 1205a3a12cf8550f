"""Network namespaces: find one by ``ip netns`` name or process id, and enter it.

After :func:`enter_netns` this process's /proc/net and /proc/sys/net are the
namespace's, so every reader of :mod:`probes.stats` reads it.
"""

from __future__ import annotations

import ctypes
import os

from probes.errors import ProbeError, ProbeUnavailable

#: ``CLONE_NEWNET`` of include/uapi/linux/sched.h: setns(2)'s namespace type.
CLONE_NEWNET = 0x40000000
#: Where ``ip netns add NAME`` bind-mounts a namespace.
IP_NETNS_DIR = "/run/netns"


def netns_path(spec: str) -> str:
    """Return the namespace file for ``NAME|PID`` (an ``ip netns`` name or a process id).

    :raises ProbeError: no such namespace.
    """
    path = f"/proc/{spec}/ns/net" if spec.isdigit() else f"{IP_NETNS_DIR}/{spec}"
    if "/" in spec or not os.path.exists(path):
        what = "process" if spec.isdigit() else "network namespace (ip netns list)"
        raise ProbeError(f"no {what} {spec!r}", "give an `ip netns` name or a pid")
    return path


def enter_netns(spec: str) -> None:
    """Move this process into a network namespace (``setns(fd, CLONE_NEWNET)``).

    :raises ProbeError: no such namespace.
    :raises ProbeUnavailable: setns(2) failed (it needs CAP_SYS_ADMIN).
    """
    path = netns_path(spec)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise ProbeUnavailable(
                f"cannot enter network namespace {spec}: {os.strerror(err)}", "run as root"
            )
    finally:
        os.close(fd)
