"""Undo what production tooling does to kernel console lines before triage reads them.

The parser (:mod:`assistant.triage.parse`) reads the kernel's own console format:
``[  12.345678] text``, or bare ``text``, optionally with a caller id. Logs that
operators paste come through other hands. :func:`normalise_line` turns one such
line back into the console line it stands for:

- journald and syslog prefixes (``Nov  2 12:00:01 host kernel: ``, without the host,
  busybox's and OpenWrt's ``kern.warn kernel: ``,
  a bare ``kernel: ``, ISO-8601, ``short-precise``/``-full``/``-unix``/``-monotonic``,
  rsyslog's ``<pri>`` and RFC 5424 forms);
- ``dmesg -T``/``-H``/``-d``/``-x``/``-r`` and ``--time-format iso`` prefixes;
- raw ``/dev/kmsg`` records (``6,1234,5678,-;text``; their `` KEY=value`` lines are
  dropped), ``journalctl -o json`` lines and ``-k -o export`` fields (``MESSAGE=`` is the
  kernel's text, the other fields and the blank line after a record are dropped), and
  ``-o verbose`` fields;
- tabs for the kernel's indentation, the space ``dmesg`` puts before a caller id,
  ``dmesg --color`` escapes, a mail reply's ``> `` quoting and a paste indented as a
  whole.

A line that a decoration marks as the kernel's but that lost its printk stamp (the
journal keeps the time apart) gets :data:`SYNTHETIC_STAMP`, so that it stays apart from
other programs' lines exactly as a console log keeps them apart; a report with no real
stamp in it has them taken off again (:func:`unstamp`), as its log had none. Non-breaking and other
Unicode spaces are made spaces by :func:`plain_spaces`, for whole blocks at once.

:func:`continues` tells whether a line is the tail of the line before it that a mail
client wrapped at 72-80 columns, and :func:`join_wrapped` puts the two back together.
"""

from __future__ import annotations

import re
from enum import Enum

from assistant.triage import rules
from probes.logs.journal import parse_journal_entry
from probes.logs.kmsg import parse_kmsg_record
from probes.printk_time import LINE_STAMP, PATTERN, STAMP, format_stamp

#: The stamp given to a kernel line whose decoration replaced its printk stamp. printk
#: prints six decimals: seven tell this one apart.
SYNTHETIC_STAMP = "[    0.0000000] "

#: Unicode spaces that web pastes and mail clients put for ASCII spaces.
_SPACES = str.maketrans(dict.fromkeys("\u00a0\u2007\u202f\u2002\u2003\u2009\u3000", " "))


def plain_spaces(text: str) -> str:
    """Replace non-breaking and other Unicode spaces by ASCII spaces (``text`` may be a block)."""
    return text if text.isascii() else text.translate(_SPACES)


class Kind(Enum):
    """What a decoration says about the line it decorates."""

    KERNEL = "kernel"  # a kernel line; its printk stamp may follow
    OTHER = "other"  # another program's line: no printk context
    RESTAMP = "restamp"  # a kernel line whose printk stamp the decoration replaced
    STRIP = "strip"  # says nothing: strip it and look again


_MON = r"[A-Z][a-z]{2}"
_CLOCK = r"\d\d:\d\d:\d\d(?:[.,]\d+)?"
_ISO = r"\d{4}-\d\d-\d\d[T ]" + _CLOCK + r"(?:Z|[+-]\d\d:?\d\d)?"
# "host tag[pid]: " or "tag: " after a syslog/journal time, busybox's and OpenWrt's
# "kern.warn " before the tag; the tag is group "tag".
_TAGGED = r" (?:[^\s:\[]+ )?(?:[a-z]+\.[a-z]+ )?(?P<tag>[^\s:\[]+)(?:\[\d+\])?: "
_STAMPISH = r"\[ *\d+\.\d+(?: <\s*\d+\.\d+>)?\]"
_FACILITIES = (
    "kern|user|mail|daemon|auth|syslog|lpr|news|uucp|cron|authpriv|ftp|res[0-9]|local[0-7]"
)
_LEVELS = "emerg|alert|crit|err|warn|notice|info|debug"

