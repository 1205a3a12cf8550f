"""Re-decorate real kernel console logs the way production tooling prints them.

Each format of :data:`FORMATS` takes the lines of a real console log (the syzkaller
corpus, ``tests/data/*.log``) and prints them as that tool would: syslog and journald
prefixes, rsyslog, ``dmesg`` flags, raw ``/dev/kmsg`` records, ``journalctl -o
json``/``export``, other indentation, Unicode spaces, CRLF, a mail client's wrapping,
unreliable frames and lines of another CPU. A line with a printk stamp is the kernel's;
in a log with stamps, a line without one is another program's (the console mixes them),
and tools that show only the kernel's lines leave it as it is. ``origin`` maps every
output line back to the input line it came from (``-1`` for a line that was added), so
a test can check that a crash spans the same lines.

Used by ``tests/data/formats/make_formats.py`` (the committed samples),
``tests/test_triage_formats.py`` and ``benchmarks/corpus_eval.py --decorate``.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

# A kernel line on a console: after a console's "** N printk messages dropped **" or a
# login prompt that the line cut short, the level, the stamp and the caller id.
_STAMPED = re.compile(
    r"^(?:\*\* \d+ printk messages dropped \*\* )?(?:.* login: )?"
    r"(?:<(\d+)>)?\[ *(\d+)\.(\d+)\](?:\[ *([CT]\d+)\])? ?",
    re.ASCII,
)
_CALLER = re.compile(r"\]\[ *[CT]\d+\]", re.ASCII)
_BOOT = datetime(2026, 11, 2, 12, 0, 0, tzinfo=UTC)
_HOST = "pve-node3"
_FRAME = re.compile(r"^( +)((?:\[<[0-9a-f]+>\] )?[\w.$]+\+0x[0-9a-f]+/0x[0-9a-f]+)", re.ASCII)


@dataclass
class Line:
    """One input line, as the tools see it."""

    text: str  # the line as it came
    kernel: bool  # a kernel line (not another program's)
    message: str  # the message without the printk prefix
    level: int  # the printk level (4 when the line has none)
    ts_us: int | None  # the printk time in microseconds, if stamped
    caller: str | None  # the caller id (T123, C1), if any


@dataclass
class Decorated:
    """A decorated log: its lines and, for each, the input line it came from."""

    lines: list[str] = field(default_factory=list)
    origin: list[int] = field(default_factory=list)

    def add(self, text: str, origin: int) -> None:
        """Append one output line."""
        self.lines.append(text)
        self.origin.append(origin)

    @property
    def text(self) -> str:
        """The decorated log as one string."""
        return "\n".join(self.lines)


def read_lines(log: str) -> list[Line]:
    """Split a console log into :class:`Line` objects."""
    raw = log.split("\n")
    stamped = any(_STAMPED.match(x) for x in raw)
    out = []
    last_us = 0
    for text in raw:
        m = _STAMPED.match(text)
        if m:
            us = int(m.group(2)) * 1_000_000 + int(m.group(3).ljust(6, "0")[:6])
            last_us = us
            level = int(m.group(1)) & 7 if m.group(1) else 4
            out.append(Line(text, True, text[m.end() :], level, us, m.group(4)))
        else:
            out.append(Line(text, not stamped, text, 4, None if stamped else last_us, None))
    return out


def has_caller(log: str) -> bool:
    """Tell whether a log carries printk caller ids (``[  T123]``)."""
    return _CALLER.search(log) is not None


def _wall(ln: Line) -> datetime:
    return _BOOT + timedelta(microseconds=ln.ts_us or 0)


def _stamp(ln: Line) -> str:
    us = ln.ts_us or 0
    return f"[{us // 1_000_000:5d}.{us % 1_000_000:06d}]"


def _caller(ln: Line, sep: str = "") -> str:
    return f"{sep}[{ln.caller:>6}]" if ln.caller else ""


def _syslog_time(ln: Line) -> str:
    t = _wall(ln)
    return f"{t:%b} {t.day:2d} {t:%H:%M:%S}"


def _other(ln: Line, prefix: str) -> str:
    return f"{prefix} {_HOST} syz-executor[812]: {ln.text}"


# -- the formats, one line at a time ------------------------------------------------
# Each takes a line and a random source and returns the decorated line(s).

LineFormat = Callable[[Line, random.Random], list[str]]


def syslog(ln: Line, rng: random.Random) -> list[str]:
    """rsyslog's kern.log: ``Nov  2 12:00:01 host kernel: [  12.345678] text``."""
    if not ln.kernel:
        return [_other(ln, _syslog_time(ln))]
    return [f"{_syslog_time(ln)} {_HOST} kernel: {ln.text}"]


