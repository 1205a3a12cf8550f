"""Inspect what this machine lets kassist do, with a fix hint for each gap.

Each check is a small function in :data:`CHECKS`; none of them changes the
system. A check that cannot complete reports ``error`` rather than raising.
``kassist doctor --fix`` runs the safe fixes of :data:`FIXES` for the checks
that came out ``missing``, each reported in one line, then checks again.
"""

from __future__ import annotations

import errno
import importlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from assistant.config import Config

Status = Literal["ok", "missing", "error"]


@dataclass(frozen=True)
class Check:
    """The outcome of one check.

    :param name: what was checked.
    :param status: ``ok``; ``missing`` (checked, not there: see the hint);
        ``error`` (could not check).
    :param detail: what was found, in a few words.
    :param hint: what to do, when the status is not ``ok``.
    """

    name: str
    status: Status
    detail: str
    hint: str = ""

    def to_dict(self) -> dict[str, str]:
        """Return the check as a JSON object."""
        return asdict(self)


def check_root(cfg: Config) -> Check:
    """Check whether kassist runs as root (eBPF, sysctl writes and /dev/kmsg need it)."""
    if os.geteuid() == 0:
        return Check("root", "ok", "running as root")
    return Check(
        "root",
        "missing",
        f"running as uid {os.geteuid()}",
        "run with sudo for eBPF probes and the agent",
    )


