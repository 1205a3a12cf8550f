"""syslog from a host's own forwarder (rsyslog, syslog-ng): messages back into kernel records.

A fleet's hosts already forward their kernel log: rsyslog's ``imkmsg`` (or ``imklog``)
read by ``omfwd``, syslog-ng's ``system()`` or ``file("/dev/kmsg")`` source with a
``network()`` destination. They send:

- **RFC 5424** (``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG``:
  rsyslog's ``RSYSLOG_SyslogProtocol23Format``, syslog-ng's ``syslog()`` driver);
- **RFC 3164** (``<PRI>Mmm dd hh:mm:ss HOSTNAME TAG: MSG``: rsyslog's
  ``RSYSLOG_TraditionalForwardFormat``, the default of ``omfwd``; syslog-ng's
  ``network()``), also with an RFC 3339 stamp (``RSYSLOG_ForwardFormat``);

over UDP (a message a datagram) or TCP, *octet-counted* (RFC 6587: ``LEN SP MSG``) or
*newline-framed* (:class:`SyslogFramer` tells them apart by the first byte of each frame).

The host is the record's HOSTNAME (the sender's address when the record has none); the
facility is ``PRI >> 3``: only facility 0 (kern) is the kernel's, everything else is
counted and kept out of the crash store by the daemon. A kernel message that carries its
printk stamp (``[   12.345678] ...``, a forwarded console file) keeps it as ``ts_us``.
Parsing is pure: :mod:`probes.logs.netrecv` receives.
"""

from __future__ import annotations

import calendar
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from probes.logs.records import LogRecord, utf8
from probes.printk_time import split_stamp

#: Bytes of one syslog frame at most (rsyslog's default ``maxMessageSize`` is 8 KiB).
MAX_FRAME = 64 << 10
#: Messages remembered (all hosts) to read one sent twice once.
RECENT = 262_144

_PRI = re.compile(rb"^<(\d{1,3})>")
_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_BSD_TIME = re.compile(r"^([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))? ")
_RFC3339 = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d) "
)
_TAG = re.compile(r"^([^\s:\[]{1,48})(?:\[(\d{1,10})\])?: ?")
_HOSTNAME = re.compile(r"^[A-Za-z0-9_.:%-]{1,255}$")
_COUNT_AHEAD = re.compile(rb"(?<!\d)(\d{1,6}) <\d{1,3}>")


@dataclass
class SyslogStats:
    """Counters of the syslog decoder.

    :param messages: frames decoded into records.
    :param malformed: frames that are no syslog message (no ``<PRI>``, no header).
    :param invalid_utf8: messages whose text was not UTF-8 (replaced with U+FFFD).
    :param rfc5424: messages in RFC 5424's format; the rest were RFC 3164's.
    :param duplicates: messages a host sent again (the same time and text: forwarded
        twice, over two transports, or again after a reconnection), handed on once.
    """

    messages: int = 0
    malformed: int = 0
    invalid_utf8: int = 0
    rfc5424: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class SyslogMessage:
    """One syslog message as read.

    :param facility: ``PRI >> 3`` (0: kern).
    :param severity: ``PRI & 7``.
    :param wall_us: its timestamp, µs since the Unix epoch (``None``: none given).
    :param hostname: HOSTNAME, when given.
    :param app: APP-NAME or TAG (``kernel``).
    :param text: MSG.
    """

    facility: int
    severity: int
    wall_us: int | None
    hostname: str | None
    app: str | None
    text: str


def _rfc3339_us(m: re.Match[str]) -> int:
    year, mon, day, hh, mm, ss = (int(m.group(i)) for i in range(1, 7))
    frac = int((m.group(7) or "0").ljust(6, "0")[:6])
    tz = m.group(8)
    offset = 0
    if tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        offset = sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    return (calendar.timegm((year, mon, day, hh, mm, ss)) - offset) * 1_000_000 + frac


def _bsd_us(m: re.Match[str], now: float) -> int | None:
    # RFC 3164 has no year nor zone: the sender's local time, taken as ours, in the year
    # that puts it nearest to now.
    month = _MONTHS.get(m.group(1))
    if month is None:
        return None
    day, hh, mm, ss = int(m.group(2)), int(m.group(3)), int(m.group(4)), int(m.group(5))
    year = time.localtime(now).tm_year
    try:
        stamp = time.mktime(datetime(year, month, day, hh, mm, ss).timetuple())
        if stamp > now + 86400:
            stamp = time.mktime(datetime(year - 1, month, day, hh, mm, ss).timetuple())
    except (ValueError, OverflowError):
        return None
    return int(stamp) * 1_000_000 + int((m.group(6) or "0").ljust(6, "0")[:6])


