"""The streaming triage engine: find every crash report and event in a console log.

The log arrives in blocks of whole lines. A block with no oops header, event or
suppression substring in it is only counted (one C-level substring scan per
needle), so clean logs go at close to the speed of reading them. Around a header
the engine opens a *window*: up to :data:`PREFIX_LINES` lines before it and up to
:data:`WINDOW_LINES` lines from it, which :func:`assistant.triage.parse.parse_window`
describes. A window ends at the next report header of the same printk context,
after an end marker (``---[ end trace``, a ``=====`` rule) and a short grace
period, or when full; so memory stays bounded whatever the size of the log.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from assistant.triage import parse, rules
from assistant.triage.events import EVENT_NEEDLES, OOM_CONTEXT_NEEDLES, EventTracker
from assistant.triage.model import Crash, Frame, KernelInfo, TaskInfo, TriageResult
from assistant.triage.rules import Oops
from assistant.triage.signature import crash_signature
from assistant.triage.taint import decode_taint, describe_taint

#: Lines kept before a header for context (syzkaller keeps 50 of the same task).
PREFIX_LINES = 50
#: Most lines of one report window.
WINDOW_LINES = 2000
#: Longest line kept inside a report window, in characters.
MAX_REPORT_LINE = 2048
#: Most report windows open at once (interleaved reports of different tasks).
MAX_OPEN_WINDOWS = 8
#: Lines after an end marker during which a panic line still joins the report.
GRACE_LINES = 12
#: Most crashes described per input; past it headers are only counted (a header storm).
MAX_CRASHES = 1000
#: Blocks at least this big are scanned on two cores (when parallel).
PARALLEL_BLOCK_CHARS = 1 << 20
#: Characters per block when lines are fed one by one.
BLOCK_CHARS = 1 << 20

_HEADER_NEEDLES = tuple(dict.fromkeys(o.header for o in rules.OOPSES))
#: Every substring that makes a line worth a closer look.
NEEDLES: tuple[str, ...] = tuple(
    dict.fromkeys(
        _HEADER_NEEDLES
        + rules.SUPPRESSION_NEEDLES
        + EVENT_NEEDLES
        + OOM_CONTEXT_NEEDLES
        + (rules.CONSOLE_HANGUP, rules.REPLAY_MARKER)
    )
)
#: Short substrings, one of which is in every needle: scanned for over whole blocks.
ANCHORS: tuple[str, ...] = (
    "BUG",  # BUG:, kernel BUG, Kernel BUG, BUG kmalloc-
    "WARNING:",
    "INFO:",
    "anic",  # Kernel panic, panic:, trusty: panic, rust_kernel: panicked
    "PANIC",
    "rror",  # divide error:, Internal error:, fatal error:, I/O error, -fs error, Hardware Error
    "fault",  # general protection, double, Unhandled, segfault
    "Unable to handle",
    "stack s",  # stack segment:, stack smashing detected
    "opcode",
    "UBSAN",
    "Booting",
    "unregister_netdevice",
    "VFS: ",
    "Alignment trap",
    "SYZF",
    "SIGBUS",
    "Kill",  # Killed process, Kill process, lowmemorykiller: Killing
    "timing out",
    "timeout",
    "failed command",
    "XFS (",
    "BTRFS",
    "NETDEV",
    "EDAC",
    "AER:",
    "temperature",
    "LOCKUP",
    "lockup",
    "oom-kill",
    "serialport",
    "replaying",
)
_NEEDLE_RE = re.compile("|".join(re.escape(n) for n in NEEDLES))
#: Distinct storm lines whose header verdict is remembered, per block.
STORM_VERDICTS = 4096
_PRINTK_TIME = re.compile(r"\[\s*\d+\.\d+\]\s*", re.ASCII)
# Past MAX_CRASHES, the lines that can still change the result beyond a count.
_STORM_SPECIAL = (
    rules.REPLAY_MARKER,
    rules.CONSOLE_HANGUP,
    rules.PANICKED,
    *rules.SUPPRESSION_NEEDLES,
    *EVENT_NEEDLES,
    *OOM_CONTEXT_NEEDLES,
)
_STORM_SPECIAL_RE = re.compile("|".join(re.escape(n) for n in _STORM_SPECIAL))
# One search instead of a substring test per suppression needle (this runs per header).
_SUPPRESSION_NEEDLE_RE = re.compile("|".join(re.escape(n) for n in rules.SUPPRESSION_NEEDLES))
_END_MARKERS = ("---[ end trace", "---[ end Kernel panic")
#: A new boot: no report goes on past it.
_BOOT_MARKERS = ("] Linux version ", "Booting Linux on physical CPU")
_RULE = "=" * 40

_FRAME = re.compile(
    r"^\s*(?:\[<[0-9a-f]+>\]\s*)?(?:\d+:)?([A-Za-z_.$][\w.$]*)\+0x([0-9a-f]+)/0x([0-9a-f]+)"
    r"(?:\s+\[(\w+)(?: [0-9a-f]+)?\])?(?:\s+(\S+\.[chS]):(\d+))?",
    re.ASCII,
)
_INLINE_FRAME = re.compile(r"^\s*([A-Za-z_][\w.]*)\s+(\S+\.[chS]):(\d+)\s+\[inline\]", re.ASCII)
_CPU_LINE = re.compile(
    r"CPU: (\d+) (?:UID: \d+ )?PID: (\d+) Comm: (.{1,16}?) "
    r"(Not tainted|Tainted: ([A-Z ]+?))\s+(\d\S*)",  # a release starts with a digit
    re.ASCII,
)
_TASK_PID = re.compile(
    r"by task (\S+?)/(\d+)|INFO: task (\S+?):(\d+) blocked|stuck for \d+s! \[(.+):(\d+)\]",
    re.ASCII,
)
_HARDWARE = re.compile(r"Hardware name: (.+)")
#: The release on its own line (hung-task reports): "      Not tainted 6.1.0-21-amd64 #1".
_TAINT_LINE = re.compile(r"^\s*(Not tainted|Tainted: ([A-Z ]+?))\s+(\d\S*) #", re.ASCII)
#: The register dump that kernels since 4.x print again after "---[ end trace": it does not
#: use up the grace during which a following "Kernel panic - not syncing" joins the report.
_REGISTER_DUMP = re.compile(
    r"(?:^|\]\s*)(?:RIP|Code|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d{1,2}|FS|GS|CS|CR\d|DR\d|PKRU|"
    r"pc|lr|sp|x\d{1,2}|EIP|EAX|ESI|DS)\s*:",
    re.ASCII,
)


@lru_cache(maxsize=8)
def _automaton(anchors: tuple[str, ...]) -> Any:
    # One Aho-Corasick pass (Rust, SIMD prefilter) finds every anchor at once: about
    # 7x faster here than one str.find scan per anchor. None when the module is missing.
    try:
        import ahocorasick_rs
    except ImportError:
        return None
    return ahocorasick_rs.BytesAhoCorasick([a.encode() for a in anchors])


#: Bytes handed to the automaton at once: its match list (a Python tuple per match) stays
#: small even when every few bytes are an anchor (a header storm).
AUTOMATON_SLICE = 64 * 1024


def _automaton_hits(data: bytes, automaton: Any) -> list[int]:
    # Matches come in order; the first one of a line settles the line, so the rest of
    # that line is skipped: linear time whatever the number of anchors per line.
    starts: list[int] = []
    line_end = 0  # the end of the last line found
    pos = 0
    while pos < len(data):
        if pos < line_end:
            pos = line_end
            continue
        stop = data.find(b"\n", min(pos + AUTOMATON_SLICE, len(data)))
        stop = len(data) if stop == -1 else stop + 1  # slices end on a line boundary
        for _, start, _ in automaton.find_matches_as_indexes(data[pos:stop], overlapping=False):
            at = pos + start
            if at < line_end:
                continue
            starts.append(data.rfind(b"\n", 0, at) + 1)
            end = data.find(b"\n", at)
            line_end = len(data) if end == -1 else end + 1
            if line_end >= stop:
                break
        pos = max(stop, line_end)
    return starts


def anchor_hits(block: str, anchors: Iterable[str]) -> list[int]:
    """Return the start offsets of the lines of ``block`` holding one of ``anchors``, sorted.

    The scan without the automaton: for blocks that are not ASCII, or without ahocorasick-rs.
    """
    hits: set[int] = set()
    for needle in anchors:
        pos = block.find(needle)
        while pos != -1:
            hits.add(block.rfind("\n", 0, pos) + 1)
            end = block.find("\n", pos)
            if end == -1:
                break
            pos = block.find(needle, end)
    return sorted(hits)


def normalise_line(line: str) -> str:
    """Strip what is not printk's: a trailing ``\\r``, syslog/journal prefixes, NULs."""
    if line.endswith("\r"):
        line = line[:-1]
    if "\r" in line:
        line = line.rsplit("\r", 1)[-1]
    m = rules.FOREIGN_PREFIX.match(line)
    if m:
        line = line[m.end() :]
    return line


