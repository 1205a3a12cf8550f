"""Describe one report window as a :class:`~assistant.triage.model.Crash`.

:func:`build_crash` hands the window to :func:`assistant.triage.parse.parse_window`
(title, type, frame, corruption, the report's lines), then reads what the report
says of the kernel and the task, parses its call trace and signs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from assistant.triage import parse
from assistant.triage.console import has_real_stamp
from assistant.triage.model import Crash, CrashTime, Frame, KernelInfo, TaskInfo
from assistant.triage.rules import Oops
from assistant.triage.signature import crash_signature
from assistant.triage.taint import decode_taint, describe_taint
from probes.printk_time import stamp_us

_FRAME = re.compile(
    r"^\s*(?:\[<[0-9a-f]+>\]\s*)?(?:\d+:)?([A-Za-z_.$][\w.$]*)\+0x([0-9a-f]+)/0x([0-9a-f]+)"
    r"(?:\s+\[(\w+)(?: [0-9a-f]+)?\])?(?:\s+(\S+\.[chS]):(\d+))?",
    re.ASCII,
)
_INLINE_FRAME = re.compile(r"^\s*([A-Za-z_][\w.]*)\s+(\S+\.[chS]):(\d+)\s+\[inline\]", re.ASCII)
_CPU_LINE = re.compile(
    r"CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (.{1,16}?) (?:Kdump: loaded )?"  # RHEL's
    r"(Not tainted|Tainted: ((?:[A-Z]+(?![^\s)]) *)+))\s*(\S+)",  # the release: any one word
    re.ASCII,
)
_TASK_PID = re.compile(
    r"by task (\S+?)/(\d+)|INFO: task (\S+?):(\d+) blocked|stuck for \d+s! \[(.+):(\d+)\]",
    re.ASCII,
)
_HARDWARE = re.compile(r"Hardware name: (.+)")
#: The release on its own line (hung-task reports): "      Not tainted 6.1.0-21-amd64 #1",
#: "      Tainted: G             L      syzkaller #0" (syzbot's kernels say "syzkaller").
_TAINT_LINE = re.compile(
    r"^\s*(Not tainted|Tainted: ((?:[A-Z]+(?![^\s)]) *)+))\s*(\S+) #", re.ASCII
)
#: SLUB's header names the taint, not the release: "BUG kmalloc-8 (Tainted: G    B  ): ...".
_SLUB_TAINT = re.compile(
    r"^\s*BUG \S+ \((Not tainted|Tainted: ((?:[A-Z]+(?![^\s)]) *)+))\s*\)", re.ASCII
)
#: The register dump that kernels since 4.x print again after "---[ end trace": it does not
#: use up the grace during which a following "Kernel panic - not syncing" joins the report.


def parse_frames(report: Iterable[str]) -> list[Frame]:
    """Parse the call-trace frames of report lines (questionable frames already left out)."""
    frames: list[Frame] = []
    for line in report:
        m = _INLINE_FRAME.match(line)
        if m:
            frames.append(
                Frame(function=m.group(1), file=m.group(2), line=int(m.group(3)), inline=True)
            )
            continue
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
    return frames


def _kernel_and_task(report: list[str]) -> tuple[KernelInfo, TaskInfo]:
    kernel = KernelInfo()
    task = TaskInfo()
    for text in report:
        if task.comm is None and "CPU: " in text:
            m = _CPU_LINE.search(text)
            if m:
                task = TaskInfo(comm=m.group(3), pid=int(m.group(2)), cpu=int(m.group(1)))
                kernel.release = m.group(6)
                kernel.tainted = decode_taint(m.group(5) or "")
                kernel.taint_reasons = describe_taint(kernel.tainted)
        if kernel.hardware is None and "Hardware name: " in text:
            h = _HARDWARE.search(text)
            if h:
                kernel.hardware = h.group(1).strip()
    if kernel.release is None:
        for text in report[:12]:
            m = _TAINT_LINE.match(text)
            if m:
                kernel.release = m.group(3)
                kernel.tainted = decode_taint(m.group(2) or "")
                kernel.taint_reasons = describe_taint(kernel.tainted)
                break
            m = _SLUB_TAINT.match(text)
            if m and not kernel.tainted:  # a release line further down says it too
                kernel.tainted = decode_taint(m.group(2) or "")
                kernel.taint_reasons = describe_taint(kernel.tainted)
    if task.comm is None:
        for text in report[:8]:
            m = _TASK_PID.search(text)
            if m:
                groups = [g for g in m.groups() if g is not None]
                task = TaskInfo(comm=groups[0], pid=int(groups[1]))
                break
    return kernel, task


def build_crash(
    prefix: list[str],
    lines: list[str],
    start: int,
    oops: Oops,
    cut: int | None = None,
    numbers: Sequence[int] | None = None,
) -> Crash:
    """Describe one report window as a :class:`Crash`.

    :param prefix: lines before the header.
    :param lines: the header line and the lines after it.
    :param start: the header's 0-based line number in the log.
    :param cut: the index in ``lines`` where the next report starts, if any.
    :param numbers: for each of ``lines``, its 0-based line number in the log (the last
        one of a line put back together from several); by default they follow ``start``.
    """
    if numbers is None:
        numbers = range(start, start + len(lines))
    window = prefix + lines
    first = len(prefix)
    p = parse.parse_window(window, first, oops)
    limit = first + cut if cut is not None else len(window)
    keep = [i for i, n in enumerate(p.report_line_numbers) if n < limit]
    report_lines = [p.report_lines[i] for i in keep]
    body = report_lines[p.prefix_len :]
    kept = [n for n in (p.report_line_numbers[i] for i in keep) if n >= first]
    end = numbers[max(kept) - first] if kept else start
    frames = parse_frames(body[1:])
    kernel, task = _kernel_and_task(report_lines)
    crash = Crash(
        title=p.title,
        type=p.type,
        report="\n".join(report_lines),
        start_line=start + 1,
        end_line=end + 1,
        alt_titles=p.alt_titles,
        frame=p.frame,
        corrupted=p.corrupted,
        corrupted_reason=p.corrupted_reason,
        # syzkaller looks for the guilty file in the whole report, as read past the cut.
        guilty_file=parse.guilty_file(p.title, p.report_lines[p.prefix_len :]),
        kernel=kernel,
        task=task,
        call_trace=frames,
        time=_header_time(lines[0] if lines else ""),
    )
    crash.signature = crash_signature(crash)
    return crash


def _header_time(header: str) -> CrashTime:
    # The printk stamp of the header line, when it has one of its own.
    us = stamp_us(header) if has_real_stamp(header) else None
    return CrashTime(uptime=None if us is None else us / 1e6)