def _skip_sd(rest: str) -> str | None:
    # STRUCTURED-DATA: "-" or [id k="v" ...]... with \" \] \\ escaped inside values.
    if rest.startswith("-"):
        return rest[1:]
    i = 0
    while i < len(rest) and rest[i] == "[":
        i += 1
        quoted = False
        while i < len(rest):
            c = rest[i]
            if c == "\\" and quoted:
                i += 2
                continue
            if c == '"':
                quoted = not quoted
            elif c == "]" and not quoted:
                break
            i += 1
        if i >= len(rest):
            return None
        i += 1
    return rest[i:] if i else None


def parse_message(payload: bytes, now: float | None = None) -> tuple[SyslogMessage, bool] | None:
    """Read one syslog message; return it and whether its text was valid UTF-8, or
    ``None`` when it is no syslog message.

    >>> m, _ = parse_message(b"<4>1 2026-12-07T06:58:12.5Z db7 kernel - - - BUG: x")
    >>> (m.facility, m.severity, m.hostname, m.app, m.text, m.wall_us % 10**6)
    (0, 4, 'db7', 'kernel', 'BUG: x', 500000)
    >>> parse_message(b"<6>Dec  7 06:58:12 db7 kernel: [    1.5] hi", 1796540000.0)[0].text
    '[    1.5] hi'
    """
    now = time.time() if now is None else now
    m = _PRI.match(payload)
    if m is None or int(m.group(1)) > 191:
        return None
    pri = int(m.group(1))
    rest, valid = utf8(payload[m.end() :].rstrip(b"\r\n\x00"))
    msg = _rfc5424(pri, rest[2:]) if rest.startswith("1 ") else _rfc3164(pri, rest, now)
    return (msg, valid) if msg is not None else None


def _rfc5424(pri: int, rest: str) -> SyslogMessage | None:
    parts = rest.split(" ", 5)
    if len(parts) < 6:
        return None
    stamp, host, app, _procid, _msgid, tail = parts
    wall = None
    if stamp != "-":
        t = _RFC3339.match(stamp + " ")
        if t is None:
            return None
        wall = _rfc3339_us(t)
    after = _skip_sd(tail)
    if after is None:
        return None
    text = after[1:] if after.startswith(" ") else after
    text = text.removeprefix("\ufeff")
    return SyslogMessage(pri >> 3, pri & 7, wall,
                         None if host == "-" else host, None if app == "-" else app,
                         text)  # fmt: skip


def _rfc3164(pri: int, rest: str, now: float) -> SyslogMessage | None:
    wall: int | None = None
    t = _RFC3339.match(rest)
    if t is not None:
        wall = _rfc3339_us(t)
        rest = rest[t.end() :]
    else:
        b = _BSD_TIME.match(rest)
        if b is not None:
            wall = _bsd_us(b, now)
            rest = rest[b.end() :]
    host = None
    first, sep, after = rest.partition(" ")
    if wall is not None and sep and _HOSTNAME.match(first) and not first.endswith(":"):
        host, rest = first, after
    app = None
    tag = _TAG.match(rest)
    if tag is not None:
        app, rest = tag.group(1), rest[tag.end() :]
    return SyslogMessage(pri >> 3, pri & 7, wall, host, app, rest)


