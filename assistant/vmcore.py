"""Triage a vmcore: drgn's analyses plus the triage engine run over its printk buffer.

A vmcore's log buffer goes through the same engine as a console log, so the
crash gets the same title, type, frame and signature; the drgn analyses
(crashed stack with locals, blocked tasks, memory, modules, sysctls) go into
``TriageResult.vmcore``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from assistant.errors import InputError, NotAvailable
from assistant.triage import TriageResult, triage_lines
from probes.drgn import ANALYSES, Analysis, Target, analyse, dmesg_lines
from probes.drgn import open_live as _open_live
from probes.drgn import open_qmp as _open_qmp
from probes.drgn import open_vmcore as _open_vmcore
from probes.errors import ProbeError

#: The ``FILE`` argument that means the running kernel.
LIVE = "/proc/kcore"
#: The prefix of the ``FILE`` argument that means a QEMU guest: ``qmp:/path/to/qmp.sock``.
QMP_PREFIX = "qmp:"


def progress_to_stderr(message: str) -> None:
    """Show the progress of a slow step on stderr (stdout may be piped JSON)."""
    print(f"kassist: {message}", file=sys.stderr, flush=True)


def open_target(
    path: str,
    vmlinux: str | None = None,
    debug_dir: str | None = None,
    extra: Sequence[str] = (),
    quiet: bool = False,
) -> Target:
    """Open a vmcore, ``/proc/kcore`` (the running kernel) or ``qmp:SOCKET`` (a QEMU guest).

    :param path: the vmcore, :data:`LIVE`, or :data:`QMP_PREFIX` + QEMU's QMP socket.
    :param vmlinux: the kernel's ELF with DWARF (from its ``-dbg`` package).
    :param debug_dir: a ``/usr/lib/debug``-style tree.
    :param extra: module ``.ko`` files with debug info.
    :param quiet: no progress lines on stderr.
    :raises NotAvailable: there is no ``/proc/kcore`` here.
    :raises InputError: the dump, or its debug info, cannot be used.
    """
    progress = None if quiet else progress_to_stderr
    try:
        if path == LIVE:
            return _open_live(vmlinux, debug_dir, progress=progress)
        if path.startswith(QMP_PREFIX):
            return _open_qmp(path[len(QMP_PREFIX) :], vmlinux, debug_dir, extra, progress)
        return _open_vmcore(path, vmlinux, debug_dir, extra, progress)
    except ProbeError as exc:
        if exc.message.startswith("not available here"):
            raise NotAvailable(exc.message, exc.hint) from None
        raise InputError(exc.message, exc.hint) from None


def analyse_target(
    target: Target, only: Sequence[str] = ANALYSES, with_locals: bool = True
) -> Analysis:
    """Run drgn's analyses over an opened target.

    :raises InputError: nothing could be read from it.
    """
    try:
        return analyse(target, tuple(only), with_locals)
    except ProbeError as exc:
        raise InputError(exc.message, exc.hint) from None


def triage_analysis(analysis: Analysis) -> TriageResult:
    """Triage an analysis' printk buffer and attach the analysis as ``vmcore``.

    :param analysis: the output of :func:`analyse_target` (with ``dmesg``).
    """
    lines = dmesg_lines(analysis.dmesg or [])
    source = analysis.source if analysis.live else f"vmcore:{analysis.source}"
    result = triage_lines(lines, source=source)
    result.warnings.extend(analysis.warnings)
    if analysis.missing_debug_info:
        result.warnings.append(
            "no debug info for modules: " + ", ".join(analysis.missing_debug_info)
        )
    result.warnings.extend(analysis.errors)
    result.vmcore = analysis.to_dict()
    # The log is already the top-level result; keep the section about drgn's own findings.
    result.vmcore.pop("dmesg", None)
    result.vmcore["dmesg_records"] = len(analysis.dmesg or [])
    return result


def triage_vmcore(
    path: str,
    vmlinux: str | None = None,
    debug_dir: str | None = None,
    extra: Sequence[str] = (),
    quiet: bool = False,
) -> TriageResult:
    """Open a vmcore, run every analysis, and triage its printk buffer.

    >>> result = triage_vmcore("/var/crash/202611270430/vmcore", debug_dir="/usr/lib/debug")
    >>> result.crashes[0].title
    'BUG: unable to handle kernel NULL pointer dereference in kassist_crash_level3'

    :param path: the vmcore (or ``/proc/kcore``, or ``qmp:SOCKET``).
    :param vmlinux: the kernel's ELF with DWARF.
    :param debug_dir: a ``/usr/lib/debug``-style tree.
    :param extra: module ``.ko`` files with debug info.
    :param quiet: no progress lines on stderr.
    :raises KassistError: the dump or its debug info cannot be used.
    """
    target = open_target(path, vmlinux, debug_dir, extra, quiet)
    return triage_analysis(analyse_target(target))


def frame_text(f: dict[str, Any]) -> str:
    """Return a frame (``probes.drgn.Frame`` as a dict) as ``func+0x36 [mod] file:line``."""
    where = f["function"] or f"0x{f['pc']:x}"
    if f.get("offset") is not None and f["function"]:
        where += f"+0x{f['offset']:x}"
    if f.get("module"):
        where += f" [{f['module']}]"
    if f.get("file"):
        where += f" {f['file']}" + (f":{f['line']}" if f.get("line") else "")
    if f.get("inline"):
        where += " (inlined)"
    return where


def vmcore_text(vmcore: dict[str, Any]) -> str:
    """Return the few lines ``kassist triage`` prints about a vmcore's drgn analyses.

    :param vmcore: ``TriageResult.vmcore``.
    """
    lines = ["  vmcore:"]
    crash = vmcore.get("crash") or {}
    if crash:
        task = crash.get("task") or {}
        lines.append(
            f"    panic: {crash.get('panic_message') or '?'} · task {task.get('comm', '?')}"
            f" pid {task.get('pid', '?')} · cpu {crash.get('cpu')}"
            f" · tainted {crash.get('tainted', '').strip() or 'no'}"
        )
    stack = vmcore.get("stack")
    if stack and stack.get("guilty") is not None:
        frame = stack["frames"][stack["guilty"]]
        known = [v for v in frame["locals"] if v["value"] is not None]
        locals_ = ", ".join(f"{v['name']}={v['value']}" for v in known)
        lines.append(f"    faulted in {frame_text(frame)}" + (f" ({locals_})" if locals_ else ""))
    blocked = vmcore.get("blocked") or []
    lines.append(f"    tasks in D state: {len(blocked)}")
    for b in blocked[:5]:
        inner = next(
            (f for f in b["frames"] if not str(f["function"] or "").startswith(_SCHED_PREFIXES)),
            None,
        )
        where = frame_text(inner) if inner else "?"
        lines.append(f"      {b['task']['comm']} pid {b['task']['pid']} in {where}")
    return "\n".join(lines)


# Scheduler frames at the top of every sleeping task's stack: skipped to show where it waits.
_SCHED_PREFIXES = (
    "context_switch",
    "__schedule",
    "schedule",
    "io_schedule",
    "do_wait_for_common",
    "__wait_for_common",
    "wait_for_common",
    "__mutex_lock",
    "mutex_lock",
    "rwsem_down",
    "down_",
)