def syslog_nohost(ln: Line, rng: random.Random) -> list[str]:
    """syslog without the host name: ``Nov  2 12:00:01 kernel: ...``."""
    if not ln.kernel:
        return [f"{_syslog_time(ln)} syz-executor[812]: {ln.text}"]
    return [f"{_syslog_time(ln)} kernel: {ln.text}"]


def bare_kernel(ln: Line, rng: random.Random) -> list[str]:
    """A bare ``kernel: `` tag (syslog lines cut at the tag)."""
    return [f"kernel: {ln.text}" if ln.kernel else ln.text]


def rsyslog_pri(ln: Line, rng: random.Random) -> list[str]:
    """rsyslog with ``<pri>``: ``<4>Nov  2 12:00:01 host kernel: ...``."""
    if not ln.kernel:
        return [f"<30>{_other(ln, _syslog_time(ln))}"]
    return [f"<{ln.level}>{_syslog_time(ln)} {_HOST} kernel: {ln.text}"]


def rfc5424(ln: Line, rng: random.Random) -> list[str]:
    """RFC 5424: ``<4>1 2026-11-02T12:00:01.123456+00:00 host kernel - - - ...``."""
    iso = _wall(ln).isoformat(timespec="microseconds")
    if not ln.kernel:
        return [f"<30>1 {iso} {_HOST} syz-executor 812 - - {ln.text}"]
    return [f"<{ln.level}>1 {iso} {_HOST} kernel - - - {ln.text}"]


def journal_iso(ln: Line, rng: random.Random) -> list[str]:
    """``journalctl -o short-iso``: the printk stamp is gone."""
    iso = f"{_wall(ln):%Y-%m-%dT%H:%M:%S%z}"
    if not ln.kernel:
        return [_other(ln, iso)]
    return [f"{iso} {_HOST} kernel: {ln.message}"]


def journal_precise(ln: Line, rng: random.Random) -> list[str]:
    """``journalctl -o short-precise``: ``Nov 02 12:00:01.123456 host kernel: text``."""
    t = _wall(ln)
    prefix = f"{t:%b %d %H:%M:%S}.{t.microsecond:06d}"
    if not ln.kernel:
        return [_other(ln, prefix)]
    return [f"{prefix} {_HOST} kernel: {ln.message}"]


def journal_monotonic(ln: Line, rng: random.Random) -> list[str]:
    """``journalctl -o short-monotonic``: ``[  12.345678] host kernel: text``."""
    if not ln.kernel:
        return [_other(ln, _stamp(ln))]
    return [f"{_stamp(ln)} {_HOST} kernel: {ln.message}"]


def journal_json(ln: Line, rng: random.Random) -> list[str]:
    """``journalctl -o json``: one object per message."""
    entry: dict[str, str] = {
        "__REALTIME_TIMESTAMP": str(int(_wall(ln).timestamp() * 1_000_000)),
        "__MONOTONIC_TIMESTAMP": str(ln.ts_us or 0),
        "_HOSTNAME": _HOST,
        "PRIORITY": str(ln.level),
    }
    if ln.kernel:
        entry |= {"_TRANSPORT": "kernel", "SYSLOG_FACILITY": "0", "SYSLOG_IDENTIFIER": "kernel"}
        entry["_SOURCE_MONOTONIC_TIMESTAMP"] = str(ln.ts_us or 0)
        entry["MESSAGE"] = ln.message
    else:
        entry |= {"_TRANSPORT": "stdout", "SYSLOG_FACILITY": "3", "MESSAGE": ln.text}
    return [json.dumps(entry)]


def journal_export(ln: Line, rng: random.Random) -> list[str]:
    """``journalctl -k -o export``: ``KEY=value`` fields, a blank line after each record
    (the kernel's records only)."""
    if not ln.kernel:
        return []
    fields = [
        f"__CURSOR=s=0f1e;i={rng.randrange(1 << 20):x}",
        f"__REALTIME_TIMESTAMP={int(_wall(ln).timestamp() * 1_000_000)}",
        f"__MONOTONIC_TIMESTAMP={ln.ts_us or 0}",
        "_BOOT_ID=6c1b3c1e0f4a4f0e9b8c1d2e3f405162",
    ]
    fields += [
        f"_SOURCE_MONOTONIC_TIMESTAMP={ln.ts_us or 0}",
        "_TRANSPORT=kernel",
        f"PRIORITY={ln.level}",
        "SYSLOG_FACILITY=0",
        "SYSLOG_IDENTIFIER=kernel",
        f"MESSAGE={ln.message}",
    ]
    return [*fields, f"_HOSTNAME={_HOST}", ""]


def kmsg(ln: Line, rng: random.Random) -> list[str]:
    """Raw ``/dev/kmsg`` records, with `` KEY=value`` lines after some."""
    if not ln.kernel:
        return [ln.text]
    caller = f",caller={ln.caller}" if ln.caller else ""
    out = [f"{ln.level},{rng.randrange(1, 99999)},{ln.ts_us or 0},-{caller};{ln.message}"]
    if rng.random() < 0.1:
        out += [" SUBSYSTEM=pci", " DEVICE=+pci:0000:00:1f.2"]
    return out