def check_kmsg(cfg: Config) -> Check:
    """Check that /dev/kmsg can be opened and a record read."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return Check(
            "/dev/kmsg",
            "missing",
            exc.strerror or str(exc),
            "run as root, or set kernel.dmesg_restrict=0",
        )
    try:
        os.read(fd, 8192)
    except BlockingIOError:
        pass
    except OSError as exc:
        if exc.errno != errno.EPIPE:  # EPIPE: a record was overwritten; still readable
            return Check("/dev/kmsg", "missing", exc.strerror or str(exc), "run as root")
    finally:
        os.close(fd)
    return Check("/dev/kmsg", "ok", "readable")


def check_bpftrace(cfg: Config) -> Check:
    """Check that bpftrace is installed and can attach a probe (runs ``BEGIN { exit(); }``)."""
    path = shutil.which("bpftrace")
    if path is None:
        return Check("bpftrace", "missing", "not installed", "apt-get install bpftrace")
    if os.geteuid() != 0:
        return Check("bpftrace", "missing", f"{path}, but attaching needs root", "run as root")
    try:
        proc = subprocess.run(
            [path, "-e", "BEGIN { exit(); }"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return Check(
            "bpftrace",
            "error",
            "attaching took more than 30 s",
            "check `bpftrace -e 'BEGIN{exit();}'`",
        )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        return Check(
            "bpftrace", "missing", f"cannot attach: {last[:120]}", "check kernel BPF support"
        )
    version = subprocess.run(
        [path, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return Check("bpftrace", "ok", f"{version or path}, attaches")


def check_tracefs(cfg: Config) -> Check:
    """Check that tracefs is mounted (bpftrace's tracepoint probes need its event list)."""
    from probes.bpf.decode import tracefs_dir

    path = tracefs_dir()
    if path is not None:
        return Check("tracefs", "ok", f"mounted at {path}")
    return Check(
        "tracefs",
        "missing",
        "not mounted",
        "as root: kassist doctor --fix (mount -t tracefs tracefs /sys/kernel/tracing)",
    )


def check_bpffs(cfg: Config) -> Check:
    """Check that a BPF file system is mounted (the agent pins its enforcement programs to it)."""
    from actions.enforce.capability import BPFFS, bpffs_problem

    if bpffs_problem(BPFFS) is None:
        return Check("bpffs", "ok", f"mounted at {BPFFS}")
    return Check(
        "bpffs",
        "missing",
        "not mounted",
        f"as root: kassist doctor --fix (mount -t bpf bpf {BPFFS})",
    )


def check_drgn(cfg: Config) -> Check:
    """Check that drgn can be imported."""
    try:
        drgn = importlib.import_module("drgn")
    except ImportError as exc:
        return Check("drgn", "missing", str(exc), "pip install drgn (the set-up command does)")
    return Check("drgn", "ok", f"drgn {getattr(drgn, '__version__', '?')}")


def check_kcore(cfg: Config) -> Check:
    """Check for /proc/kcore (live-kernel analysis with drgn)."""
    if not os.path.exists("/proc/kcore"):
        return Check(
            "/proc/kcore",
            "missing",
            "not present",
            "a kernel with CONFIG_PROC_KCORE; vmcores still work",
        )
    if not os.access("/proc/kcore", os.R_OK):
        return Check("/proc/kcore", "missing", "not readable", "run as root")
    return Check("/proc/kcore", "ok", "readable")


def check_btf(cfg: Config) -> Check:
    """Check for the kernel's BTF (bpftrace needs it for kfuncs and struct access)."""
    btf = Path("/sys/kernel/btf/vmlinux")
    if btf.exists():
        return Check("BTF", "ok", f"{btf} ({btf.stat().st_size // 1024} KiB)")
    return Check(
        "BTF", "missing", "no /sys/kernel/btf/vmlinux", "a kernel with CONFIG_DEBUG_INFO_BTF"
    )


def check_kvm(cfg: Config) -> Check:
    """Check whether /dev/kvm can be opened (speeds up the vmcore fixture's QEMU)."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
    except OSError as exc:
        return Check(
            "/dev/kvm", "missing", exc.strerror or str(exc), "QEMU falls back to software emulation"
        )
    os.close(fd)
    return Check("/dev/kvm", "ok", "usable")


def check_model(cfg: Config) -> Check:
    """Check that the configured model (default: the bundled GGUF) loads, and time it."""
    from assistant.llm import LLMUnavailable, make_backend

    if cfg.llm.backend == "none":
        return Check("model", "ok", "backend 'none': templates only")
    try:
        backend = make_backend(cfg.llm)
        t0 = time.perf_counter()
        backend.load()
        took = time.perf_counter() - t0
    except LLMUnavailable as exc:
        return Check("model", "missing", exc.message, exc.hint)
    return Check("model", "ok", f"{cfg.llm.backend}: {backend.location}, loaded in {took:.2f} s")


def check_knowledge_base(cfg: Config) -> Check:
    """Check that the knowledge base is built, for the installed kernel sources and this schema."""
    from assistant.knowledge import KnowledgeUnavailable
    from assistant.knowledge.base import BUILD_HINT, open_default
    from assistant.knowledge.sources import SOURCE_PACKAGE

    try:
        with open_default() as kb:
            meta = kb.meta
            return Check(
                "knowledge base",
                "ok",
                f"{kb.path}: linux {kb.kernel_version}"
                f" ({SOURCE_PACKAGE} {meta.get('source_package_version') or '?'})",
            )
    except KnowledgeUnavailable as exc:
        # The right file is named by the installed sources' version and the schema: any
        # other file in the two directories was built for other sources or another kassist.
        others = [] if os.environ.get("KASSIST_KB") else _other_knowledge_bases()
        if others and "schema" not in exc.message:
            detail = f"only one built for other kernel sources or another kassist ({others[-1]})"
            return Check("knowledge base", "missing", detail, f"rebuild it: {BUILD_HINT}")
        return Check("knowledge base", "missing", exc.message, exc.hint)


def _other_knowledge_bases() -> list[str]:
    from assistant.knowledge.base import SHARED_DIR, user_dir
    from assistant.knowledge.sources import SOURCE_PACKAGE

    return sorted(
        str(p) for d in (user_dir(), SHARED_DIR) for p in d.glob(f"{SOURCE_PACKAGE}_*.sqlite")
    )


def _user_in_question() -> tuple[str, int]:
    """Return the person running kassist: under sudo the one who ran sudo, else the caller."""
    import pwd

    name = os.environ.get("SUDO_USER", "")
    if os.geteuid() == 0 and name and name != "root":
        try:
            return name, pwd.getpwnam(name).pw_uid
        except KeyError:
            pass
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name, uid
    except KeyError:
        return str(uid), uid


def check_agent_group(cfg: Config) -> Check:
    """Check that the agent's group exists and that the user is in it (root always may talk)."""
    import grp
    import pwd

    from actions.protocol import DEFAULT_GROUP

    create = f"groupadd --system {DEFAULT_GROUP}"
    try:
        group = grp.getgrnam(DEFAULT_GROUP)
    except KeyError:
        return Check(
            "agent group",
            "missing",
            f"no group {DEFAULT_GROUP!r}: only root may talk to the agent",
            f"as root: {create}, then usermod -aG {DEFAULT_GROUP} USER",
        )
    name, uid = _user_in_question()
    if uid == 0:
        detail = f"group {DEFAULT_GROUP!r} exists (root may always talk to the agent)"
        return Check("agent group", "ok", detail)
    try:
        primary = pwd.getpwnam(name).pw_gid
    except KeyError:
        primary = -1
    if name in group.gr_mem or primary == group.gr_gid:
        return Check("agent group", "ok", f"{name} is in group {DEFAULT_GROUP!r}")
    return Check(
        "agent group",
        "missing",
        f"{name} is not in group {DEFAULT_GROUP!r}: the agent will refuse {name}",
        f"as root: usermod -aG {DEFAULT_GROUP} {name}, then log in again",
    )


def check_agent_socket(cfg: Config) -> Check:
    """Check whether the kernel agent listens on its socket."""
    path = cfg.agent.socket
    if not os.path.exists(path):
        return Check(
            "agent socket", "missing", f"{path} does not exist", "start it: kassist agent serve"
        )
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(path)
        except OSError as exc:
            return Check(
                "agent socket",
                "missing",
                f"{path}: {exc.strerror}",
                "start it: kassist agent serve",
            )
    return Check("agent socket", "ok", f"{path} accepts connections")


CHECKS: list[Callable[[Config], Check]] = [
    check_root,
    check_kmsg,
    check_bpftrace,
    check_tracefs,
    check_bpffs,
    check_drgn,
    check_kcore,
    check_btf,
    check_kvm,
    check_model,
    check_knowledge_base,
    check_agent_group,
    check_agent_socket,
]


def run_checks(cfg: Config, checks: list[Callable[[Config], Check]] | None = None) -> list[Check]:
    """Run every check (or those given); one that raises is reported as ``error``, never raised."""
    results = []
    for check in CHECKS if checks is None else checks:
        name = (check.__doc__ or check.__name__).split()[1] if check.__doc__ else check.__name__
        try:
            results.append(check(cfg))
        except Exception as exc:  # a doctor must finish its round
            results.append(Check(name, "error", f"{type(exc).__name__}: {exc}", "run with --debug"))
    return results


def fix_tracefs() -> str:
    """Mount tracefs at /sys/kernel/tracing (as root); return what was done.

    :raises ProbeError: not root, no tracefs in this kernel, or ``mount`` failed.
    """
    from probes.bpf.tracefs import mount_tracefs

    return f"mounted tracefs at {mount_tracefs()}"


def fix_bpffs() -> str:
    """Mount a BPF file system at /sys/fs/bpf (as root); return what was done.

    :raises ActionError: not root, no /sys/fs/bpf, or ``mount`` failed.
    """
    from actions.enforce.capability import ensure_bpffs

    return ensure_bpffs() or "already mounted"


#: Check name → its safe fix: nothing that changes a kernel setting (that is the agent's),
#: only what makes a read-only facility reachable.
FIXES: dict[str, Callable[[], str]] = {
    "tracefs": fix_tracefs,
    "bpffs": fix_bpffs,
}


@dataclass(frozen=True)
class Fix:
    """What ``--fix`` did for one check.

    :param name: the check's name.
    :param done: the fix worked.
    :param detail: what was done, or why it could not be.
    """

    name: str
    done: bool
    detail: str

    def line(self) -> str:
        """Return the one line a person reads about this fix."""
        return f"{'fixed' if self.done else 'cannot fix'} {self.name}: {self.detail}"

    def to_dict(self) -> dict[str, object]:
        """Return the fix as a JSON object."""
        return asdict(self)


def run_fixes(checks: list[Check]) -> list[Fix]:
    """Run the fix of every ``missing`` check that has one in :data:`FIXES`.

    :return: one :class:`Fix` per fix tried, in check order.
    """
    from actions.errors import ActionError
    from probes.errors import ProbeError

    out = []
    for check in checks:
        fix = FIXES.get(check.name)
        if fix is None or check.status != "missing":
            continue
        try:
            out.append(Fix(check.name, True, fix()))
        except (ProbeError, ActionError) as exc:
            out.append(Fix(check.name, False, exc.one_line()))
    return out


def recheck(cfg: Config, checks: list[Check], names: set[str]) -> list[Check]:
    """Run again the checks called ``names`` (after a fix); keep the others' results.

    :param checks: the results of :func:`run_checks`, one per entry of :data:`CHECKS`.
    """
    out = list(checks)
    for i, (check, result) in enumerate(zip(CHECKS, checks, strict=True)):
        if result.name in names:
            out[i] = run_checks(cfg, [check])[0]
    return out
