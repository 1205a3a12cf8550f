"""Stack traces as data: frames with source file:line and the locals drgn can read."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field

import drgn

#: Longest rendering of one local's value, in characters.
VALUE_MAX = 200
#: x86-64 kernel addresses are in the upper half; below it the unwinder is in user space.
KERNEL_SPACE_START = 1 << 63
# Functions of the oops/panic machinery itself: the guilty frame is below them.
_CRASH_MACHINERY = re.compile(
    r"^(asm_exc_|exc_|handle_page_fault|page_fault_oops|kernelmode_fixup_or_oops|"
    r"no_context|__bad_area|bad_area|do_user_addr_fault|oops_end|die|do_trap|do_error_trap|"
    r"handle_bug|panic|notifier_call_chain|atomic_notifier_call_chain|pvpanic_|"
    r"crash_|__crash_kexec|machine_crash|nmi_|native_machine|show_|dump_stack)"
)


@dataclass
class Local:
    """One local variable or parameter of a frame.

    :param name: its C name.
    :param type: its C type, e.g. ``struct kassist_item *``.
    :param value: drgn's rendering of the value, or ``None`` when optimised out.
    """

    name: str
    type: str
    value: str | None


@dataclass
class Frame:
    """One frame of a stack trace, innermost first.

    :param index: the frame number (0: innermost).
    :param function: the function's name (``None`` when no symbol covers the PC).
    :param pc: the program counter.
    :param offset: the PC's offset into its symbol in bytes, or ``None``.
    :param size: the size of that symbol in bytes, or ``None``.
    :param module: the kernel module the PC is in, or ``None`` for vmlinux.
    :param file: the source file, or ``None``.
    :param line: the source line, or ``None``.
    :param inline: the frame is a function inlined into the next one.
    :param interrupted: the frame was stopped by an exception or interrupt.
    :param locals: the frame's locals and parameters (empty without DWARF).
    """

    index: int
    function: str | None
    pc: int
    offset: int | None = None
    size: int | None = None
    module: str | None = None
    file: str | None = None
    line: int | None = None
    inline: bool = False
    interrupted: bool = False
    locals: list[Local] = field(default_factory=list)


def _value_text(value: drgn.Object) -> str | None:
    if value.absent_:
        return None
    try:
        text = value.format_(type_name=False, dereference=False, members_same_line=True)
    except drgn.FaultError as exc:
        return f"<unreadable: {exc}>"
    text = " ".join(text.split())
    return text if len(text) <= VALUE_MAX else text[: VALUE_MAX - 1] + "…"


def frame_locals(frame: drgn.StackFrame) -> list[Local]:
    """Return the locals and parameters of a frame that DWARF describes.

    :param frame: a drgn stack frame.
    :return: one :class:`Local` per name, optimised-out ones with ``value=None``.
    """
    out = []
    for name in frame.locals():
        try:
            value = frame[name]
        except (KeyError, LookupError, drgn.FaultError):
            continue
        out.append(Local(name, value.type_.type_name(), _value_text(value)))
    return out


def _frame(prog: drgn.Program, index: int, frame: drgn.StackFrame, with_locals: bool) -> Frame:
    pc = frame.pc
    # frame.name is the DWARF function, else the symbol, else the PC as hex.
    name = frame.name
    out = Frame(index, None if name.startswith("0x") else name, pc)
    out.inline, out.interrupted = frame.is_inline, frame.interrupted
    try:
        symbol = frame.symbol()
        out.offset = pc - symbol.address
        out.size = symbol.size or None
        out.function = out.function or symbol.name
    except LookupError:
        pass
    try:
        module = prog.module(pc)
        if module.name != "kernel":
            out.module = module.name
    except LookupError:
        pass
    with contextlib.suppress(LookupError):
        out.file, out.line, _column = frame.source()
    if with_locals:
        out.locals = frame_locals(frame)
    return out


def stack_frames(
    prog: drgn.Program, trace: drgn.StackTrace, with_locals: bool = True
) -> list[Frame]:
    """Turn a drgn stack trace into frames, stopping where it leaves the kernel.

    :param prog: the program the trace belongs to.
    :param trace: ``prog.stack_trace(task)`` or a thread's ``stack_trace()``.
    :param with_locals: read each frame's locals (slower; off for many tasks).
    """
    frames = []
    for i, frame in enumerate(trace):
        if i > 0 and frame.pc < KERNEL_SPACE_START:
            break  # the user-space part below the syscall entry
        frames.append(_frame(prog, i, frame, with_locals))
    return frames


def guilty_index(frames: list[Frame]) -> int | None:
    """Return the index of the frame where the kernel faulted, below the oops machinery.

    The frame interrupted by the exception (drgn marks it ``interrupted``) is
    the one; without such a frame, the first frame outside the crash machinery.

    :return: an index into ``frames``, or ``None`` when there are none.
    """
    for f in frames[1:]:
        if f.interrupted and f.function and not _CRASH_MACHINERY.match(f.function):
            return f.index
    for f in frames:
        if f.function and not _CRASH_MACHINERY.match(f.function):
            return f.index
    return frames[0].index if frames else None