#: (prefix at the start of a line, what it says), tried in order; a ``tag`` group tells
#: a kernel line (``kernel``) from another program's.
DECORATIONS: tuple[tuple[re.Pattern[str], Kind], ...] = tuple(
    (re.compile(pattern, re.ASCII), kind)
    for pattern, kind in (
        # a mail reply's quoting: "> " (as often as it was quoted)
        (r"(?:> ?)*> ", Kind.STRIP),
        # a paste indented as a whole (a mail body, a forum's code block): before a stamp
        (r"[ \t]+(?=(?:<\d{1,3}>)?\[ *\d+\.\d+\])", Kind.STRIP),
        # dmesg -r and rsyslog: a kernel level "<4>", or "<30>" before syslog, RFC 5424
        # or the console line (the two hex digits of "<48>" in a Code: line are none)
        (r"<[0-7]>|<\d{1,3}>(?=\[ *\d|" + _MON + r" |1 \d{4}-|\d{4}-)", Kind.STRIP),
        # RFC 5424: "1 2026-11-02T12:00:01.123+00:00 host kernel - - - "
        (r"1 " + _ISO + r" \S+ (?P<tag>\S+) \S+ \S+ (?:-|\[[^\]]*\]) ", Kind.KERNEL),
        # syslog and journalctl short/short-precise: "Nov  2 12:00:01 host kernel: "
        (_MON + r" [ \d]\d " + _CLOCK + _TAGGED, Kind.KERNEL),
        # OpenWrt's logread: "Mon Nov  2 12:00:01 2026 kern.warn kernel: "
        (_MON + " " + _MON + r" [ \d]\d " + _CLOCK + r" \d{4}" + _TAGGED, Kind.KERNEL),
        # journalctl short-full: "Mon 2026-11-02 12:00:01 UTC host kernel: "
        (_MON + r" \d{4}-\d\d-\d\d " + _CLOCK + r" [A-Z]{2,5}" + _TAGGED, Kind.KERNEL),
        # journalctl short-iso(-precise), rsyslog's RFC 3339 files
        (_ISO + _TAGGED, Kind.KERNEL),
        # journalctl short-unix: "1764676801.123456 host kernel: "
        (r"\d{9,11}\.\d+" + _TAGGED, Kind.KERNEL),
        # journalctl short-monotonic/short-delta: "[  772.918915] host kernel: "
        (_STAMPISH + r" (?:[^\s:\[]+ )?(?P<tag>kernel): ", Kind.RESTAMP),
        (_STAMPISH + r" [^\s:\[]+ (?P<tag>[^\s:\[]+)\[\d+\]: ", Kind.KERNEL),
        # a bare "kernel: " (syslog lines cut at the tag), and syslogd's wall message
        # " kernel:[ 1234.567890] ..." (after "Message from syslogd@host at ...")
        (r"(?P<tag>kernel): ", Kind.KERNEL),
        (r" ?(?P<tag>kernel):(?=\[ *\d)", Kind.KERNEL),
        # dmesg -x: "kern  :warn  : "
        (r"(?P<tag>" + _FACILITIES + r") *:(?:" + _LEVELS + r") *: ", Kind.KERNEL),
        # dmesg -T / --time-format ctime: "[Mon Nov  2 12:00:01 2026] "
        (r"\[" + _MON + " " + _MON + r" [ \d]\d \d\d:\d\d:\d\d \d{4}\] ?", Kind.RESTAMP),
        # dmesg -H / reltime: "[Nov 2 12:00] " and "[  +0.000012] "
        (r"\[" + _MON + r" ?[ \d]?\d \d\d:\d\d\] ?", Kind.RESTAMP),
        (r"\[ *\+\d+\.\d+\] ?", Kind.RESTAMP),
        # dmesg -d: "[  772.918915 <    0.000012>] "
        (r"\[ *\d+\.\d+ <\s*\d+\.\d+>\] ?", Kind.RESTAMP),
        # dmesg --time-format iso: "2026-11-02T12:00:01,123456+00:00 "
        (_ISO + r" ", Kind.RESTAMP),
    )
)

