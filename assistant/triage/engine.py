"""The windowing triage engine: find every crash report and event in a console log.

Feed it the log as it comes, whole or a line at a time; every crash comes out as soon
as its report is complete, and a whole-file run is the same code fed blocks::

    engine = TriageEngine("kmsg", retain=False)
    for line in lines:                      # a live stream: /dev/kmsg, journalctl -f
        for crash in engine.feed_line(line, now=time.monotonic()):
            handle(crash)                   # title, span and signature are final
    ...                                     # when no line came for a while:
    for crash in engine.poll(time.monotonic()):
        handle(crash)
    result = engine.finish()                # the rest, the events and the warnings

Lines go through the pre-filter (:mod:`assistant.triage.prefilter`): a block with no
oops header, event or suppression substring in it is only counted. Around a header the
engine opens a *window*: up to :data:`PREFIX_LINES` lines before it and up to
:data:`WINDOW_LINES` lines from it, normalised by :mod:`assistant.triage.console` (the
syslog, journal and dmesg decorations undone, mail-wrapped lines put back together), and
:func:`assistant.triage.describe.build_crash` describes it when it closes. A window
closes, and its crash is handed out, at whichever comes first:

- the next report header of the same printk context (when a newer one is open);
- :data:`GRACE_LINES` lines after an end marker (``---[ end trace``, a ``=====`` rule);
- :data:`WINDOW_LINES` lines after its header (the quiet period in lines);
- a new boot (``Linux version``);
- no line for ``quiet_seconds`` (:meth:`TriageEngine.poll`; only when lines are fed with
  ``now``): the crash is what :meth:`TriageEngine.finish` would give on the input so far;
- :meth:`TriageEngine.finish`.

So memory stays bounded whatever the size of the log. What depends on the whole input:

- ``suppressed`` (a suppression line anywhere), ``panicked`` (``Kernel panic - not
  syncing`` at or after the report's start) and the console hang-up
  (``serialport: VM disconnected.`` marks every crash corrupted) are set on a crash as
  known when it is handed out, and set again over the whole input by ``finish()`` on
  the crashes it returns;
- crashes are handed out in the order their windows close; ``finish()`` returns the
  retained ones sorted by their first line;
- with ``retain=False`` (a daemon on an endless stream) the engine forgets a crash once
  handed out and :meth:`TriageEngine.take_events` hands out the events, so neither
  piles up; ``finish()`` then returns only what was still open. With ``retain=True``
  (the default) past :data:`MAX_CRASHES` crashes, headers are only counted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from assistant.triage import parse, rules
from assistant.triage.console import (
    continues,
    decode_line,
    has_real_stamp,
    join_wrapped,
    normalise_line,
    plain_spaces,
    unstamp,
    unwrapped,
)
from assistant.triage.describe import build_crash
from assistant.triage.events import EventTracker
from assistant.triage.model import Crash, Event, TriageResult
from assistant.triage.prefilter import NEEDLE_RE, Prefilter, has_anchor
from assistant.triage.rules import Oops
from probes.printk_time import LINE_STAMP, STAMP, stamp_us

#: Lines kept before a header for context (syzkaller keeps 50 of the same task).
PREFIX_LINES = 50
#: Most lines of one report window: a window closes this many lines after its header.
WINDOW_LINES = 2000
#: Longest line kept inside a report window, in characters.
MAX_REPORT_LINE = 2048
#: Most report windows open at once (interleaved reports of different tasks).
MAX_OPEN_WINDOWS = 8
#: Lines after an end marker during which a panic line still joins the report.
GRACE_LINES = 12
#: Most crashes described per input; past it headers are only counted (a header storm).
MAX_CRASHES = 1000
#: Characters per block when lines are fed in batches.
BLOCK_CHARS = 1 << 20
#: Seconds without a line after which :meth:`TriageEngine.poll` closes the open reports.
QUIET_SECONDS = 5.0
#: Distinct storm lines whose header verdict is remembered, per block.
STORM_VERDICTS = 4096

# One search instead of a substring test per suppression needle (this runs per header).
_SUPPRESSION_NEEDLE_RE = re.compile("|".join(re.escape(n) for n in rules.SUPPRESSION_NEEDLES))
_END_MARKERS = ("---[ end trace", "---[ end Kernel panic")
#: A new boot: no report goes on past it.
_BOOT_MARKERS = ("] Linux version ", "Booting Linux on physical CPU")
_RULE = "=" * 40
_LINE_LIMIT = MAX_REPORT_LINE + 64
#: decode_line, remembering the last lines: a header's prefix was decoded as it went by, and
#: hostile logs repeat one line (decode_line is a pure function of its text).
_decode_line = lru_cache(maxsize=1024)(decode_line)
#: The register dump that kernels since 4.x print again after "---[ end trace": it does not
#: use up the grace during which a following "Kernel panic - not syncing" joins the report.
_REGISTER_DUMP = re.compile(
    r"(?:^|\]\s*)(?:RIP|Code|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d{1,2}|FS|GS|CS|CR\d|DR\d|PKRU|"
    r"pc|lr|sp|x\d{1,2}|EIP|EAX|ESI|DS)\s*:",
    re.ASCII,
)


@dataclass
class _Window:
    start: int  # global 0-based line number of the header
    oops: Oops
    context: str
    prefix: list[str]
    lines: list[str] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)  # each line's 0-based line number
    end_mark: int | None = None  # index in lines of an end marker
    grace: int = 0
    cut: int | None = None  # index in lines of the next report's header
    wide: bool = False  # a line longer than a mail client's wrap: nothing was wrapped
    others: bool = False  # a line a decoration gave to another program than the kernel
    # lines put back together: index in lines -> the parts (text, line number) as they came
    parts: dict[int, list[tuple[str, int]]] = field(default_factory=dict)

    def unjoin(self) -> None:
        """Split the lines put back together again: the log was not mail-wrapped after all."""
        if not self.parts:
            return
        lines: list[str] = []
        numbers: list[int] = []
        where: list[int] = []  # old index -> new index
        for i, (line, number) in enumerate(zip(self.lines, self.numbers, strict=True)):
            where.append(len(lines))
            pieces = self.parts.get(i, [(line, number)])
            lines += [text for text, _ in pieces]
            numbers += [n for _, n in pieces]
        where.append(len(lines))
        if self.end_mark is not None:
            self.end_mark = where[self.end_mark + 1] - 1
        if self.cut is not None:
            self.cut = where[self.cut]
        self.lines, self.numbers, self.parts = lines, numbers, {}

    def same_context(self, context: str) -> bool:
        loose = ("", parse.CONSOLE)
        return context == self.context or context in loose or self.context in loose


@dataclass
class _Last:
    # The last line that went to the windows: a mail-wrapped tail joins it.
    lineno: int
    raw: str
    stamped: bool
    header: bool = False


class TriageEngine:
    """Find crash reports and events in a console log fed in pieces (see the module doc).

    :param source: the input's name, for the result.
    :param parallel: scan big blocks for anchors on two cores (a helper process).
    :param retain: keep the crashes handed out, for :meth:`finish` (a whole-file run);
        ``False`` for an endless stream.
    :param quiet_seconds: how long without a line closes the open reports in :meth:`poll`.
    :param open_quiet_seconds: how long without a line closes, in :meth:`poll`, a report
        whose end the kernel has not printed yet (no ``---[ end trace`` or ``=====`` rule);
        ``None``: ``quiet_seconds``. A sender whose lines come seconds apart (a network
        host) gets a longer one, so that its report is not cut in two.
    """

    def __init__(
        self,
        source: str,
        parallel: bool = False,
        retain: bool = True,
        quiet_seconds: float = QUIET_SECONDS,
        open_quiet_seconds: float | None = None,
    ) -> None:
        self.source = source
        self.retain = retain
        self.quiet_seconds = quiet_seconds
        self.open_quiet_seconds = open_quiet_seconds or quiet_seconds
        self._prefilter = Prefilter(parallel)
        self.lines = 0  # lines seen so far
        self._tail: list[str] = []  # last PREFIX_LINES lines before the current block
        self._windows: list[_Window] = []
        self._crashes: list[Crash] = []  # retained crashes
        self._ready: list[Crash] = []  # closed, not yet handed out
        self._events = EventTracker()
        self._suppressed = False
        self._hangup = False
        self._last_panic = -1
        self._undescribed = 0
        self._last: _Last | None = None
        self._last_time: float | None = None
        self._after_field = False  # the last line was a field of a journal export record

    # -- input --------------------------------------------------------------

    def feed_line(self, line: str, now: float | None = None) -> list[Crash]:
        """Take one line (without its newline); return the crashes it completed.

        :param now: the time it arrived, in seconds on any monotonic clock (for :meth:`poll`).
        """
        if now is not None:
            self._last_time = now
        line = plain_spaces(line.replace("\n", " "))
        if not self._windows and not has_anchor(line):
            self.lines += 1
            self._tail = [*self._tail, line][-PREFIX_LINES:]
        else:
            self._process_lines([line], self._prefilter.candidates(line))
        return self._take()

    def feed_block(self, block: str, now: float | None = None) -> list[Crash]:
        """Take a block of whole lines joined by ``\\n``; return the crashes it completed.

        :param now: when it arrived, as for :meth:`feed_line`.
        """
        if now is not None:
            self._last_time = now
        if not block:
            return []
        block = plain_spaces(block)
        if not self._windows and not has_anchor(block):
            count = block.count("\n") + 1
            self.lines += count
            tail = block.rsplit("\n", PREFIX_LINES)
            self._tail = (
                (self._tail + tail)[-PREFIX_LINES:] if len(tail) <= PREFIX_LINES else tail[1:]
            )
        else:
            self._process_lines(block.split("\n"), self._prefilter.candidates(block))
        return self._take()

    def feed_lines(self, lines: Iterable[str], now: float | None = None) -> list[Crash]:
        """Take lines (without newlines), in blocks; return the crashes they completed.

        :param now: when they arrived, as for :meth:`feed_line`.
        """
        if now is not None:
            self._last_time = now
        out: list[Crash] = []
        batch: list[str] = []
        size = 0
        for line in lines:
            batch.append(line)
            size += len(line) + 1
            if size >= BLOCK_CHARS:
                out += self.feed_block("\n".join(batch))
                batch, size = [], 0
        if batch:
            out += self.feed_block("\n".join(batch))
        return out

    def poll(self, now: float, fallback: bool = True) -> list[Crash]:
        """Close the open reports whose end marker came and no line for ``quiet_seconds``,
        and (with ``fallback``) the others after ``open_quiet_seconds`` without a line;
        return their crashes.

        :param now: the time, on the clock of the ``now`` given to :meth:`feed_line`.
        :param fallback: ``False`` while the input is behind (its lines wait to be read:
            no line fed is no quiet of the sender).
        """
        last = self._last_time
        if self._windows and last is not None and now - last >= self.quiet_seconds:
            for w in list(self._windows):
                if w.end_mark is not None or (fallback and now - last >= self.open_quiet_seconds):
                    self._close(w)
        return self._take()

    def flush(self) -> list[Crash]:
        """Close every open report now and return their crashes (a stream that ends or
        pauses for good: ``watch --once``)."""
        for w in list(self._windows):
            self._close(w)
        return self._take()

    def oldest_needed(self) -> int | None:
        """Return the 0-based line number of the oldest line an open report still needs
        (its context included), or ``None`` when no report is open.

        A reader that saves where it is resumes there after a restart: the open reports
        are read again whole, and come out as they would have.
        """
        if not self._windows:
            return None
        return min(w.start - len(w.prefix) for w in self._windows)

    def take_events(self) -> list[Event]:
        """Hand out the events found so far and forget them (for an endless stream)."""
        return self._events.take()

    def retained(self) -> int:
        """Return how many lines, crashes and events the engine holds (bounded with
        ``retain=False`` and :meth:`take_events`)."""
        return (
            len(self._tail)
            + sum(len(w.prefix) + len(w.lines) for w in self._windows)
            + len(self._crashes)
            + len(self._ready)
            + self._events.held()
        )

    def _take(self) -> list[Crash]:
        ready, self._ready = self._ready, []
        for c in ready:
            self._set_flags(c)
        return ready

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
                if self.retain and len(self._crashes) >= MAX_CRASHES:
                    self._storm(lines, cands[ci:], base)
                    break
                i = cands[ci]
            is_cand = ci < len(cands) and cands[ci] == i
            raw = lines[i]
            if is_cand:
                ci += 1
                # An anchor is a short substring: does the line hold a whole needle? Only
                # the head that _candidate keeps counts (a megabyte line is not printk's).
                if not exact or len(raw) > _LINE_LIMIT:
                    is_cand = NEEDLE_RE.search(raw, 0, _LINE_LIMIT) is not None
            if is_cand:
                self._candidate(raw, base + i, lines, i)
            elif self._windows:
                self._window_line(raw, base + i)
            i += 1
        self.lines = base + n
        self._tail = (self._tail + lines[-PREFIX_LINES:])[-PREFIX_LINES:]

    def _decode(self, raw: str) -> tuple[str | None, bool]:
        # The console line of a raw one (printk lines are at most 1 KiB: the tail of a
        # longer one is not a kernel message), and whether another program wrote it,
        # which marks the open reports.
        line, other = _decode_line(raw[:_LINE_LIMIT])
        if other:
            for w in self._windows:
                w.others = True
        return (None if line is None else line[:MAX_REPORT_LINE]), other

    def _window_line(self, raw: str, lineno: int) -> None:
        # A line that is no candidate, while a report is open.
        if not raw and self._after_field:
            self._after_field = False  # the blank line that ends a journal export record
            return
        decoded, _ = self._decode(raw)
        self._after_field = decoded is None
        if decoded is None:
            return
        line = decoded
        if any(m in line for m in _BOOT_MARKERS):
            for w in list(self._windows):
                self._close(w)
            return
        raw = raw.rstrip("\r")
        last = self._last
        if (
            last is not None
            and last.lineno == lineno - 1
            and continues(last.raw, last.stamped, last.header, raw, line)
        ):
            joined = False
            for w in self._windows:
                if not w.wide and w.numbers and w.numbers[-1] == last.lineno:
                    at = len(w.lines) - 1
                    w.parts.setdefault(at, [(w.lines[at], w.numbers[at])]).append((line, lineno))
                    w.lines[at] = join_wrapped(w.lines[at], line)[:MAX_REPORT_LINE]
                    w.numbers[at] = lineno
                    joined = True
            if joined:
                self._last = _Last(lineno, raw, last.stamped, last.header)
                return
        self._last = _Last(lineno, raw, STAMP.search(line) is not None)
        self._feed_windows(line, None, lineno, unwrapped(raw))

    def _storm(self, lines: list[str], rest: list[int], base: int) -> None:
        # A header storm past the cap, with no report open: each line is counted if it
        # is a header, and only lines that can still change events or flags take the
        # full path (_candidate's cap branch). No window opens from here. Storms repeat
        # one message with new timestamps: the verdict is remembered by the raw text after
        # the timestamp (no header or suppression looks at the timestamp).
        verdicts: dict[str, bool] = {}
        special = self._prefilter.storm_special(lines, rest, _LINE_LIMIT)
        for j in rest:
            raw = lines[j]
            if j in special:
                self._candidate(raw, base + j, lines, j)
                continue
            stamp = LINE_STAMP.match(raw)
            key = raw[stamp.end() : _LINE_LIMIT] if stamp else raw[:_LINE_LIMIT]
            header = verdicts.get(key)
            if header is None:
                line = normalise_line(raw[:_LINE_LIMIT])
                header = line is not None and parse.first_oops(line[:MAX_REPORT_LINE]) is not None
                if len(verdicts) < STORM_VERDICTS:
                    verdicts[key] = header
            if header:
                self._undescribed += 1

    def _prefix(self, lines: list[str], i: int) -> tuple[list[str], bool]:
        before = lines[max(0, i - PREFIX_LINES) : i]
        if len(before) < PREFIX_LINES:
            before = self._tail[max(0, len(self._tail) - (PREFIX_LINES - len(before))) :] + before
        out = []
        others = after_field = False
        for x in before:
            if not x and after_field:
                after_field = False
                continue
            line, other = _decode_line(x[:_LINE_LIMIT])
            after_field = line is None
            if line is not None:
                out.append(line[:MAX_REPORT_LINE])
                others = others or other
        return out, others

    # -- one interesting line ----------------------------------------------

    def _candidate(self, raw: str, lineno: int, lines: list[str], i: int) -> None:
        self._after_field = False
        decoded, other = self._decode(raw)
        if decoded is None:
            return
        line = decoded
        raw = raw.rstrip("\r")
        wide = unwrapped(raw)
        oops = parse.first_oops(line)
        self._last = _Last(lineno, raw, STAMP.search(line) is not None, oops is not None)
        if rules.REPLAY_MARKER in line:
            self._replayed(lineno)
            self._feed_windows(line, None, lineno, wide)
            return
        self._note_flags(line, lineno)
        if not self._windows and self.retain and len(self._crashes) >= MAX_CRASHES:
            self._past_cap(line, oops, lineno)
            return
        context = parse.extract_context(line)
        if oops is None:  # a header line is its crash, never an event too
            text, _ = parse.strip_line_prefix(line, context)
            self._events.feed(text, lineno + 1)
            self._feed_windows(line, context, lineno, wide)
            return
        same = [w for w in self._windows if w.same_context(context)]
        if self._header_joins(line, context, lineno, wide, same):
            return
        self._cut_before(line, context, lineno, wide, same)
        prefix, others = self._prefix(lines, i)
        wrapped = wide or any(unwrapped(x) for x in prefix)
        window = _Window(lineno, oops, context, prefix, [line], [lineno], wide=wrapped)
        window.others = others or other
        self._windows.append(window)

    def _note_flags(self, line: str, lineno: int) -> None:
        # The marks that flag the input as a whole: a hung-up console, a panic, a
        # suppression.
        if rules.CONSOLE_HANGUP in line:
            self._hangup = True
        if rules.PANICKED in line:
            self._last_panic = lineno
        if not self._suppressed and _SUPPRESSION_NEEDLE_RE.search(line):
            self._suppressed = any(s.search(line) for s in rules.SUPPRESSIONS)

    def _past_cap(self, line: str, oops: Oops | None, lineno: int) -> None:
        # A header storm past the cap: count, keep the events, describe no more.
        if oops is None:
            self._events.feed(line, lineno + 1)
        else:
            self._undescribed += 1

    def _header_joins(
        self, line: str, context: str | None, lineno: int, wide: bool, same: list[_Window]
    ) -> bool:
        # Whether a header opens no report of its own: an ignorable one joins the open
        # report of its context, and past the cap it is only counted.
        ignorable = any(r.search(line) for r in rules.REPORT_START_IGNORES)
        if ignorable and same and not self._late_panic(line, same):
            for w in same:  # a panic after the report's end marker still belongs to it
                w.end_mark = None
            self._feed_windows(line, context, lineno, wide)
            return True
        if self.retain and len(self._crashes) + len(self._windows) >= MAX_CRASHES:
            self._undescribed += 1
            self._feed_windows(line, context, lineno, wide)
            return True
        return False

    def _cut_before(
        self, line: str, context: str | None, lineno: int, wide: bool, same: list[_Window]
    ) -> None:
        # The report before goes on being read (its trace may come after the next
        # header, as syzkaller reads it), but its text and span stop here.
        for w in same:
            if w.cut is None:
                w.cut = len(w.lines)
        self._feed_windows(line, context, lineno, wide)
        still_open = [w for w in same if w in self._windows]
        for w in still_open[: max(0, len(still_open) - 1)]:
            self._close(w)
        if len(self._windows) >= MAX_OPEN_WINDOWS:
            self._close(self._windows[0])

    def _late_panic(self, line: str, same: list[_Window]) -> bool:
        # A panic that comes a while after the open report ended (its end marker, else its
        # last line, by printk stamps) is a crash of its own (rules.PANIC_JOIN_SECONDS).
        if rules.PANICKED not in line:
            return False
        at = _real_stamp_us(line)
        if at is None:
            return False
        for w in same:
            ended = _real_stamp_us(w.lines[w.end_mark if w.end_mark is not None else -1])
            if ended is None or at - ended < rules.PANIC_JOIN_SECONDS * 1e6:
                return False
        return True

    def _replayed(self, lineno: int) -> None:
        # The line before the marker was cut short and is printed again next.
        for w in list(self._windows):
            if w.start == lineno - 1 and len(w.lines) == 1:
                self._windows.remove(w)
            elif w.lines and w.numbers[-1] == lineno - 1:
                w.lines.pop()
                w.numbers.pop()

    def _feed_windows(self, line: str, context: str | None, lineno: int, wide: bool) -> None:
        if not self._windows:
            return
        marker = any(m in line for m in _END_MARKERS) or (_RULE in line and "=" * 60 in line)
        for w in list(self._windows):
            w.lines.append(line)
            w.numbers.append(lineno)
            w.wide = w.wide or wide
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
        if w.wide:
            w.unjoin()
        if not (
            w.others or any(map(has_real_stamp, w.prefix)) or any(map(has_real_stamp, w.lines))
        ):
            # No stamp of the kernel's own and no other program's lines: its log had no
            # stamps, and the decorations that said "kernel" are no context of their own.
            w.prefix = [unstamp(x) for x in w.prefix]
            w.lines = [unstamp(x) for x in w.lines]
        lines, numbers = w.lines, w.numbers
        if w.end_mark is not None:
            lines, numbers = lines[: w.end_mark + 1], numbers[: w.end_mark + 1]
        crash = build_crash(w.prefix, lines, w.start, w.oops, w.cut, numbers)
        if self.retain:
            self._crashes.append(crash)
        self._ready.append(crash)

    # -- output -------------------------------------------------------------

    def _set_flags(self, c: Crash) -> None:
        # The flags that depend on the input as a whole, as far as it has been read.
        c.suppressed = self._suppressed
        c.panicked = self._last_panic >= c.start_line - 1
        if self._hangup and not c.corrupted:
            c.corrupted = True
            c.corrupted_reason = "console hung up (serialport: VM disconnected.)"

    def finish(self) -> TriageResult:
        """Close the open reports and return everything found (see the module doc)."""
        self._prefilter.close()
        for w in list(self._windows):
            self._close(w)
        self._ready = []
        crashes = sorted(self._crashes, key=lambda c: c.start_line)
        for c in crashes:
            self._set_flags(c)
        result = TriageResult(
            source=self.source, crashes=crashes, events=self._events.events, lines=self.lines
        )
        if self._undescribed:
            result.warnings.append(
                f"{self._undescribed} more crash header(s) after the first {MAX_CRASHES}"
                " were counted but not described"
            )
        return result


def _real_stamp_us(line: str) -> int | None:
    # The printk time of a console line, when it has a stamp of its own (not a synthetic one).
    return stamp_us(line) if has_real_stamp(line) else None


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
