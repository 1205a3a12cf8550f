"""The pre-filter: which lines of a block of console output may matter to triage.

Most of a log is no crash. A block with none of the short :data:`ANCHORS` in it is
only counted. Otherwise one Aho-Corasick pass (ahocorasick-rs, a Rust automaton with
a SIMD prefilter) finds the lines holding one of the whole :data:`NEEDLES` (an oops
header, a suppression, an event, a console marker); without the module, or on a
block that is not ASCII, a ``str.find`` scan per anchor finds the lines holding an
anchor, and the engine checks those against :data:`NEEDLE_RE`.
"""

from __future__ import annotations

import multiprocessing
import os
import re
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from typing import Any

from assistant.triage import rules
from assistant.triage.events import EVENT_NEEDLES, OOM_CONTEXT_NEEDLES

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
    "ainted",  # SLUB's "BUG <cache> (Not tainted): " and "(Tainted: "
    "pagealloc",
    "traps: ",  # user-space faults
    "umip: ",
    "unhandled exception",
)
#: A whole needle: the check of a line that holds an anchor.
NEEDLE_RE = re.compile("|".join(re.escape(n) for n in NEEDLES))
#: Blocks at least this big are scanned on two cores (when parallel).
PARALLEL_BLOCK_CHARS = 1 << 20
#: Bytes handed to the automaton at once: its match list (a Python tuple per match) stays
#: small even when every few bytes are an anchor (a header storm).
AUTOMATON_SLICE = 64 * 1024
#: Past the crash cap, the lines that can still change the result beyond a count.
STORM_SPECIAL: tuple[str, ...] = (
    rules.REPLAY_MARKER,
    rules.CONSOLE_HANGUP,
    rules.PANICKED,
    *rules.SUPPRESSION_NEEDLES,
    *EVENT_NEEDLES,
    *OOM_CONTEXT_NEEDLES,
)
_STORM_SPECIAL_RE = re.compile("|".join(re.escape(n) for n in STORM_SPECIAL))


#: Longest text :func:`has_anchor` hands to the automaton (which lists every match: a
#: longer block is scanned needle by needle, stopping at the first one found).
AUTOMATON_CHARS = 4096


@lru_cache(maxsize=1)
def _anchor_automaton() -> Any:
    # One pass over a line instead of one substring scan per anchor (a network host's
    # lines come one at a time); None without ahocorasick-rs.
    try:
        import ahocorasick_rs
    except ImportError:
        return None
    return ahocorasick_rs.AhoCorasick(list(ANCHORS))


def has_anchor(block: str) -> bool:
    """Tell whether ``block`` holds any anchor (a block without one is only counted)."""
    if len(block) <= AUTOMATON_CHARS:
        found = _anchor_automaton()
        if found is not None:
            return bool(found.find_matches_as_indexes(block))
    return any(n in block for n in ANCHORS)


@lru_cache(maxsize=8)
def automaton(needles: tuple[str, ...]) -> Any:
    """Return an Aho-Corasick automaton over ``needles``, or ``None`` without ahocorasick-rs."""
    # About 7x faster here than one str.find scan per anchor.
    try:
        import ahocorasick_rs
    except ImportError:
        return None
    return ahocorasick_rs.BytesAhoCorasick([a.encode() for a in needles])


def automaton_hits(data: bytes, found: Any) -> list[int]:
    """Return the start offsets of the lines of ``data`` that the automaton ``found`` matches."""
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
        for _, start, _ in found.find_matches_as_indexes(data[pos:stop], overlapping=False):
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


def line_indices(block: str, starts: list[int]) -> list[int]:
    """Turn sorted line start offsets in ``block`` into 0-based line indices."""
    out = []
    line = 0
    last = 0
    for start in starts:
        line += block.count("\n", last, start)
        last = start
        out.append(line)
    return out


class Prefilter:
    """Find the candidate lines of blocks, on two cores for big blocks when asked."""

    def __init__(self, parallel: bool = False) -> None:
        self._parallel = parallel and (os.cpu_count() or 1) > 1
        self._pool: ProcessPoolExecutor | None = None

    def candidates(self, block: str) -> tuple[list[int], bool]:
        """Return the indices of the lines of ``block`` that may matter, in order.

        :return: the line indices, and whether they are exact (each line holds a whole
            needle) or only hold an anchor (a short substring of some needle).
        """
        found = automaton(NEEDLES) if block.isascii() else None
        if found is not None:
            # The automaton takes every whole needle at once: no anchor step, no
            # second process, and no regex per line afterwards.
            self._parallel = False
            return line_indices(block, automaton_hits(block.encode("ascii"), found)), True
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
        return line_indices(block, starts), False

    def storm_special(self, lines: list[str], rest: list[int], limit: int) -> set[int]:
        """Return which of the lines ``rest`` of ``lines`` hold a :data:`STORM_SPECIAL` needle.

        :param limit: how many characters of a line count.
        """
        # One automaton pass over them all (a line flagged here only takes the full
        # path, so flagging more is safe).
        text = "\n".join(lines[j] for j in rest)
        found = automaton(STORM_SPECIAL) if text.isascii() else None
        if found is None:
            return {j for j in rest if _STORM_SPECIAL_RE.search(lines[j], 0, limit)}
        hits = automaton_hits(text.encode("ascii"), found)
        return {rest[k] for k in line_indices(text, hits)}

    def close(self) -> None:
        """Stop the helper process, if one was started."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
