"""A first, simple crash detector: find oops headers, cut the report, name it.

This is the foundation's detector; the full engine (syzkaller-compatible
titles for every oops family) replaces its internals behind the same
:func:`triage_lines` entry point.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

from assistant.triage.model import Crash, Frame, KernelInfo, TaskInfo, TriageResult

# printk prefixes: "[  12.345678] ", "[  12.345678][ T123] ", "<4>[ 1.0] ", syslog "kernel: ".
_PREFIX = re.compile(
    r"^(?:<\d+>)?(?:\[\s*\d+\.\d+\]\s*)?(?:\[\s*[TC]\d+\]\s*)?(?:.*?\bkernel:\s+(?:\[\s*\d+\.\d+\]\s*)?)?"
)

# (header regex, crash type, title template). Order matters: specific first.
_HEADERS: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(r"BUG: KASAN: ([a-z\-]+) in (\S+?)(?:\+0x|$|\s)"), "KASAN", "KASAN: {0} in {1}"),
    (
        re.compile(r"BUG: unable to handle kernel (.*?) (?:at|in) "),
        "BUG",
        "BUG: unable to handle {0}",
    ),
    (re.compile(r"BUG: soft lockup"), "SOFT-LOCKUP", "BUG: soft lockup"),
    (re.compile(r"kernel BUG at (\S+?):\d+"), "BUG", "kernel BUG in {0}"),
    (re.compile(r"BUG: (.+?)(?: at |$)"), "BUG", "BUG: {0}"),
    (re.compile(r"WARNING: CPU: \d+ PID: \d+ at (\S+)"), "WARNING", "WARNING in {frame}"),
    (re.compile(r"WARNING: (.+)"), "WARNING", "WARNING: {0}"),
    (re.compile(r"INFO: task \S+ blocked for more than"), "HANG", "INFO: task hung in {frame}"),
    (re.compile(r"INFO: (.+?)(?: detected)?$"), "INFO", "INFO: {0}"),
    (re.compile(r"general protection fault"), "GPF", "general protection fault in {frame}"),
    (re.compile(r"UBSAN: (.+?) in "), "UBSAN", "UBSAN: {0} in {frame}"),
    (re.compile(r"Kernel panic - not syncing: (.+)"), "PANIC", "kernel panic: {0}"),
    (re.compile(r"divide error:"), "DoS", "divide error in {frame}"),
    (re.compile(r"invalid opcode:"), "BUG", "invalid opcode in {frame}"),
]

_FRAME = re.compile(
    r"^\s*(?:\[<[0-9a-f]+>\]\s*)?(?:\? )?([A-Za-z_.$][\w.$]*)\+0x([0-9a-f]+)/0x([0-9a-f]+)"
    r"(?:\s+\[(\w+)\])?(?:\s+(\S+\.[chS]):(\d+))?(?:\s+\[inline\])?"
)
_INLINE_FRAME = re.compile(r"^\s*([A-Za-z_][\w.]*)\s+(\S+\.[chS]):(\d+)\s+\[inline\]")
_CPU_LINE = re.compile(
    r"CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (.{1,16}?) "
    r"(Not tainted|Tainted: ([A-Z ]+?))\s+(\S+)"
)
_HARDWARE = re.compile(r"Hardware name: (.+)")
_END = re.compile(r"---\[ end trace|Kernel Offset:|---\[ end Kernel panic")

# Frames that name the messenger, not the culprit.
_GENERIC = re.compile(
    r"^(_*dump_stack\w*|show_stack|show_regs\w*|print_address_description\w*|schedule\w*|"
    r"mutex_lock\w*|_raw_\w+|lock_acquire|rtnl_lock||print_\w+|kasan_\w+|__asan_\w+|__kasan_\w+|report_bug|"
    r"__warn\w*|warn_slowpath\w*|panic|do_error_trap|do_trap\w*|exc_\w+|handle_bug|asm_exc_\w+|"
    r"__might_sleep|___might_sleep|check_\w+|entry_SYSCALL\w*|do_syscall_\w+|__x64_sys_\w+|"
    r"__do_sys_\w+|__se_sys_\w+|x64_sys_call|ret_from_fork\w*|kthread)$"
)
MAX_REPORT_LINES = 400


def _strip(line: str) -> str:
    return _PREFIX.sub("", line, count=1)


def _match_header(text: str) -> tuple[str, str, tuple[str, ...]] | None:
    for regex, ctype, template in _HEADERS:
        m = regex.search(text)
        if m:
            return ctype, template, m.groups()
    return None


def _parse_frames(body: list[str]) -> list[Frame]:
    frames: list[Frame] = []
    for line in body:
        if line.lstrip().startswith("? ") or "] ? " in line:
            continue  # an unreliable frame: a stale address found on the stack
        m = _FRAME.match(line)
        if m:
            frames.append(
                Frame(
                    function=m.group(1),
                    offset=int(m.group(2), 16),
                    size=int(m.group(3), 16),
                    module=m.group(4),
                    file=m.group(5),
                    line=int(m.group(6)) if m.group(6) else None,
                )
            )
            continue
        m = _INLINE_FRAME.match(line)
        if m:
            frames.append(
                Frame(function=m.group(1), file=m.group(2), line=int(m.group(3)), inline=True)
            )
    return frames


def _signature(title: str, frames: list[Frame]) -> str:
    key = "\n".join([title, *(f.function for f in frames[:5])])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _build_crash(
    lines: list[str], start: int, end: int, head: tuple[str, str, tuple[str, ...]]
) -> Crash:
    body = [_strip(x) for x in lines[start : end + 1]]
    ctype, template, groups = head
    frames = _parse_frames(body[1:])
    guilty = next((f for f in frames if not _GENERIC.match(f.function)), None)
    frame_name = guilty.function if guilty else None
    if "{1}" in template:  # the header names the function (KASAN)
        frame_name = groups[1]
        guilty = next((f for f in frames if f.function == frame_name), guilty)
    title = template.format(*groups, frame=frame_name or "corrupted")
    kernel = KernelInfo()
    task = TaskInfo()
    for text in body:
        m = _CPU_LINE.search(text)
        if m and task.comm is None:
            task = TaskInfo(comm=m.group(3), pid=int(m.group(2)), cpu=int(m.group(1)))
            kernel.release = m.group(6)
            kernel.tainted = list(m.group(5).replace(" ", "")) if m.group(5) else []
        h = _HARDWARE.search(text)
        if h and kernel.hardware is None:
            kernel.hardware = h.group(1).strip()
    corrupted = "{frame}" in template and guilty is None
    return Crash(
        title=title,
        type=ctype,
        report="\n".join(body),
        start_line=start + 1,
        end_line=end + 1,
        frame=frame_name,
        corrupted=corrupted,
        corrupted_reason="no call trace frame found" if corrupted else None,
        panicked=any("Kernel panic - not syncing" in x for x in body),
        guilty_file=guilty.file if guilty else None,
        signature=_signature(title, frames),
        kernel=kernel,
        task=task,
        call_trace=frames,
    )


def triage_lines(lines: Iterable[str], source: str) -> TriageResult:
    """Find the crash reports in a console log.

    :param lines: the log's lines, without newlines.
    :param source: the input's name, for the result.
    """
    all_lines = list(lines)
    heads: list[tuple[int, tuple[str, str, tuple[str, ...]]]] = []
    for i, line in enumerate(all_lines):
        text = _strip(line)
        head = _match_header(text)
        if head and not (heads and i - heads[-1][0] < 3 and head[0] == "PANIC"):
            heads.append((i, head))
    result = TriageResult(source=source, lines=len(all_lines))
    for n, (start, head) in enumerate(heads):
        limit = heads[n + 1][0] - 1 if n + 1 < len(heads) else len(all_lines) - 1
        end = min(limit, start + MAX_REPORT_LINES)
        for j in range(start + 1, end + 1):
            if _END.search(all_lines[j]):
                end = j
                break
        result.crashes.append(_build_crash(all_lines, start, end, head))
    return result
