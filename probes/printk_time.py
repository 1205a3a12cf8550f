"""The printk timestamp ``[  12.345678]``: the one definition kassist uses.

printk prints the time since boot as ``[%5lu.%06lu]`` (``kernel/printk/printk.c``,
``print_time()``): seconds, a dot, microseconds. Consoles and ``dmesg`` put it first
on the line, before the caller id (``[  T123]``/``[   C1]``, CONFIG_PRINTK_CALLER).
Other tools copy the line with the stamp inside it, so searches use :data:`STAMP`
anywhere and :data:`LINE_STAMP` at the start.

>>> LINE_STAMP.match("[   12.500000][  T42] oops").group(0)
'[   12.500000][  T42] '
>>> stamp_us("[   12.5] x"), format_stamp(12_500_000)
(12500000, '[   12.500000]')
"""

from __future__ import annotations

import re

#: The stamp as a regex source with no groups, for composing into bigger regexes.
PATTERN = r"\[ *[0-9]+\.[0-9]+\]"
#: The stamp anywhere in a line; groups: seconds, fraction.
STAMP = re.compile(r"\[ *([0-9]+)\.([0-9]+)\]", re.ASCII)
#: The stamp at the start of a line, the caller id after it if any (group 3, ``T42``), and
#: the one space that separates them from the message.
LINE_STAMP = re.compile(r"^\[ *([0-9]+)\.([0-9]+)\](?:\[ *([CT][0-9]+)\])? ?", re.ASCII)


def stamp_us(line: str) -> int | None:
    """Return the time of the stamp at the start of ``line`` in microseconds, or ``None``."""
    m = LINE_STAMP.match(line)
    if m is None:
        return None
    return int(m.group(1)) * 1_000_000 + int(m.group(2).ljust(6, "0")[:6])


def split_stamp(line: str) -> tuple[int | None, str]:
    """Return the leading stamp's time in microseconds (``None`` without one) and the rest.

    >>> split_stamp("[   12.5] BUG: x")
    (12500000, 'BUG: x')
    """
    m = LINE_STAMP.match(line)
    if m is None:
        return None, line
    return int(m.group(1)) * 1_000_000 + int(m.group(2).ljust(6, "0")[:6]), line[m.end() :]


def format_stamp(ts_us: int) -> str:
    """Print a time since boot (microseconds) the way printk does: ``[%5lu.%06lu]``."""
    return f"[{ts_us // 1_000_000:5d}.{ts_us % 1_000_000:06d}]"


def without_stamp(line: str) -> str:
    """Return ``line`` without its leading printk stamp (and caller id), if it has one.

    >>> without_stamp("  [   12.500000][ T42] BUG: x")
    'BUG: x'
    """
    return LINE_STAMP.sub("", line.lstrip(), count=1)