#: Every decoration at once, to pass over the undecorated lines quickly.
_ANY_DECORATION = re.compile(
    "|".join(f"(?:{regex.pattern})".replace("(?P<tag>", "(?:") for regex, _ in DECORATIONS),
    re.ASCII,
)
_KMSG_RECORD = re.compile(r"\d{1,3},\d+,\d+,[^;,]*(?:,[^;]*)?;", re.ASCII)
_KMSG_CALLER = re.compile(r",caller=([CT][0-9]+)", re.ASCII)
_KMSG_DICT_LINE = re.compile(r" [A-Z][A-Z0-9_]*=\S*$", re.ASCII)
#: ``journalctl -o export`` fields other than MESSAGE (the kernel's and journald's own).
_EXPORT_FIELD = re.compile(
    r"(?:_[A-Z0-9_]+|PRIORITY|SYSLOG_[A-Z_]+|CODE_[A-Z]+|MESSAGE_ID|ERRNO|TID|INVOCATION_ID)=",
    re.ASCII,
)
_EXPORT_MESSAGE = "MESSAGE="
_VERBOSE_MESSAGE = "    MESSAGE="
_CALLER_SPACE = re.compile(r"^(" + PATTERN + r") (\[ *[CT][0-9]+\] )", re.ASCII)
_LEADING_WS = re.compile(r"[ \t]+")
#: What follows the indentation of a call-trace line.
_FRAME_START = re.compile(
    r"(?:\? )?(?:\[<?[0-9a-f]+>?\] ){0,2}"
    r"(?:[\w.$]+\+0x|[\w.$]+ \S+\.[chS]:\d+|<(?:IRQ|EOI|NMI|TASK)>)",
    re.ASCII,
)
_CALLER = re.compile(r"\[ *[CT][0-9]+\] ", re.ASCII)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]", re.ASCII)


def _record_line(line: str) -> tuple[str, bool] | None:
    # A record of /dev/kmsg or the journal: its console line, and whether another program
    # wrote it; None when it is no record.
    if line.startswith("{"):
        rec = parse_journal_entry(line)
        if rec is None:
            return None
        if rec.facility not in (0, None):
            return rec.text, True
        stamp = format_stamp(rec.ts_us) + " " if rec.ts_us is not None else SYNTHETIC_STAMP
        return stamp + rec.text, False
    head = _KMSG_RECORD.match(line)
    if head is not None:
        record = parse_kmsg_record(line.encode("utf-8", "surrogateescape"))
        if record is not None and record.ts_us is not None:
            caller = _KMSG_CALLER.search(head.group(0))
            who = f"[{caller.group(1):>6}]" if caller else ""
            return f"{format_stamp(record.ts_us)}{who} {record.text}", False
    return None


def _indent(stamp: str, rest: str) -> str:
    # Tabs or spaces for the kernel's indentation of a frame: one level, one space (the
    # kernel's); other lines keep theirs (rcu's own "\t(detected by 0, ...)").
    m = _LEADING_WS.match(rest)
    if m is None or "\t" not in m.group(0):
        return stamp + rest
    if not (stamp and not stamp.endswith(" ")) and not _FRAME_START.match(rest, m.end()):
        return stamp + rest
    if stamp:
        return stamp.rstrip(" ") + "  " + rest[m.end() :]
    return " " + rest[m.end() :]


def _record_field(line: str) -> bool:
    # A " KEY=value" line of a kmsg record, a field of a journal export record, or one of
    # journalctl -o verbose (four spaces before it).
    if line.startswith("    "):
        return _EXPORT_FIELD.match(line, 4) is not None
    if line.startswith(" "):
        return _KMSG_DICT_LINE.match(line) is not None
    return line[:1] in "_PSCMET" and _EXPORT_FIELD.match(line) is not None