@dataclass
class _Window:
    start: int  # global 0-based line number of the header
    oops: Oops
    context: str
    prefix: list[str]
    lines: list[str] = field(default_factory=list)
    end_mark: int | None = None  # index in lines of an end marker
    grace: int = 0
    cut: int | None = None  # index in lines of the next report's header

    def same_context(self, context: str) -> bool:
        loose = ("", parse.CONSOLE)
        return context == self.context or context in loose or self.context in loose


class TriageEngine:
    """Feed it blocks of lines, then :meth:`finish` for the result."""

    def __init__(self, source: str, parallel: bool = False) -> None:
        self.source = source
        #: scan big blocks for anchors on two cores (a helper process)
        self._parallel = parallel and (os.cpu_count() or 1) > 1
        self._pool: ProcessPoolExecutor | None = None
        self.lines = 0  # lines seen so far
        self._tail: list[str] = []  # last PREFIX_LINES lines before the current block
        self._windows: list[_Window] = []
        self._crashes: list[Crash] = []
        self._events = EventTracker()
        self._suppressed = False
        self._hangup = False
        self._last_panic = -1
        self._undescribed = 0

    # -- input --------------------------------------------------------------

    def feed_block(self, block: str) -> None:
        """Process a block of whole lines joined by ``\\n`` (no trailing newline needed)."""
        if not block:
            return
        if not self._windows and not any(n in block for n in ANCHORS):
            count = block.count("\n") + 1
            self.lines += count
            tail = block.rsplit("\n", PREFIX_LINES)
            self._tail = (
                (self._tail + tail)[-PREFIX_LINES:] if len(tail) <= PREFIX_LINES else tail[1:]
            )
            return
        self._process_lines(block.split("\n"), self._candidates(block))

    def feed_lines(self, lines: Iterable[str]) -> None:
        """Process lines (without newlines), in blocks."""
        batch: list[str] = []
        size = 0
        for line in lines:
            batch.append(line)
            size += len(line) + 1
            if size >= BLOCK_CHARS:
                self.feed_block("\n".join(batch))
                batch, size = [], 0
        if batch:
            self.feed_block("\n".join(batch))

    def _candidates(self, block: str) -> tuple[list[int], bool]:
        """Return the indices of the lines of ``block`` that may matter, in order.

        :return: the line indices, and whether they are exact (each line holds a whole
            needle) or only hold an anchor (a short substring of some needle).
        """
        automaton = _automaton(NEEDLES) if block.isascii() else None
        if automaton is not None:
            # The automaton takes every whole needle at once: no anchor step, no
            # second process, and no regex per line afterwards.
            self._parallel = False
            starts = _automaton_hits(block.encode("ascii"), automaton)
            return self._line_indices(block, starts), True
        if self._pool is None and self._parallel and len(block) >= PARALLEL_BLOCK_CHARS:
            ctx = multiprocessing.get_context("fork")
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=ctx)
        if self._pool is not None and len(block) >= PARALLEL_BLOCK_CHARS:
            # Half the anchors are scanned in a helper process, on the other core.
            future = self._pool.submit(anchor_hits, block, ANCHORS[1::2])
            hits = anchor_hits(block, ANCHORS[0::2])
            starts = sorted(set(hits).union(future.result()))
        else:
            starts = anchor_hits(block, ANCHORS)
        return self._line_indices(block, starts), False

    @staticmethod
    def _line_indices(block: str, starts: list[int]) -> list[int]:
        # line start offsets (sorted) -> 0-based line indices
        out = []
        line = 0
        last = 0
        for start in starts:
            line += block.count("\n", last, start)
            last = start
            out.append(line)
        return out

    def _process_lines(self, lines: list[str], found: tuple[list[int], bool]) -> None:
        cands, exact = found
        base = self.lines
        ci = 0
        i = 0
        n = len(lines)
        while i < n:
            if not self._windows:
                if ci >= len(cands):
                    break
                if len(self._crashes) >= MAX_CRASHES:
                    self._storm(lines, cands[ci:], base)
                    break
                i = cands[ci]
            is_cand = ci < len(cands) and cands[ci] == i
            raw = lines[i]
            if is_cand:
                ci += 1
                # An anchor is a short substring: does the line hold a whole needle? Only
                # the head that _candidate keeps counts (a megabyte line is not printk's).
                if not exact or len(raw) > MAX_REPORT_LINE + 64:
                    is_cand = _NEEDLE_RE.search(raw, 0, MAX_REPORT_LINE + 64) is not None
            if is_cand:
                self._candidate(raw, base + i, lines, i)
            elif self._windows:
                if any(m in raw for m in _BOOT_MARKERS):
                    for w in list(self._windows):
                        self._close(w)
                else:
                    self._feed_windows(normalise_line(raw), None)
            i += 1
        self.lines = base + n
        self._tail = (self._tail + lines[-PREFIX_LINES:])[-PREFIX_LINES:]

    def _storm(self, lines: list[str], rest: list[int], base: int) -> None:
        # A header storm past the cap, with no report open: each line is counted if it
        # is a header, and only lines that can still change events or flags take the
        # full path (_candidate's cap branch). No window opens from here. Storms repeat
        # one message with new timestamps: the verdict is remembered by the text after
        # the timestamp (no header or suppression looks at the timestamp).
        verdicts: dict[str, bool] = {}
        special = self._storm_special(lines, rest)
        for j in rest:
            raw = lines[j]
            if j in special:
                self._candidate(raw, base + j, lines, j)
                continue
            line = normalise_line(raw[: MAX_REPORT_LINE + 64])[:MAX_REPORT_LINE]
            stamp = _PRINTK_TIME.match(line)
            key = line[stamp.end() :] if stamp else line
            header = verdicts.get(key)
            if header is None:
                header = parse.first_oops(line) is not None
                if len(verdicts) < STORM_VERDICTS:
                    verdicts[key] = header
            if header:
                self._undescribed += 1

    def _storm_special(self, lines: list[str], rest: list[int]) -> set[int]:
        # Which of the storm's lines hold a special needle: one automaton pass over them
        # all (a line flagged here only takes the full path, so flagging more is safe).
        text = "\n".join(lines[j] for j in rest)
        automaton = _automaton(_STORM_SPECIAL) if text.isascii() else None
        if automaton is None:
            limit = MAX_REPORT_LINE + 64
            return {j for j in rest if _STORM_SPECIAL_RE.search(lines[j], 0, limit)}
        hits = _automaton_hits(text.encode("ascii"), automaton)
        return {rest[k] for k in self._line_indices(text, hits)}

    def _prefix(self, lines: list[str], i: int) -> list[str]:
        before = lines[max(0, i - PREFIX_LINES) : i]
        if len(before) < PREFIX_LINES:
            before = self._tail[len(self._tail) - (PREFIX_LINES - len(before)) :] + before
        return [normalise_line(x)[:MAX_REPORT_LINE] for x in before]

    # -- one interesting line ----------------------------------------------

    def _candidate(self, raw: str, lineno: int, lines: list[str], i: int) -> None:
        # printk lines are at most 1 KiB: the tail of a longer one is not a kernel message.
        line = normalise_line(raw[: MAX_REPORT_LINE + 64])[:MAX_REPORT_LINE]
        if rules.REPLAY_MARKER in line:
            self._replayed(lineno)
            self._feed_windows(line, None)
            return
        if rules.CONSOLE_HANGUP in line:
            self._hangup = True
        if rules.PANICKED in line:
            self._last_panic = lineno
        if not self._suppressed and _SUPPRESSION_NEEDLE_RE.search(line):
            self._suppressed = any(s.search(line) for s in rules.SUPPRESSIONS)
        if not self._windows and len(self._crashes) >= MAX_CRASHES:
            # A header storm past the cap: count, keep the events, describe no more.
            self._events.feed(line, lineno + 1)
            if parse.first_oops(line) is not None:
                self._undescribed += 1
            return
        context = parse.extract_context(line)
        text, _ = parse.strip_line_prefix(line, context)
        self._events.feed(text, lineno + 1)
        oops = parse.first_oops(line)
        if oops is None:
            self._feed_windows(line, context)
            return
        ignorable = any(r.search(line) for r in rules.REPORT_START_IGNORES)
        same = [w for w in self._windows if w.same_context(context)]
        if ignorable and same:
            for w in same:  # a panic after the report's end marker still belongs to it
                w.end_mark = None
            self._feed_windows(line, context)
            return
        if len(self._crashes) + len(self._windows) >= MAX_CRASHES:
            self._undescribed += 1
            self._feed_windows(line, context)
            return
        # The report before goes on being read (its trace may come after the next
        # header, as syzkaller reads it), but its text and span stop here.
        for w in same:
            if w.cut is None:
                w.cut = len(w.lines)
        self._feed_windows(line, context)
        still_open = [w for w in same if w in self._windows]
        for w in still_open[: max(0, len(still_open) - 1)]:
            self._close(w)
        if len(self._windows) >= MAX_OPEN_WINDOWS:
            self._close(self._windows[0])
        self._windows.append(_Window(lineno, oops, context, self._prefix(lines, i), [line]))

    def _replayed(self, lineno: int) -> None:
        # The line before the marker was cut short and is printed again next.
        for w in list(self._windows):
            if w.start == lineno - 1 and len(w.lines) == 1:
                self._windows.remove(w)
            elif w.lines and w.start + len(w.lines) == lineno:
                w.lines.pop()

    def _feed_windows(self, line: str, context: str | None) -> None:
        if not self._windows:
            return
        line = line[:MAX_REPORT_LINE]
        marker = any(m in line for m in _END_MARKERS) or (_RULE in line and "=" * 60 in line)
        for w in list(self._windows):
            w.lines.append(line)
            if w.end_mark is not None:
                if not _REGISTER_DUMP.search(line):
                    w.grace -= 1
                if w.grace <= 0:
                    self._close(w)
                    continue
            elif marker and len(w.lines) > 4:
                ctx = parse.extract_context(line) if context is None else context
                if w.same_context(ctx):
                    w.end_mark = len(w.lines) - 1
                    w.grace = GRACE_LINES
            if len(w.lines) >= WINDOW_LINES:
                self._close(w)

    def _close(self, w: _Window) -> None:
        self._windows.remove(w)
        lines = w.lines
        if w.end_mark is not None:
            lines = lines[: w.end_mark + 1]
        self._crashes.append(build_crash(w.prefix, lines, w.start, w.oops, w.cut))

    # -- output -------------------------------------------------------------

    def finish(self) -> TriageResult:
        """Close the open reports and return everything found."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        for w in list(self._windows):
            self._close(w)
        crashes = sorted(self._crashes, key=lambda c: c.start_line)
        for c in crashes:
            c.suppressed = self._suppressed
            c.panicked = self._last_panic >= c.start_line - 1
            if self._hangup and not c.corrupted:
                c.corrupted = True
                c.corrupted_reason = "console hung up (serialport: VM disconnected.)"
        result = TriageResult(
            source=self.source, crashes=crashes, events=self._events.events, lines=self.lines
        )
        if self._undescribed:
            result.warnings.append(
                f"{self._undescribed} more crash header(s) after the first {MAX_CRASHES}"
                " were counted but not described"
            )
        return result


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
    if task.comm is None:
        for text in report[:8]:
            m = _TASK_PID.search(text)
            if m:
                groups = [g for g in m.groups() if g is not None]
                task = TaskInfo(comm=groups[0], pid=int(groups[1]))
                break
    return kernel, task


def build_crash(
    prefix: list[str], lines: list[str], start: int, oops: Oops, cut: int | None = None
) -> Crash:
    """Describe one report window as a :class:`Crash`.

    :param prefix: lines before the header.
    :param lines: the header line and the lines after it.
    :param start: the header's 0-based line number in the log.
    :param cut: the index in ``lines`` where the next report starts, if any.
    """
    window = prefix + lines
    first = len(prefix)
    p = parse.parse_window(window, first, oops)
    limit = first + cut if cut is not None else len(window)
    keep = [i for i, n in enumerate(p.report_line_numbers) if n < limit]
    report_lines = [p.report_lines[i] for i in keep]
    body = report_lines[p.prefix_len :]
    numbers = [n for n in (p.report_line_numbers[i] for i in keep) if n >= first]
    end = start + (max(numbers) - first if numbers else 0)
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
    )
    crash.signature = crash_signature(crash)
    return crash


def triage_blocks(blocks: Iterable[str], source: str, parallel: bool = True) -> TriageResult:
    """Triage a log given as blocks of whole lines.

    :param parallel: scan big blocks on two cores when the machine has them.
    """
    engine = TriageEngine(source, parallel=parallel)
    try:
        for block in blocks:
            engine.feed_block(block)
    except BaseException:
        engine.finish()
        raise
    return engine.finish()


def triage_lines(lines: Iterable[str], source: str) -> TriageResult:
    """Find the crash reports and events in a console log.

    :param lines: the log's lines, without newlines (a vmcore's printk buffer works too).
    :param source: the input's name, for the result.
    """
    engine = TriageEngine(source)
    engine.feed_lines(lines)
    return engine.finish()
