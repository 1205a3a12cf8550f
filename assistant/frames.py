"""One way to print a stack frame, for call traces parsed from logs and stacks read with drgn.

Both ``assistant.triage.model.Frame`` (a frame of a crash report's call trace)
and ``probes.drgn.Frame`` (a frame drgn unwound from a vmcore) print as the
kernel and syzkaller's symbolised reports do::

    kassist_crash_level3+0x1e/0x30 [kassist_crash] kassist_crash.c:41 [inline]
"""

from __future__ import annotations

from typing import Protocol


class FrameFields(Protocol):
    """What a frame needs to be printed (both frame types have these fields)."""

    @property
    def function(self) -> str | None:
        """The symbol, or ``None`` when none covers the PC."""

    @property
    def offset(self) -> int | None:
        """The offset into the function, in bytes."""

    @property
    def size(self) -> int | None:
        """The function's size, in bytes."""

    @property
    def module(self) -> str | None:
        """The module the function lives in (``None``: vmlinux)."""

    @property
    def file(self) -> str | None:
        """The source file."""

    @property
    def line(self) -> int | None:
        """The source line."""

    @property
    def inline(self) -> bool:
        """The frame was inlined into the next one."""


def frame_text(frame: FrameFields, pc: int | None = None) -> str:
    """Return a frame as ``func+0x1e/0x30 [mod] file.c:41 [inline]``.

    What the frame does not know is left out: no ``/0x30`` without a size, no
    ``file:line`` unless symbolised, no offset for an inlined frame.

    >>> from assistant.triage.model import Frame
    >>> frame_text(Frame("tcp_close", 0x1A, 0x90, None, "net/ipv4/tcp.c", 2893))
    'tcp_close+0x1a/0x90 net/ipv4/tcp.c:2893'

    :param frame: a frame of either type.
    :param pc: the program counter, shown (as hex) when no symbol names the function.
    """
    where = frame.function or (f"0x{pc:x}" if pc is not None else "?")
    # An inlined frame has no offset of its own (drgn gives the caller's): none, as syzkaller.
    if frame.function and frame.offset is not None and not frame.inline:
        where += f"+0x{frame.offset:x}" + (f"/0x{frame.size:x}" if frame.size else "")
    if frame.module:
        where += f" [{frame.module}]"
    if frame.file:
        where += f" {frame.file}" + (f":{frame.line}" if frame.line else "")
    if frame.inline:
        where += " [inline]"
    return where