def _strip_decorations(line: str) -> tuple[str, Kind | None]:
    # Strip the decorations at the start of a line (a few may stack: "<4>" then syslog,
    # "kernel:" then dmesg -T); return the rest and what the last one said.
    kind: Kind | None = None
    for _ in range(4 if _ANY_DECORATION.match(line) else 0):
        for regex, what in DECORATIONS:
            m = regex.match(line)
            if m is None:
                continue
            line = line[m.end() :]
            tag = m.groupdict().get("tag")
            said = what
            if what is Kind.KERNEL and tag is not None and tag not in ("kernel", "kern"):
                said = Kind.OTHER
            if said is not Kind.STRIP:
                kind = said
            break
        else:
            break
        if kind is not None and kind is not Kind.KERNEL:
            break
    return line, kind


def normalise_line(line: str) -> str | None:
    """Return the kernel console line that ``line`` stands for.

    :param line: one line of a log, without its newline (Unicode spaces already plain).
    :return: the console line (``[  12.345678] text`` or ``text``), or ``None`` when the
        line is no message of its own (a ``KEY=value`` line of a kmsg or export record).
    """
    return decode_line(line)[0]


def decode_line(line: str) -> tuple[str | None, bool]:
    """Return what :func:`normalise_line` does, and whether a decoration named another
    program than the kernel (``host sshd[12]: ...``) as the line's author."""
    line = _bare(line)
    if line[:1] in "{0123456789":
        record = _record_line(line)
        if record is not None:
            line, other = record
            if other:
                return line, True
    elif _record_field(line):
        return None, False
    line, kind = _strip_decorations(_message_field(line))
    stamp, rest = _split_stamp(line, kind)
    return _indent(stamp, rest), kind is Kind.OTHER


def _bare(line: str) -> str:
    # Take off what a terminal or a transport put around the text: a carriage return (and
    # what the text after one overwrote), journalctl -o json-seq's record separator,
    # dmesg --color=always's escapes.
    if line.endswith("\r"):
        line = line[:-1]
    if "\r" in line:
        line = line.rsplit("\r", 1)[-1]
    if line.startswith("\x1e"):
        line = line[1:]
    if "\x1b[" in line:
        line = _ANSI.sub("", line)
    return line


def _message_field(line: str) -> str:
    # journalctl -o export's and -o verbose's MESSAGE= field: the kernel's text, its printk
    # stamp kept elsewhere.
    for field in (_EXPORT_MESSAGE, _VERBOSE_MESSAGE):
        if line.startswith(field):
            return SYNTHETIC_STAMP + line[len(field) :]
    return line


def _split_stamp(line: str, kind: Kind | None) -> tuple[str, str]:
    # The line's printk stamp (with its caller id, dmesg's space before it taken out) and
    # the rest; a kernel line whose decoration took its stamp gets the synthetic one.
    m = LINE_STAMP.match(line)
    if m is not None:
        fixed = _CALLER_SPACE.match(line)
        if fixed is not None:
            line = fixed.group(1) + fixed.group(2) + line[fixed.end() :]
            m = LINE_STAMP.match(line)
            assert m is not None
        return line[: m.end()], line[m.end() :]
    if kind is not Kind.RESTAMP and kind is not Kind.KERNEL:
        return "", line
    caller = _CALLER.match(line)
    if caller is None:
        return SYNTHETIC_STAMP, line
    return SYNTHETIC_STAMP[:-1] + caller.group(0), line[caller.end() :]


#: Columns at which mail clients wrap: a wrapped line's head is at most this long.
WRAP_COLUMNS = 80
#: The narrowest wrap: the head and the tail's first word did not fit in this many columns.
WRAP_MIN_COLUMNS = 72
#: The tail of a wrapped frame or RIP line in a log without printk stamps.
_FRAGMENT = re.compile(
    r"(?:\S+\.[chS]:\d+(?: \[inline\])?|\[[\w-]+(?: [0-9a-f]+)?\]|\(inlined\)"
    r"|\([\w.$]+(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?\)"
    r"|[\w.$]+\+0x[0-9a-f]+/0x[0-9a-f]+(?: \S+)*)$",
    re.ASCII,
)


