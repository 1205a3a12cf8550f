"""The crash itself: panic message, crashed task and CPU, taint, and the crashed stack."""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn
from drgn.helpers.linux.panic import panic_message, tainted
from drgn.helpers.linux.sched import task_cpu, task_state_to_char

from probes.drgn.stack import Frame, guilty_index, stack_frames


@dataclass
class TaskRef:
    """A task, as a person names it.

    :param pid: its PID (``task_struct.pid``, the thread ID).
    :param comm: ``task_struct.comm`` (at most 15 bytes).
    :param cpu: the CPU it last ran on.
    :param state: ``ps``-style state letter (``R``, ``S``, ``D``, ...).
    """

    pid: int
    comm: str
    cpu: int | None = None
    state: str | None = None


@dataclass
class CrashContext:
    """Who crashed, where, and with what message.

    :param release: ``UTS_RELEASE`` of the kernel.
    :param version: ``init_uts_ns.name.version`` (build number and date).
    :param hostname: ``init_uts_ns.name.nodename``.
    :param panic_message: the line that announced the panic or oops, or ``None``.
    :param task: the crashed task (``None`` for a live kernel).
    :param cpu: the CPU that panicked (``panic_cpu``), or ``None``.
    :param tainted: taint letters as the kernel prints them (``G ... OE``), ``""`` untainted.
    :param taint_mask: ``tainted_mask`` (unsigned long).
    """

    release: str
    version: str | None = None
    hostname: str | None = None
    panic_message: str | None = None
    task: TaskRef | None = None
    cpu: int | None = None
    tainted: str = ""
    taint_mask: int = 0


@dataclass
class CrashedStack:
    """The crashed thread's stack, innermost frame first.

    :param task: the thread.
    :param frames: its frames with source and locals.
    :param guilty: the index of the frame that faulted (below the oops machinery).
    """

    task: TaskRef
    frames: list[Frame] = field(default_factory=list)
    guilty: int | None = None


def _text(value: bytes) -> str:
    return value.decode(errors="replace")


def task_ref(task: drgn.Object) -> TaskRef:
    """Describe a task.

    :param task: ``struct task_struct *``.
    """
    try:
        cpu: int | None = task_cpu(task)
    except (AttributeError, LookupError):
        cpu = None
    return TaskRef(
        pid=task.pid.value_(),
        comm=_text(task.comm.string_()),
        cpu=cpu,
        state=task_state_to_char(task),
    )


def panic_cpu(prog: drgn.Program) -> int | None:
    """Return the CPU that called ``panic()``, or ``None`` when none did.

    ``panic_cpu`` is ``atomic_t`` (``PANIC_CPU_INVALID`` = -1 until a panic).
    """
    try:
        cpu = prog["panic_cpu"].counter.value_()
    except (KeyError, LookupError, AttributeError):
        return None
    return cpu if cpu >= 0 else None


def crash_context(prog: drgn.Program) -> CrashContext:
    """Read who crashed, where and why.

    :param prog: a vmcore (for a live kernel, ``task`` and ``cpu`` are ``None``).
    """
    name = prog["init_uts_ns"].name
    message = panic_message(prog)
    try:
        task: TaskRef | None = task_ref(prog.crashed_thread().object)
    except (ValueError, LookupError):  # live, or a dump of a kernel that did not panic
        task = None
    return CrashContext(
        release=_text(name.release.string_()),
        version=_text(name.version.string_()),
        hostname=_text(name.nodename.string_()),
        panic_message=_text(message) if message is not None else None,
        task=task,
        cpu=panic_cpu(prog),
        tainted=tainted(prog),
        taint_mask=prog["tainted_mask"].value_(),
    )


def crashed_stack(prog: drgn.Program, with_locals: bool = True) -> CrashedStack | None:
    """Return the crashed thread's stack with source lines and locals.

    :return: the stack, or ``None`` for a live kernel or a dump of one (nothing crashed).
    """
    try:
        thread = prog.crashed_thread()
    except (ValueError, LookupError):  # drgn: "panic_cpu is not set" in a dump of a live kernel
        return None
    frames = stack_frames(prog, thread.stack_trace(), with_locals)
    return CrashedStack(task_ref(thread.object), frames, guilty_index(frames))
