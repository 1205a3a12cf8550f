"""drgn probes: read a vmcore, the live kernel or a QEMU guest's kernel with drgn.

Open a target with :func:`open_vmcore`, :func:`open_live` or :func:`open_qmp`;
each analysis is a small function over a ``drgn.Program`` that returns typed
data (drgn's helper style); :func:`analyse` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

import drgn

from probes.drgn.crash import CrashContext, CrashedStack, TaskRef, crash_context, crashed_stack
from probes.drgn.memory import MemorySummary, SlabCache, memory_summary
from probes.drgn.modules import KernelModule, loaded_modules
from probes.drgn.printk import LogRecord, dmesg_lines, log_records
from probes.drgn.program import (
    STANDARD_PLACES,
    DebugSources,
    DumpFormat,
    Progress,
    Target,
    dump_format,
    load_debug_info,
    open_live,
    open_qmp,
    open_vmcore,
)
from probes.drgn.stack import Frame, Local
from probes.drgn.sysctl import SysctlValue, sysctl_values
from probes.drgn.tasks import BlockedTask, RunQueue, blocked_tasks, run_queues
from probes.errors import ProbeError

T = TypeVar("T")

#: The analyses :func:`analyse` can run, by name.
ANALYSES = ("crash", "stack", "dmesg", "blocked", "runqueues", "memory", "modules", "sysctl")


@dataclass
class Findings:
    """What drgn read from one target, apart from its printk buffer.

    An analysis that was not asked for (or failed) is ``None``.

    :param source: the dump's path, ``/proc/kcore`` or ``qmp:SOCKET``.
    :param live: a running kernel, not a dump.
    :param format: the dump's :class:`DumpFormat` value, ``None`` when live.
    :param warnings: what opening the target said.
    :param missing_debug_info: modules drgn found no debug info for.
    :param errors: analyses that failed, as ``name: reason`` lines.
    """

    source: str
    live: bool
    format: str | None = None
    crash: CrashContext | None = None
    stack: CrashedStack | None = None
    blocked: list[BlockedTask] | None = None
    runqueues: list[RunQueue] | None = None
    memory: MemorySummary | None = None
    modules: list[KernelModule] | None = None
    sysctl: list[SysctlValue] | None = None
    warnings: list[str] = field(default_factory=list)
    missing_debug_info: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def findings(self) -> dict[str, Any]:
        """Return the fields of :class:`Findings` (shallow), to build another kind of it."""
        return {f.name: getattr(self, f.name) for f in fields(Findings)}

    def to_dict(self) -> dict[str, Any]:
        """Return it as JSON-ready data."""
        return asdict(self)


@dataclass
class Analysis(Findings):
    """Everything read from one target: the :class:`Findings` and the printk buffer.

    :param dmesg: the printk records, oldest first, or ``None`` when not read.
    """

    dmesg: list[LogRecord] | None = None


def _guarded(errors: list[str], name: str, read: Callable[[], T]) -> T | None:
    try:
        return read()
    except drgn.FaultError as exc:
        errors.append(f"{name}: cannot read kernel memory ({exc}): truncated or filtered dump?")
    except (LookupError, ValueError, AttributeError, NotImplementedError) as exc:
        errors.append(f"{name}: {type(exc).__name__}: {exc}")
    return None


def analyse(
    target: Target,
    only: tuple[str, ...] = ANALYSES,
    with_locals: bool = True,
    progress: Progress | None = None,
) -> Analysis:
    """Run the analyses named in ``only`` over a target.

    A failing analysis is recorded in :attr:`Analysis.errors` and the others go on.

    :param only: names from :data:`ANALYSES`.
    :param with_locals: read the locals of each frame of the crashed stack.
    :param progress: called with a line before each analysis.
    :raises ProbeError: a name is unknown, or every analysis failed (an unreadable dump).
    """
    unknown = [n for n in only if n not in ANALYSES]
    if unknown:
        raise ProbeError(f"unknown analysis {unknown[0]!r}", f"choose from {', '.join(ANALYSES)}")
    prog = target.prog
    out = Analysis(
        source=target.source,
        live=target.live,
        format=target.format.value if target.format else None,
        warnings=list(target.warnings),
        missing_debug_info=list(target.missing_debug_info),
    )
    readers: dict[str, Callable[[], Any]] = {
        "crash": lambda: crash_context(prog),
        "stack": lambda: crashed_stack(prog, with_locals),
        "dmesg": lambda: log_records(prog),
        "blocked": lambda: blocked_tasks(prog),
        "runqueues": lambda: run_queues(prog),
        "memory": lambda: memory_summary(prog),
        "modules": lambda: loaded_modules(prog),
        "sysctl": lambda: sysctl_values(prog),
    }
    for name in only:
        if progress:
            progress(f"reading {name}")
        setattr(out, name, _guarded(out.errors, name, readers[name]))
    if only and len(out.errors) == len(only):
        raise ProbeError(
            f"{target.source}: nothing could be read ({out.errors[0]})",
            "check that the dump is complete and matches the debug info",
        )
    return out


__all__ = [
    "ANALYSES",
    "STANDARD_PLACES",
    "Analysis",
    "BlockedTask",
    "CrashContext",
    "CrashedStack",
    "DebugSources",
    "DumpFormat",
    "Findings",
    "Frame",
    "KernelModule",
    "Local",
    "LogRecord",
    "MemorySummary",
    "Progress",
    "RunQueue",
    "SlabCache",
    "SysctlValue",
    "Target",
    "TaskRef",
    "analyse",
    "blocked_tasks",
    "crash_context",
    "crashed_stack",
    "dmesg_lines",
    "dump_format",
    "load_debug_info",
    "loaded_modules",
    "log_records",
    "memory_summary",
    "open_live",
    "open_qmp",
    "open_vmcore",
    "run_queues",
    "sysctl_values",
]
