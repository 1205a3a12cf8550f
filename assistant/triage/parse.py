"""Describe one kernel crash report: title, alternative titles, type, frame, corruption.

This is the method of syzkaller's ``pkg/report`` (Copyright 2016-2025 syzkaller
project authors, Apache License 2.0), re-implemented over kassist's tables in
:mod:`assistant.triage.rules`: cut the report out of the console output by its
printk caller context, match the oops's formats from the most specific to the
most generic, extract the guilty frame by skipping generic frames, normalise
the title, and check the report for the marks of corruption.

The input is a *window*: the lines before the header (for context), the header
line, and the lines after it, as many as the engine gives.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from assistant.triage import rules
from assistant.triage.rules import PARSE_STACK_TRACE, Oops, OopsFormat, StackFmt

CONSOLE = "console"
CORRUPTED_NO_FRAMES = "extracted no frames"

_FMT_ARG = re.compile(r"\{(\d+)\}")


@dataclass
class Description:
    """What the formats of an oops made of a report.

    :param title: the title before normalisation.
    :param corrupted: why the report is corrupted, or ``""``.
    :param alt_titles: alternative titles before normalisation.
    :param format: the format that named the report, or ``None``.
    """

    title: str = ""
    corrupted: str = ""
    alt_titles: list[str] = field(default_factory=list)
    format: OopsFormat | None = None


@dataclass
class Parsed:
    """One report as syzkaller would describe it.

    :param report_lines: the report's text lines, prefix stripped (the lines of
        other contexts and the questionable frames left out).
    :param report_line_numbers: for each report line, its index in the window.
    :param prefix_len: how many of ``report_lines`` come before the header.
    """

    title: str
    alt_titles: list[str]
    type: str
    frame: str | None
    corrupted: bool
    corrupted_reason: str | None
    report_lines: list[str]
    report_line_numbers: list[int]
    prefix_len: int
    context: str


def match_oops(line: str, oops: Oops) -> bool:
    """Tell whether a raw console line is a header of this oops family."""
    if oops.header not in line:
        return False
    return not any(s.search(line) for s in oops.suppressions)


_ANY_HEADER = re.compile("|".join(re.escape(o.header) for o in rules.OOPSES))


def _one_pattern(patterns: tuple[re.Pattern[str], ...]) -> re.Pattern[str] | None:
    # The suppressions of one family as one alternation (a line is searched once, not
    # once per pattern); None when they cannot be joined (different flags, named groups).
    if not patterns or len({p.flags for p in patterns}) != 1 or any(p.groupindex for p in patterns):
        return None
    try:
        return re.compile("|".join(f"(?:{p.pattern})" for p in patterns), patterns[0].flags)
    except re.error:
        return None


#: (header, oops, its suppressions joined or None, its suppressions), in table order.
_HEADER_TABLE = [(o.header, o, _one_pattern(o.suppressions), o.suppressions) for o in rules.OOPSES]


def user_fault(line: str) -> bool:
    """Tell whether a console line is the kernel's note of a user-space fault
    (:data:`rules.USER_FAULTS`): whatever the faulting task is called, it is no crash.

    >>> user_fault("[   5.000000] WARNING: CPU: 0[261]: segfault at 0 ip 0 sp 0 error 4")
    True
    """
    if rules.USER_FAULT_HINT.search(line) is None:
        return False
    text, _ = strip_line_prefix(line, extract_context(line))
    return any(regex.match(text) for regex, _ in rules.USER_FAULTS)


def without_task_names(line: str) -> str:
    """Return ``line`` with the names tasks chose (:data:`rules.TASK_NAMED`) blanked out.

    >>> without_task_names("[ 5.0] Kernel panic - [26] bad frame in rt_sigreturn frame:0")
    '[ 5.0] _______________[26] bad frame in rt_sigreturn frame:0'
    """
    if rules.TASK_NAMED_HINT.search(line) is None:
        return line
    for regex in rules.TASK_NAMED:
        m = regex.search(line)
        if m is not None:
            start, end = m.span("name")
            line = line[:start] + "_" * (end - start) + line[end:]
    return line


@lru_cache(maxsize=1024)
def first_oops(line: str) -> Oops | None:
    """Return the first oops family (in table order) whose header this line is (never a
    user-space fault's line, nor a header inside a name a task chose, whatever it holds).

    Remembers the last lines it was asked about: a header is looked at again as its
    report is cut out, and hostile logs repeat one line.
    """
    if _ANY_HEADER.search(line) is None or user_fault(line):
        return None
    line = without_task_names(line)
    if _ANY_HEADER.search(line) is None:
        return None
    for header, oops, joined, suppressions in _HEADER_TABLE:
        # match_oops, inlined: this runs for every line that looks like a header
        if header not in line:
            continue
        if joined is not None:
            if joined.search(line) is None:
                return oops
        elif not any(s.search(line) for s in suppressions):
            return oops
    return None


def extract_context(line: str) -> str:
    """Return a line's printk context: ``""`` (none), ``"console"`` or the caller id."""
    m = rules.CONSOLE_OUTPUT.match(line)
    if m is None:
        return ""
    return m.group(1) or CONSOLE


#: A questionable frame in a log without printk stamps: `` ? func+0x..`` at the start.
_BARE_QUESTIONABLE = re.compile(r"^ *(?:\[<?[0-9a-fx]+>?\] *)?\? [\w.$]+\+0x", re.ASCII)


def strip_line_prefix(line: str, context: str) -> tuple[str, bool]:
    """Remove the printk prefix; tell whether the line is a questionable (``?``) frame.

    >>> strip_line_prefix("[   1.000000]  ? foo+0x1/0x2", "console")
    (' foo+0x1/0x2', True)
    >>> strip_line_prefix(" ? foo+0x1/0x2", "")
    (' foo+0x1/0x2', True)
    """
    if context == "":
        # syzkaller keeps these; a log whose stamps a tool took away must not differ
        m = _BARE_QUESTIONABLE.match(line)
        if m is not None:
            return " " + line[line.find("? ") + 2 :], True
        return line, False
    line = line[line.find("] ") + 2 :]
    if rules.EOI not in line:
        if rules.QUESTIONABLE_FRAME.search(line):
            pos = line.find(" ? ")
            return line[pos + 2 :], True
        if line.endswith(" (unreliable)"):
            return line[:-13], True
    return line, False


@lru_cache(maxsize=1024)
def _line_parts(line: str) -> tuple[str, str, bool]:
    # A line's context, its text without the printk prefix and whether it is a
    # questionable frame; remembered, as the next header's prefix holds the same lines.
    context = extract_context(line)
    return (context, *strip_line_prefix(line, context))


def _starts_second_report(line: str) -> bool:
    if any(m in line for m in rules.INFO_MESSAGES_WITH_STACK):
        return True
    if first_oops(line) is None:
        return False
    return not any(r.search(line) for r in rules.REPORT_START_IGNORES)


def _report_min_lines(oops_line: str) -> int:
    # KMSAN reports have no "Call Trace" and fewer lines than KASAN's.
    return 16 if "BUG: KMSAN:" in oops_line else 22


@dataclass
class _Report:
    lines: list[str] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    end: int = 0  # lines[:end] is the report proper (before a second report)
    prefix: list[str] = field(default_factory=list)


def find_report(window: Sequence[str], start: int, context: str) -> _Report:
    """Cut the report out of the window the way syzkaller's ``findReport`` does.

    :param window: raw console lines.
    :param start: the index of the header line in ``window``.
    :param context: the header line's printk context.
    """
    max_prefix = 50 if rules.TASK_CONTEXT.search(context) else 5
    rep = _Report()
    second_report = False
    text_lines = 0
    skip_text = cpu_traceback = False
    oops_line = window[start]
    for i, line in enumerate(window):
        context1, stripped, questionable = _line_parts(line)
        if i < start:
            if context1 == context and stripped and not questionable:
                rep.prefix.append(stripped)
                if len(rep.prefix) > max_prefix:
                    del rep.prefix[0]
            continue
        is_oops_line = i == start
        if not is_oops_line and not second_report:
            second_report = _starts_second_report(line)
        if not is_oops_line and (
            questionable
            or (
                context1 != context
                and (not cpu_traceback or not rules.CPU_CONTEXT.search(context1))
            )
        ):
            continue
        text_lines += 1
        skip_line = skip_text
        if "Disabling lock debugging due to kernel taint" in line:
            skip_line = True
        elif "Sending NMI from CPU" in line:
            # A traceback of all CPUs: keep the other CPUs' lines too.
            cpu_traceback = True
        elif (
            "Kernel panic - not syncing" in line
            or "WARNING: possible circular locking dependency detected" in line
        ) and text_lines > _report_min_lines(oops_line):
            # The panic_on_warn stack, or a lockdep report the oops itself provoked.
            skip_text = skip_line = True
        if not is_oops_line and skip_line:
            continue
        rep.lines.append(stripped)
        rep.numbers.append(i)
        if not second_report or (context not in ("", CONSOLE)):
            rep.end = len(rep.lines)
    return rep


def _format(template: str, args: Sequence[str]) -> str:
    def arg(m: re.Match[str]) -> str:
        n = int(m.group(1))
        return args[n - 1] if 0 < n <= len(args) else "%!v(BADINDEX)"

    return _FMT_ARG.sub(arg, template)


@lru_cache(maxsize=256)
def _skip_re(extra: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(rules.GENERIC_SKIP + extra))


@dataclass
class _Frame:
    canonical: str
    raw: str


def _strip_frame(frame: str) -> str:
    best = frame
    for prefix in rules.STRIP_FRAME_PREFIXES:
        if frame.startswith(prefix) and len(frame) - len(prefix) < len(best):
            best = frame[len(prefix) :]
    return best


def stall_frame(frames: Sequence[str]) -> tuple[str, int]:
    """Pick the frame before the first dispatch anchor of a stall or lockup."""
    prev, prev_idx = frames[0], 0
    for i, frame in enumerate(frames):
        if any(a.search(frame) for a in rules.STALL_ANCHOR_FRAMES):
            if "smp_call_function" in frame:
                prev, prev_idx = "smp_call_function", i
            return prev, prev_idx
        prev, prev_idx = frame, i
    return "", -1


def hang_frame(frames: Sequence[str]) -> tuple[str, int]:
    """Pick the frame of a hung task: the rtnl/RCU anchors first, then the first non-waiting one."""
    for i, frame in enumerate(frames):
        for anchor, replacement in rules.HANG_ANCHORS.items():
            if anchor in frame:
                return (replacement or frame), i
    for i, frame in enumerate(frames):
        if not any(s in frame for s in rules.HANG_SKIP):
            return frame, i
    return "", -1


_EXTRACTORS = {"stall": stall_frame, "hang": hang_frame}


def _append_frames(frames: list[str], match: re.Match[str] | None, skip: re.Pattern[str]) -> None:
    if match is None:
        return
    for group in match.groups():
        if group is not None and not skip.search(group):
            frames.append(group)


def _key_frame(raw: list[str], stack: StackFmt) -> _Frame:
    # The guilty frame of one stack's frames (an empty one when none can be named).
    if not raw:
        return _Frame("", "")
    stripped = [_strip_frame(f) for f in raw]
    if stack.extractor is None:
        return _Frame(stripped[0], raw[0])
    frame, idx = _EXTRACTORS[stack.extractor](stripped)
    return _Frame(frame, raw[idx]) if frame else _Frame("", "")


def _first_frame(line: str) -> re.Match[str] | None:
    for frame_re in rules.FRAME_RES:
        m = frame_re.search(line)
        if m is not None:
            return m
    return None


@dataclass
class _Scan:
    # A report's lines read once from top to bottom, part after part (syzkaller's
    # extractStackFrameImpl); ``ok`` turns false at a corrupted line.
    lines: list[str]
    pos: int = 0
    ok: bool = True

    def next_line(self) -> str | None:
        # The next line, or None at the end or at a corrupted line (which marks the scan).
        if self.pos >= len(self.lines):
            return None
        line = self.lines[self.pos]
        self.pos += 1
        if any(r.search(line) for r in rules.CORRUPTED_LINES):
            self.ok = False
            return None
        return line


def _scan_stack(
    scan: _Scan, next_part: re.Pattern[str] | None, skip: re.Pattern[str], frames: list[str]
) -> bool:
    # Collect a stack trace's frames until the next stack starts or the next part matches
    # (its groups are frames too); return whether the next part matched.
    while (line := scan.next_line()) is not None:
        if any(r.search(line) for r in rules.STACK_START):
            return False
        if next_part is not None and (m := next_part.search(line)) is not None:
            _append_frames(frames, m, skip)
            return True
        _append_frames(frames, _first_frame(line), skip)
    return False


def _scan_part(
    scan: _Scan, part: re.Pattern[str], skip: re.Pattern[str], frames: list[str]
) -> None:
    # Read on to the line the part matches; its groups are frames.
    while (line := scan.next_line()) is not None:
        m = part.search(line)
        if m is not None:
            _append_frames(frames, m, skip)
            return


def _extract_frames_impl(
    lines: list[str], skip: re.Pattern[str], parts: Sequence[re.Pattern[str]], stack: StackFmt
) -> tuple[list[_Frame], bool]:
    scan = _Scan(lines)
    raw_frames: list[str] = []
    results: list[_Frame] = []
    stack_traces = 0
    part_idx = 0
    while True:
        if part_idx == len(parts) or (parts[part_idx] is PARSE_STACK_TRACE and stack_traces > 0):
            frame = _key_frame(raw_frames, stack)
            if not frame.canonical:
                frame, scan.ok = _Frame("corrupted", "corrupted"), False
            results.append(frame)
            raw_frames = []
        if part_idx == len(parts):
            break
        part = parts[part_idx]
        if part is PARSE_STACK_TRACE:
            stack_traces += 1
            next_part = parts[part_idx + 1] if part_idx != len(parts) - 1 else None
            if _scan_stack(scan, next_part, skip, raw_frames):
                part_idx += 1
        else:
            _scan_part(scan, part, skip, raw_frames)
        part_idx += 1
    return results, scan.ok


def extract_stack_frames(stack: StackFmt, text: str) -> tuple[list[_Frame], bool]:
    """Find the guilty frame(s) of a report text starting at its header."""
    skip = _skip_re(stack.skip)
    lines = text.split("\n")
    frames, ok = _extract_frames_impl(lines, skip, stack.parts, stack)
    if ok or not stack.parts2:
        return frames, ok
    return _extract_frames_impl(lines, skip, stack.parts2, stack)


def _partially_stripped(prefix: list[str], frames: list[_Frame]) -> list[list[str]]:
    out = []
    for i in range(len(rules.STRIP_FRAME_PREFIXES) + 1):
        add = True
        strip = ""
        if i > 0:
            strip, add = rules.STRIP_FRAME_PREFIXES[i - 1], False
        trimmed = []
        for f in frames:
            t = f.raw[len(strip) :] if strip and f.raw.startswith(strip) else f.raw
            if t != f.raw:
                add = True
            trimmed.append(t)
        if add:
            out.append(prefix + trimmed)
    return out


def extract_description(text: str, oops: Oops) -> Description:
    """Match an oops's formats against a report text; the earliest match wins."""
    desc = Description()
    start = len(text)
    matched_title = False
    for f in oops.formats:
        m = f.title.search(text)
        if m is None or m.start() > start or (m.start() == start and desc.title):
            continue
        if m.start() < start:
            desc = Description()
            start = m.start()
        matched_title = True
        if f.report is not None:
            m = f.report.search(text)
            if m is None:
                continue
        desc = _described(f, text, m)
    if not desc.title:
        _title_from_header(desc, text, oops, matched_title)
    if not desc.corrupted and desc.format is not None and desc.format.corrupted:
        desc.corrupted = "report format is marked as corrupted"
    return desc


def _described(f: OopsFormat, text: str, m: re.Match[str]) -> Description:
    # What one format makes of the report its regex matched: title, alternatives, frames.
    prefix = [g or "" for g in m.groups()]
    frames: list[_Frame] = []
    corrupted = ""
    if f.stack is not None:
        frames, ok = extract_stack_frames(f.stack, text[m.start() :])
        if not ok:
            corrupted = CORRUPTED_NO_FRAMES
    args = prefix + [fr.canonical for fr in frames]
    title = _format(f.fmt, args)
    alts = [_format(a, args) for a in f.alt]
    for seq in _partially_stripped(prefix, frames):
        alt_title = _format(f.fmt, seq)
        if alt_title != title:
            alts.append(alt_title)
        alts.extend(_format(a, seq) for a in f.alt)
    return Description(title, corrupted, list(dict.fromkeys(alts)), f)


def _title_from_header(desc: Description, text: str, oops: Oops, matched_title: bool) -> None:
    # No format named the report: its header line is the title (when it is in the text).
    # A format set on desc implies matched_title, so desc.corrupted is set here whenever
    # the format's own corrupted mark could apply.
    if matched_title:
        desc.corrupted = "matched title but not report regexp"
    pos = text.find(oops.header)
    if pos == -1:
        return
    end = text.find("\n", pos)
    desc.title = text[pos : end if end != -1 else len(text)]


def is_corrupted(title: str, report: str, fmt: OopsFormat | None) -> tuple[bool, str]:
    """Check a described report for the marks of truncation or interleaving."""
    if any(r.search(title) for r in rules.CORRUPTED_TITLES):
        return True, "title matches corrupted regexp"
    if fmt is None or fmt.no_stack_trace:
        return False, ""
    has_stack = False
    for key in rules.STACK_START:
        m = key.search(report)
        if m is None:
            continue
        frames = report[m.start() :].split("\n")
        if len(frames) < 4:
            return True, "call trace is missed"
        corrupted = True
        for ln in frames[1:16]:
            if any(k.search(ln) for k in rules.STACK_START):
                break
            if "(stack is not available)" in ln or any(r.search(ln) for r in rules.FRAME_RES):
                has_stack = True
                corrupted = False
                break
        if key is not rules.RISCV_STACK_START and corrupted:
            return True, "no frames in a stack trace"
    if not has_stack:
        return True, "no stack trace in report"
    return False, ""


def normalise_title(title: str) -> str:
    """Replace what varies between runs (addresses, numbers, pids) and tidy the title."""
    for regex, repl in rules.TITLE_REPLACEMENTS:
        for _ in range(64):
            new = regex.sub(repl, title)
            if new == title:
                break
            title = new
    out = []
    prev = " "
    for c in title[: rules.MAX_TITLE_LEN]:
        ch = " " if c == "\t" else c
        if ch < " " or ch >= "\x7f":
            continue
        if ch == " " and prev == " ":
            continue
        out.append(ch)
        prev = ch
    return "".join(out).strip()


def parse_window(window: Sequence[str], start: int, oops: Oops) -> Parsed:
    """Describe the report whose header is ``window[start]``.

    :param window: raw console lines (prefix stripped of syslog/journal decorations).
    :param start: index of the header line.
    :param oops: the oops family the header line belongs to.
    """
    context = extract_context(window[start])
    rep = find_report(window, start, context)
    text = "\n".join(rep.lines) + "\n"
    head_text = "\n".join(rep.lines[: rep.end]) + "\n" if rep.end else ""
    desc = extract_description(head_text, oops)
    prefix_len = len(rep.prefix)
    lines = rep.prefix + rep.lines
    numbers = list(range(-len(rep.prefix), 0)) + rep.numbers
    if not desc.title:
        # Fall back to the raw output from the header on, as syzkaller does.
        raw = list(window[start:])
        text = "\n".join(raw) + "\n"
        desc = extract_description(text, oops)
        lines, numbers, prefix_len = raw, list(range(start, len(window))), 0
        if not desc.title:
            desc.title = window[start].strip()
    ctype = rules.title_to_type(desc.title)
    corrupted = bool(desc.corrupted)
    reason = desc.corrupted
    if not corrupted:
        corrupted, reason = is_corrupted(desc.title, text, desc.format)
    title = normalise_title(desc.title)
    alts = [normalise_title(a) for a in desc.alt_titles]
    m = rules.REPORT_FRAME.match(title)
    return Parsed(
        title=title,
        alt_titles=list(dict.fromkeys(a for a in alts if a != title)),
        type=ctype or rules.UNKNOWN_TYPE,
        frame=m.group(1) if m else None,
        corrupted=corrupted,
        corrupted_reason=reason or None,
        report_lines=lines,
        report_line_numbers=numbers,
        prefix_len=prefix_len,
        context=context,
    )


def guilty_file(title: str, report_lines: Sequence[str]) -> str | None:
    """Return the first source file of a symbolised report that is not generic code."""
    report = "\n".join(report_lines)
    if title.startswith("INFO: rcu detected stall"):
        # Start from the interrupt entry: the stall machinery's own files come first.
        for marker in rules.STALL_INTERRUPT_ENDS:
            pos = report.find(marker)
            if pos != -1:
                found = _guilty_file_impl(report[pos:].split("\n"))
                if found:
                    return found
    return _guilty_file_impl(report.split("\n"))


def _ignored(file: str, line: str) -> bool:
    return any(r.search(file) for r in rules.GUILTY_FILE_IGNORES) or bool(
        rules.GUILTY_LINE_IGNORE.search(line)
    )


def _guilty_file_impl(lines: Sequence[str]) -> str | None:
    guilty = ""
    rest = 0
    for i, line in enumerate(lines):
        m = rules.FILENAME.search(line)
        if m is None:
            continue
        file = m.group(1)
        if not guilty:
            guilty = file
        rest = i + 1
        if _ignored(file, line):
            continue
        guilty = posixpath.normpath(file)
        break
    else:
        return guilty or None
    # A deeper path under the same directory further down names the driver better.
    deepest = posixpath.dirname(guilty)
    for line in lines[rest:]:
        m = rules.FILENAME.search(line)
        if m is None:
            continue
        file = m.group(1)
        if _ignored(file, line):
            continue
        clean = posixpath.normpath(file)
        if clean.startswith(deepest) and rules.DEEPER_PATH.match(clean[len(deepest) :]):
            guilty = clean
            deepest = posixpath.dirname(guilty)
    return guilty or None