class SyslogDecoder:
    """Turn syslog messages from many senders into kernel log records.

    :param source: the records' ``source`` prefix.
    """

    def __init__(self, source: str = "syslog") -> None:
        self.source = source
        self.stats = SyslogStats()
        self._recent: OrderedDict[tuple[str, int | None, int], None] = OrderedDict()

    def _seen(self, key: tuple[str, int | None, int]) -> bool:
        # The last RECENT messages of all hosts by (host, time, text's hash): one sent
        # twice is read once.
        if key in self._recent:
            return True
        self._recent[key] = None
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        return False

    def feed(self, payload: bytes, peer: str, now_us: int) -> list[LogRecord]:
        """Decode one message (a datagram or a TCP frame) from ``peer``."""
        parsed = parse_message(payload, now_us / 1e6)
        if parsed is None:
            self.stats.malformed += 1
            return []
        msg, valid = parsed
        self.stats.messages += 1
        self.stats.invalid_utf8 += not valid
        self.stats.rfc5424 += payload[payload.find(b">") + 1 :].startswith(b"1 ")
        host = msg.hostname or peer
        ts_us, text = split_stamp(msg.text)
        if self._seen((host, ts_us if ts_us is not None else msg.wall_us, hash(msg.text))):
            self.stats.duplicates += 1
            return []
        return [
            LogRecord(
                text=text,
                source=f"{self.source}:{host}",
                level=msg.severity,
                facility=msg.facility,
                ts_us=ts_us,
                realtime_us=msg.wall_us if msg.wall_us is not None else now_us,
                host=host,
                dictionary={"app": msg.app} if msg.app else {},
            )
        ]


class SyslogFramer:
    """Cut a TCP syslog stream into messages: octet-counted (``LEN SP MSG``, RFC 6587)
    or newline-framed, told apart by each frame's first byte.

    A count that is no number, larger than ``max_frame``, or that does not end where the
    next frame begins is a bad frame: counted, and the stream is read on from the next
    thing that looks like a frame. A newline-framed line longer than ``max_frame`` is
    cut there (counted) and the rest of it skipped.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._skipping = False  # the rest of an over-long line is being skipped
        self._errors = 0
        self._too_long = 0

    @property
    def errors(self) -> int:
        """Frames that could not be read."""
        return self._errors

    @property
    def too_long(self) -> int:
        """Frames cut at ``max_frame``."""
        return self._too_long

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes; return the frames they completed."""
        self._buf += data
        out: list[bytes] = []
        while self._buf:
            if self._skipping:
                nl = self._buf.find(b"\n")
                if nl == -1:
                    self._buf.clear()
                    break
                del self._buf[: nl + 1]
                self._skipping = False
                continue
            frame = self._octet_frame() if self._buf[:1].isdigit() else self._line_frame()
            if frame is None:
                break
            if frame:
                out.append(frame)
        return out

    def _octet_frame(self) -> bytes | None:
        sp = self._buf.find(b" ", 0, 8)
        if sp == -1:
            if len(self._buf) < 8 and self._buf.isdigit():
                return None  # the count is still coming
            return self._resync(1)
        count_text = bytes(self._buf[:sp])
        if not count_text.isdigit() or not 0 < int(count_text) <= self.max_frame:
            return self._resync(sp + 1)
        count = int(count_text)
        end = sp + 1 + count
        if len(self._buf) < end:
            return None
        frame = bytes(self._buf[sp + 1 : end])
        nxt = self._buf[end : end + 1]
        if not frame.startswith(b"<") or (nxt and not nxt.isdigit() and nxt != b"\n"):
            return self._resync(sp + 1)
        del self._buf[:end]
        return frame

    def _resync(self, start: int) -> bytes:
        # A bad frame: skip to the next "LEN <" (an octet count) or line start.
        self._errors += 1
        m = _COUNT_AHEAD.search(self._buf, start)
        nl = self._buf.find(b"\n", start)
        cut = [p for p in ((m.start(1) if m else -1), (nl + 1 if nl != -1 else -1)) if p > 0]
        if cut:
            del self._buf[: min(cut)]
        else:
            self._buf.clear()
        return b""

    def _line_frame(self) -> bytes | None:
        nl = self._buf.find(b"\n")
        if nl == -1:
            if len(self._buf) > self.max_frame:
                self._too_long += 1
                frame = bytes(self._buf[: self.max_frame])
                self._buf.clear()
                self._skipping = True
                return frame
            return None
        frame = bytes(self._buf[:nl]).rstrip(b"\r")
        del self._buf[: nl + 1]
        if len(frame) > self.max_frame:
            self._too_long += 1
            frame = frame[: self.max_frame]
        return frame

    def close(self) -> list[bytes]:
        """The stream ended: a last unterminated line is a frame; half a counted one is not."""
        rest = bytes(self._buf)
        self._buf.clear()
        if not rest or self._skipping:
            return []
        if rest[:1].isdigit():
            self._errors += 1
            return []
        return [rest.rstrip(b"\r")]