def dmesg_t(ln: Line, rng: random.Random) -> list[str]:
    """``dmesg -T``: ``[Mon Nov  2 12:00:01 2026] text`` (dmesg shows the kernel's lines only)."""
    if not ln.kernel or ln.ts_us is None:
        return []
    t = _wall(ln)
    return [f"[{t:%a %b} {t.day:2d} {t:%H:%M:%S %Y}]{_caller(ln, ' ')} {ln.message}"]


def dmesg_x(ln: Line, rng: random.Random) -> list[str]:
    """``dmesg -x``: ``kern  :warn  : [  12.345678] text``."""
    if not ln.kernel:
        return [ln.text]
    level = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")[ln.level]
    return [f"kern  :{level:<6}: {ln.text}"]


def dmesg_r(ln: Line, rng: random.Random) -> list[str]:
    """``dmesg -r``: ``<4>[  12.345678] text``."""
    if not ln.kernel or ln.text.startswith("<"):
        return [ln.text]
    return [f"<{ln.level}>{ln.text}"]


def _reindent(ln: Line, indent: str) -> list[str]:
    head = ln.text[: len(ln.text) - len(ln.message)]
    m = re.match(r" +", ln.message)
    if not ln.kernel or m is None:
        return [ln.text]
    return [head + indent + ln.message[m.end() :]]


def tabs(ln: Line, rng: random.Random) -> list[str]:
    """A tab for the kernel's indentation."""
    return _reindent(ln, "\t")


def spaces(ln: Line, rng: random.Random) -> list[str]:
    """Four spaces for the kernel's indentation."""
    return _reindent(ln, "    ")


def nbsp(ln: Line, rng: random.Random) -> list[str]:
    """U+00A0 for some of the spaces (a web paste)."""
    return ["".join("\u00a0" if c == " " and rng.random() < 0.5 else c for c in ln.text)]


def quoted(ln: Line, rng: random.Random) -> list[str]:
    """A mail reply's quoting: ``> `` before every line."""
    return [f"> {ln.text}"]


def indented(ln: Line, rng: random.Random) -> list[str]:
    """A paste indented as a whole (a mail body, a forum's code block): four spaces."""
    return [f"    {ln.text}" if ln.text.startswith(("[", "<")) else ln.text]


def crlf(ln: Line, rng: random.Random) -> list[str]:
    """A ``\\r`` at the end of each line."""
    return [ln.text + "\r"]


LINE_FORMATS: dict[str, LineFormat] = {
    "syslog": syslog,
    "syslog-nohost": syslog_nohost,
    "kernel-tag": bare_kernel,
    "rsyslog-pri": rsyslog_pri,
    "rfc5424": rfc5424,
    "journal-iso": journal_iso,
    "journal-precise": journal_precise,
    "journal-monotonic": journal_monotonic,
    "journal-json": journal_json,
    "journal-export": journal_export,
    "kmsg": kmsg,
    "dmesg-T": dmesg_t,
    "dmesg-x": dmesg_x,
    "dmesg-r": dmesg_r,
    "tabs": tabs,
    "spaces": spaces,
    "nbsp": nbsp,
    "crlf": crlf,
    "quoted": quoted,
    "indented": indented,
}
#: Formats that lose the printk caller id (journald does not keep it): only for logs
#: without one, where nothing is lost.
LOSES_CALLER = frozenset(
    {"journal-iso", "journal-precise", "journal-monotonic", "journal-json", "journal-export"}
)


def _dmesg_h(lines: list[Line], rng: random.Random) -> Decorated:
    # dmesg -H: the minute when it changes, else the delta since the line before.
    out = Decorated()
    minute = None
    prev_us = 0
    for i, ln in enumerate(lines):
        if not ln.kernel or ln.ts_us is None:
            continue  # dmesg shows the kernel's lines only
        t = _wall(ln)
        caller = _caller(ln, " ")
        if (t.hour, t.minute) != minute:
            minute = (t.hour, t.minute)
            out.add(f"[{t:%b}{t.day:3d} {t:%H:%M}]{caller} {ln.message}", i)
        else:
            delta = max(0, ln.ts_us - prev_us)
            out.add(f"[  +{delta // 1_000_000}.{delta % 1_000_000:06d}]{caller} {ln.message}", i)
        prev_us = ln.ts_us
    return out


