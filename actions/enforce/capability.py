"""What in-kernel enforcement needs, checked before anything is loaded.

Each missing piece is one line. Enforcement that was asked for and cannot run stops
the agent (unless it was started with ``--enforce-best-effort``). The one piece the
agent supplies itself is the BPF file system: as root, :func:`ensure_bpffs` mounts it
at ``/sys/fs/bpf`` where it is missing, as systemd does at boot. Reading is kept apart
from parsing: :func:`parse_mounts` and :func:`fstype_at` work on
``/proc/self/mountinfo`` text.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

from actions.enforce import libbpf
from actions.errors import ActionError

BTF = Path("/sys/kernel/btf/vmlinux")
BPFFS = Path("/sys/fs/bpf")


def parse_mounts(mountinfo: str, fstype: str) -> list[Path]:
    """Return the mount points of ``fstype`` in ``/proc/<pid>/mountinfo`` text.

    >>> parse_mounts("30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw", "cgroup2")
    [PosixPath('/sys/fs/cgroup/unified')]
    """
    found = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and len(fields) >= 5 and right.split()[:1] == [fstype]:
            found.append(Path(fields[4].replace("\\040", " ")))
    return found


def fstype_at(mountinfo: str, path: Path) -> str | None:
    r"""Return the type of the file system that holds ``path`` (an absolute, resolved path).

    The mount with the longest mount point above ``path`` wins, and among mounts on the
    same point the last one (it is mounted over the others).

    >>> info = "31 1 0:27 / /sys rw - sysfs sysfs rw\n32 31 0:28 / /sys/fs/bpf rw - bpf bpf rw"
    >>> fstype_at(info, Path("/sys/fs/bpf/kassist")), fstype_at(info, Path("/sys/kernel"))
    ('bpf', 'sysfs')
    """
    best: tuple[int, str] | None = None
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        point = Path(fields[4].replace("\\040", " "))
        if point == path or point in path.parents:
            depth = len(point.parts)
            if best is None or depth >= best[0]:
                best = (depth, right.split()[0])
    return best[1] if best else None


def read_mountinfo() -> str:
    try:
        return Path("/proc/self/mountinfo").read_text()
    except OSError:
        return ""


def cgroup2_mount() -> Path | None:
    """Return where the cgroup v2 hierarchy is mounted (``None``: it is not)."""
    mounts = parse_mounts(read_mountinfo(), "cgroup2")
    return mounts[0] if mounts else None


def bpffs_problem(pin_root: Path) -> str | None:
    """Return why ``pin_root`` cannot hold pins (``None``: it is on a BPF file system)."""
    resolved = _existing_parent(pin_root)
    if fstype_at(read_mountinfo(), resolved) == "bpf":
        return None
    return f"no BPF file system to pin to at {pin_root} (mount -t bpf bpf {BPFFS})"


def _existing_parent(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path.resolve()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two agents (or tests) starting at once must not stack two bpffs on one directory:
    # the second would hide the first's pins. The lock is on the mount point itself.
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_bpffs(pin_root: Path = BPFFS) -> str | None:
    """Mount the BPF file system at /sys/fs/bpf when ``pin_root`` needs it and it is missing.

    As systemd does at boot (``mode=0700``). Nothing is ever unmounted: others use it too.

    :return: one line saying it was mounted (``None``: nothing to do).
    :raises ActionError: it is missing and cannot be mounted (not root, or mount(2) fails),
        or ``pin_root`` is elsewhere and not on a BPF file system.
    """
    problem = bpffs_problem(pin_root)
    if problem is None:
        return None
    target = Path(os.path.abspath(pin_root))
    if target != BPFFS and BPFFS not in target.parents:
        raise ActionError(problem, "choose a pin root on a BPF file system")
    if os.geteuid() != 0:
        raise ActionError(problem, "run as root, or mount it first")
    with _locked(BPFFS):
        if bpffs_problem(pin_root) is None:  # someone else mounted it meanwhile
            return None
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        if libc.mount(b"bpf", str(BPFFS).encode(), b"bpf", 0, b"mode=0700") != 0:
            err = ctypes.get_errno()
            raise ActionError(
                f"no BPF file system at {BPFFS} and mounting one failed: {os.strerror(err)}",
                f"mount it by hand (mount -t bpf bpf {BPFFS})",
            )
    return f"mounted the BPF file system at {BPFFS} (it was missing; as systemd does at boot)"


def _kernel_problems() -> list[str]:
    try:
        lib = libbpf.lib()
    except OSError:
        return ["no libbpf: install libbpf1 (./setup.sh)"]
    problems = []
    if lib.libbpf_probe_bpf_prog_type(libbpf.BPF_PROG_TYPE_CGROUP_SYSCTL, None) != 1:
        problems.append("this kernel has no BPF_PROG_TYPE_CGROUP_SYSCTL program type")
        return problems
    sysctl = libbpf.BPF_PROG_TYPE_CGROUP_SYSCTL
    for helper, what in (
        (libbpf.BPF_FUNC_LOOP, "bpf_loop() helper (Linux 5.17 or later)"),
        (libbpf.BPF_FUNC_GET_CURRENT_TASK_BTF, "bpf_get_current_task_btf() for cgroup programs"),
    ):
        if lib.libbpf_probe_bpf_helper(sysctl, helper, None) != 1:
            problems.append(f"this kernel has no {what}")
    if lib.libbpf_probe_bpf_prog_type(libbpf.BPF_PROG_TYPE_SYSCALL, None) != 1:
        problems.append("this kernel has no BPF_PROG_TYPE_SYSCALL program type (Linux 5.14)")
    return problems


def problems(cgroups: Sequence[Path] = (), pin_root: Path = BPFFS) -> list[str]:
    """Return why enforcement cannot run here, one line each (empty: it can).

    :param cgroups: the cgroup directories to attach to; each must be on cgroup v2.
    :param pin_root: where the links are pinned: it must be on a BPF file system (call
        :func:`ensure_bpffs` first to mount the usual one).
    """
    if os.geteuid() != 0:
        return ["not root: loading BPF programs needs root (CAP_BPF and CAP_SYS_ADMIN)"]
    found = []
    mount = cgroup2_mount()
    if mount is None:
        found.append("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)")
    if not BTF.exists():
        found.append(f"no kernel BTF ({BTF}): the kernel needs CONFIG_DEBUG_INFO_BTF")
    bpffs = bpffs_problem(pin_root)
    if bpffs is not None:
        found.append(bpffs)
    if shutil.which("clang") is None:
        found.append("no clang to build the BPF program: run ./setup.sh")
    found += _kernel_problems()
    found += [line for _cg, line in cgroup_problems(cgroups, mount)]
    return found


def cgroup_problems(cgroups: Sequence[Path], mount: Path | None = None) -> list[tuple[Path, str]]:
    """Return (cgroup, why) for each of ``cgroups`` that is not a cgroup v2 directory."""
    mount = mount or cgroup2_mount()
    if mount is None:
        return []
    return [
        (cg, f"{cg} is not a directory of the cgroup v2 hierarchy at {mount}")
        for cg in cgroups
        if not _under(cg, mount)
    ]


def _under(path: Path, mount: Path) -> bool:
    try:
        real = path.resolve(strict=True)
    except OSError:
        return False
    return real.is_dir() and (real == mount or mount in real.parents)