def has_real_stamp(line: str) -> bool:
    """Tell whether a normalised line carries a printk stamp of its own (not a synthetic one)."""
    return rules.CONSOLE_OUTPUT.match(line) is not None and not line.startswith(SYNTHETIC_STAMP)


def unstamp(line: str) -> str:
    """Take :data:`SYNTHETIC_STAMP` off a line (for a report from a log without stamps)."""
    return line[len(SYNTHETIC_STAMP) :] if line.startswith(SYNTHETIC_STAMP) else line


_BREAK = re.compile(r"\S \S")
# The tail's first word and the spaces after it (a mail client breaks at the last one).
_WORD = re.compile(r"(\S+)( *)")
# A line of its own in a log without stamps: a new sentence ("Read of size 8 at ...",
# "IP: ..."); the tail of a wrapped header goes on in lower case, an address, a path.
_SENTENCE = re.compile(r"[A-Z]")
# Lines that are whole as the kernel printed them, however long the line after them:
# lockdep's held-lock line (" #0: (lock){+.+.}, at: [<addr>]": kernels printed the
# symbol of its address with a printk of its own) and a banner closed by " ]".
_WHOLE_HEAD = re.compile(r"\s*#\d+:\s|.*\s\]\s*$", re.ASCII)
# Lines never the tail of another: a rule ("-----", "=====") under a banner.
_OWN_TAIL = re.compile(r"[-=]{8,}\s*$", re.ASCII)


def unwrapped(raw: str) -> bool:
    """Tell whether a line shows that its log was not wrapped: a mail client would have
    broken it (it is longer than :data:`WRAP_COLUMNS` with a space to break at)."""
    body = raw.rstrip(" ")
    return len(body) > WRAP_COLUMNS and _BREAK.search(body, 0, WRAP_COLUMNS + 1) is not None


def continues(prev_raw: str, prev_stamped: bool, prev_header: bool, raw: str, line: str) -> bool:
    """Tell whether ``raw`` is the tail of ``prev_raw`` that a mail client wrapped.

    :param prev_raw: the line before, as it came (spaces plain, ``\\r`` stripped).
    :param prev_stamped: whether that line, normalised, has a printk stamp.
    :param prev_header: whether that line is a report header (wrapped in logs without
        stamps too, where the tail goes on with the header's sentence).
    :param raw: this line as it came.
    :param line: this line normalised.
    """
    if _own_line(prev_raw, raw, line) or not _broke_there(prev_raw, line):
        return False
    if prev_stamped or _FRAGMENT.match(line):
        return True
    return prev_header and _SENTENCE.match(line) is None


def _own_line(prev_raw: str, raw: str, line: str) -> bool:
    # Lines that are never a tail: after a line too long to be wrapped, an indented one, a
    # decorated or stamped one (its own line), one after a whole head, a rule.
    if len(prev_raw.rstrip(" ")) > WRAP_COLUMNS or not line or line[0] in " \t":
        return True
    if raw != line or STAMP.match(line) or rules.CONSOLE_OUTPUT.match(line):
        return True
    return bool(_WHOLE_HEAD.match(prev_raw) or _OWN_TAIL.match(line))


def _broke_there(prev_raw: str, line: str) -> bool:
    # Whether the line's first word did not fit on the line before: a wrap broke there.
    word = _WORD.match(line)
    width = len(word.group(1)) + max(0, len(word.group(2)) - 1) if word else 0
    return len(prev_raw) + (0 if prev_raw.endswith(" ") else 1) + width > WRAP_MIN_COLUMNS


def join_wrapped(head: str, tail: str) -> str:
    """Put a line wrapped by a mail client back together (its space is at the break)."""
    if head.endswith(" "):
        return head + tail  # format=flowed keeps the space at the end of the head
    return head + " " + tail
