"""What in-kernel enforcement needs, checked before anything is loaded.

Each missing piece is one line; the agent prints them and runs on without
enforcement (its user-space checks are unchanged). Reading is kept apart from
parsing: :func:`parse_mounts` works on ``/proc/self/mountinfo`` text.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from actions.enforce import libbpf

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


def _mountinfo() -> str:
    try:
        return Path("/proc/self/mountinfo").read_text()
    except OSError:
        return ""


def cgroup2_mount() -> Path | None:
    """Return where the cgroup v2 hierarchy is mounted (``None``: it is not)."""
    mounts = parse_mounts(_mountinfo(), "cgroup2")
    return mounts[0] if mounts else None


def _kernel_problems() -> list[str]:
    try:
        lib = libbpf.lib()
    except OSError:
        return ["no libbpf: install libbpf1 (./setup.sh)"]
    problems = []
    if lib.libbpf_probe_bpf_prog_type(libbpf.BPF_PROG_TYPE_CGROUP_SYSCTL, None) != 1:
        problems.append("this kernel has no BPF_PROG_TYPE_CGROUP_SYSCTL program type")
    elif (
        lib.libbpf_probe_bpf_helper(libbpf.BPF_PROG_TYPE_CGROUP_SYSCTL, libbpf.BPF_FUNC_LOOP, None)
        != 1
    ):
        problems.append("this kernel has no bpf_loop() helper (Linux 5.17 or later)")
    return problems


def problems(cgroups: Sequence[Path] = ()) -> list[str]:
    """Return why enforcement cannot run here, one line each (empty: it can).

    :param cgroups: the cgroup directories to attach to; each must be on cgroup v2.
    """
    if os.geteuid() != 0:
        return ["not root: loading BPF programs needs root (CAP_BPF and CAP_SYS_ADMIN)"]
    found = []
    mount = cgroup2_mount()
    if mount is None:
        found.append("no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup)")
    if not BTF.exists():
        found.append(f"no kernel BTF ({BTF}): the kernel needs CONFIG_DEBUG_INFO_BTF")
    if not parse_mounts(_mountinfo(), "bpf"):
        found.append(f"no BPF file system to pin to (mount -t bpf bpf {BPFFS})")
    if shutil.which("clang") is None:
        found.append("no clang to build the BPF program: run ./setup.sh")
    found += _kernel_problems()
    for cg in cgroups:
        if mount is not None and not _under(cg, mount):
            found.append(f"{cg} is not a directory of the cgroup v2 hierarchy at {mount}")
    return found


def _under(path: Path, mount: Path) -> bool:
    try:
        real = path.resolve(strict=True)
    except OSError:
        return False
    return real.is_dir() and (real == mount or mount in real.parents)
