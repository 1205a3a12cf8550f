"""Classify a crash report's lines by how much a prompt needs them.

:func:`classify` gives each line a priority class for
:func:`assistant.llm.budget.fit_evidence`, which drops the highest classes first:
register dumps and repeated frames, then the call trace beyond the guilty frames,
then the rest of the report; the report's first lines and the guilty frames go last.
"""

from __future__ import annotations

import re

from probes.printk_time import without_stamp

#: Priority classes, from the last dropped to the first dropped.
HEAD, GUILTY, BODY, TRACE_TAIL, NOISE = range(5)
#: How many first lines of the report are kept the longest.
HEAD_LINES = 8
#: How many distinct call-trace frames count as "guilty" (innermost first).
GUILTY_FRAMES = 8

_REGISTERS = re.compile(
    r"^\s*(?:RIP|RSP|RAX|RBX|RCX|RDX|RSI|RDI|RBP|R\d{1,2}|FS|GS|CS|DS|ES|CR[0-4]|DR[0-7]|"
    r"EFLAGS|pc|lr|sp|x\d+|Code|Stack|PGD|PUD|PMD|PTE|ORIG_RAX)\s*:?\s*[0-9a-fA-F<]"
)
_HEX_DUMP = re.compile(r"^\s*(?:[0-9a-f]{8,16}\s+){3,}")
_FRAME = re.compile(
    r"^\s*(?:\?\s*)?(?:\[<[0-9a-f]+>\]\s*)?([A-Za-z_][\w.]*)\+0x[0-9a-f]+/0x[0-9a-f]+"
)


def classify(report: str) -> list[tuple[int, str]]:
    """Give each line of a crash report its priority class (see the module docstring)."""
    out: list[tuple[int, str]] = []
    seen: set[str] = set()
    frames = 0
    for i, raw in enumerate(report.splitlines()):
        line = without_stamp(raw).rstrip()
        if not line:
            continue
        frame = _FRAME.match(line)
        if _REGISTERS.match(line) or _HEX_DUMP.match(line):
            prio = NOISE
        elif frame:
            name = frame.group(1)
            if name in seen:
                prio = NOISE
            else:
                seen.add(name)
                frames += 1
                prio = GUILTY if frames <= GUILTY_FRAMES else TRACE_TAIL
        elif i < HEAD_LINES:
            prio = HEAD
        else:
            prio = BODY
        out.append((prio, line))
    return out