def wrap_line(text: str, width: int, flowed: bool) -> list[str]:
    """Wrap one line the way a mail client does: at the last space before ``width``.

    :param flowed: keep the space at the end of the head (``format=flowed``).
    """
    out = []
    while len(text) > width:
        cut = -1
        for pos in range(width, 0, -1):
            if text[pos] == " " and text[pos + 1 : pos + 2] not in (" ", ""):
                cut = pos
                break
        if cut <= 0:
            break  # no space to break at: the mail client leaves the line long
        out.append(text[: cut + 1] if flowed else text[:cut])
        text = text[cut + 1 :]
    out.append(text)
    return out


def _mail(lines: list[Line], rng: random.Random) -> Decorated:
    width = rng.randrange(72, 81)
    flowed = rng.random() < 0.5
    out = Decorated()
    for i, ln in enumerate(lines):
        for part in wrap_line(ln.text, width, flowed):
            out.add(part, i)
    return out


def _unreliable(lines: list[Line], rng: random.Random) -> Decorated:
    # "? func+0x../0x.." frames among the frames of a trace, as unwinders print them:
    # frames of the same log, so that taking one for a real frame changes the title.
    frames = [m.group(2) for ln in lines if ln.kernel and (m := _FRAME.match(ln.message))]
    out = Decorated()
    for i, ln in enumerate(lines):
        m = _FRAME.match(ln.message) if ln.kernel else None
        if m is not None and rng.random() < 0.3:
            head = ln.text[: len(ln.text) - len(ln.message)]
            out.add(f"{head}{m.group(1)}? {rng.choice(frames)}", -1)
        out.add(ln.text, i)
    return out


OTHER_CPU = (
    "IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready",
    "audit: type=1400 audit(1764676801.123:42): avc:  denied  { read } for  pid=812",
    "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
    "random: crng init done",
    "EXT4-fs (sda1): re-mounted. Opts: (null). Quota mode: none.",
)


def _interleaved(lines: list[Line], rng: random.Random) -> Decorated:
    # Lines of another CPU between the report's: with caller ids they carry their own;
    # without, only between lines that are not the report's first lines.
    out = Decorated()
    callers = any(ln.caller for ln in lines)
    stamps = any(ln.text != ln.message for ln in lines)
    for i, ln in enumerate(lines):
        out.add(ln.text, i)
        if not ln.kernel or rng.random() >= 0.1:
            continue
        text = rng.choice(OTHER_CPU)
        if callers:
            out.add(f"{_stamp(ln)}[ T9999] {text}", -1)
        elif i >= 8:
            out.add(f"{_stamp(ln)} {text}" if stamps else text, -1)
    return out


#: Formats that work on the whole log rather than on each line.
LOG_FORMATS: dict[str, Callable[[list[Line], random.Random], Decorated]] = {
    "dmesg-H": _dmesg_h,
    "mail-wrap": _mail,
    "unreliable": _unreliable,
    "interleaved": _interleaved,
}
FORMATS: tuple[str, ...] = (*LINE_FORMATS, *LOG_FORMATS, "mixed")
#: Formats that give every kernel line a time: in a log without stamps they are all or
#: nothing (a log whose lines have times only here and there is not one log).
GIVES_TIMES = frozenset({"kmsg", "journal-json", "journal-export", "journal-monotonic"})


def has_stamps(log: str) -> bool:
    """Tell whether a log has printk stamps."""
    return any(_STAMPED.match(x) for x in log.split("\n"))


def applies(fmt: str, log: str) -> bool:
    """Tell whether a format can decorate this log without losing what it needs."""
    if fmt in LOSES_CALLER:
        return not has_caller(log)
    return True


def decorate(log: str, fmt: str, seed: int = 0) -> Decorated:
    """Decorate one console log in one format (``mixed``: a random format per line).

    :param seed: the seed of the random choices (wrap width, which lines...).
    """
    rng = random.Random(f"{fmt}:{seed}")
    lines = read_lines(log)
    if fmt in LOG_FORMATS:
        return LOG_FORMATS[fmt](lines, rng)
    if fmt == "mixed":
        names = [n for n in LINE_FORMATS if applies(n, log) and n != "journal-export"]
        if not has_stamps(log):
            names = [n for n in names if n not in GIVES_TIMES]
        return mix(lines, [rng.choice(names) for _ in lines], rng)
    return mix(lines, [fmt] * len(lines), rng)


def mix(lines: list[Line], names: list[str], rng: random.Random) -> Decorated:
    """Decorate each line in its own format (``names[i]`` for line ``i``)."""
    out = Decorated()
    for i, (ln, name) in enumerate(zip(lines, names, strict=True)):
        texts = LINE_FORMATS[name](ln, rng)
        for text in texts:
            out.add(text, i if _carries(text, name) else -1)
    return out


def _carries(text: str, name: str) -> bool:
    # Which output line of a format carries the input line's message.
    if name == "journal-export":
        return text.startswith("MESSAGE=")
    if name == "kmsg":
        return not text.startswith(" ")
    return True
