"""One frame renderer for parsed call traces and drgn stacks; the vmcore section as Markdown."""

from __future__ import annotations

from assistant.drafters.bug_report import skeleton_tail
from assistant.drafters.vmcore_markdown import vmcore_markdown
from assistant.frames import frame_text
from assistant.triage import triage_path
from assistant.triage.model import Frame as TraceFrame
from assistant.vmcore import VmcoreSection
from probes.drgn import BlockedTask, CrashContext, CrashedStack, Frame, Local, TaskRef
from tests.conftest import DATA


def test_both_frame_types_print_alike() -> None:
    fields = {"function": "tcp_close", "offset": 0x1A, "size": 0x90, "module": "ipv6"}
    source = {"file": "net/ipv4/tcp.c", "line": 2893}
    parsed = TraceFrame(**fields, **source)  # type: ignore[arg-type]
    unwound = Frame(index=3, pc=0xFFFFFFFF81000000, **fields, **source)  # type: ignore[arg-type]
    assert frame_text(parsed) == frame_text(unwound, unwound.pc)
    assert frame_text(parsed) == "tcp_close+0x1a/0x90 [ipv6] net/ipv4/tcp.c:2893"


def test_what_a_frame_lacks_is_left_out() -> None:
    assert frame_text(TraceFrame("f", 0x10)) == "f+0x10"
    assert frame_text(TraceFrame("f")) == "f"
    inlined = Frame(index=0, function="g", pc=0x10, offset=0x60, size=0x85, inline=True)
    assert frame_text(inlined, inlined.pc) == "g [inline]"  # the offset is the caller's
    anonymous = Frame(index=0, function=None, pc=0xFFFFFFFFC0001234)
    assert frame_text(anonymous, anonymous.pc) == "0xffffffffc0001234"


def test_the_report_call_trace_uses_the_renderer() -> None:
    crash = triage_path(str(DATA / "kasan-uaf-ip6_send_skb.log")).crashes[0]
    tail = skeleton_tail(crash)
    for f in crash.call_trace:
        assert frame_text(f) in tail


def _section(comm: str) -> VmcoreSection:
    task = TaskRef(pid=42, comm=comm, cpu=0, state="R")
    frames = [
        Frame(index=0, function="oops_end", pc=0x1, offset=0x18, size=0x18),
        Frame(
            index=1,
            function="level3",
            pc=0x2,
            offset=0x36,
            size=0x49,
            module="m",
            locals=[Local("magic", "unsigned int", "3735928559"), Local("x", "int", None)],
        ),
    ]
    blocked = [BlockedTask(TaskRef(pid=7, comm="waiter", state="D"), 10**9, frames[:1])]
    return VmcoreSection(
        source="/tmp/vmcore",
        live=False,
        crash=CrashContext(release="6.1.0", panic_message="Oops", task=task, tainted="G O"),
        stack=CrashedStack(task, frames, guilty=1),
        blocked=blocked,
    )


def test_vmcore_markdown_marks_the_fault_and_shows_locals() -> None:
    md = vmcore_markdown(_section("worker"))
    faulted = next(line for line in md.splitlines() if "faulted here" in line)
    assert faulted.startswith("#1  level3+0x36/0x49 [m]")
    assert "magic = 3735928559  (unsigned int)" in md and "x = <optimized out>  (int)" in md
    assert "### Tasks blocked in D state (1)" in md and "waiter pid 7 (D)" in md
    assert _section("worker").to_dict()["stack"]["guilty"] == 1


def test_dump_text_cannot_break_out_of_the_markdown() -> None:
    md = vmcore_markdown(_section("x`|y\n```\n# injected"))
    assert "\n# injected" not in md
    assert md.count("```") % 2 == 0
