"""netconsole: the kernel's last words over UDP, read back into kernel log records.

netconsole (``drivers/net/netconsole.c``, Documentation/networking/netconsole.rst) sends
each printk record as one UDP datagram. Two formats:

- **extended** (``netconsole=+...``): the /dev/kmsg record format,
  ``[release,]<prival>,<seq>,<ts_usec>,<flag>[,caller=..][,ncfrag=<off>/<total>];<text>``,
  the text's bytes below 0x20, above 0x7e and ``\\`` escaped as ``\\xNN``, then the
  record's dictionary lines (`` SUBSYSTEM=...``), then netconsole's userdata and sysdata
  lines (`` cpu=3``, `` taskname=kworker/3:1``, `` release=6.14.0``, `` msgid=42``), each
  after a raw newline. ``release,`` is there with ``r`` (``netconsole=+r...``). A record
  longer than :data:`MAX_CHUNK` bytes is sent in fragments, each with the header and
  ``ncfrag=<byte offset>/<total bytes>`` of the body (text and the lines after it).
- **plain**: the console's text as printed (``[   12.345678] text``), cut anywhere.

:class:`NetconsoleDecoder` turns datagrams into :class:`~probes.logs.LogRecord` s, with
all state keyed by the sender (address and port) and the kernel release:

- fragments are reassembled with the kernel's limits: a fragment with ``off >= total``,
  ``off + len > total`` or ``total >= 8192`` (:data:`MAX_TOTAL`), or one that overlaps
  another with other bytes, is refused and counted; one never completed (its peers lost)
  is given up after :data:`FRAGMENT_SECONDS` or when more than :data:`MAX_PARTIAL` wait;
- continuations are merged: a ``+`` record continues the one before (old kernels' ``c``
  then ``+`` fragments of one line);
- a sequence number that goes back (or a new release) is a reboot: the sender's state
  starts again;
- losses are counted from the sysdata ``msgid`` (one per message netconsole sent), apart
  from sequence numbers the kernel skipped (records it did not print on this console: a
  level above its loglevel); without ``msgid``, every sequence gap counts;
- each record carries its ``cpu`` (sysdata ``cpu=``, or a ``caller=C<n>``), so that
  reports that different CPUs printed at once can be told apart.

Parsing is pure: no socket here (:mod:`probes.logs.netrecv` receives).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass, field

from probes.logs.records import LogRecord, utf8
from probes.printk_time import split_stamp

#: Bytes of one netconsole datagram (``MAX_PRINT_CHUNK``).
MAX_CHUNK = 1000
#: A fragmented message's body must be shorter than this (the kernel's
#: ``CONSOLE_EXT_LOG_MAX``): larger totals are refused.
MAX_TOTAL = 8192
#: Seconds an incomplete fragmented message is waited for.
FRAGMENT_SECONDS = 10.0
#: Incomplete fragmented messages kept per sender at most (the oldest is given up).
MAX_PARTIAL = 16
#: Bytes of a plain-format line kept while its newline has not come.
MAX_PLAIN_LINE = 8192
#: Senders whose state is kept at most (the least recently heard is forgotten).
MAX_SENDERS = 65536
#: msgids remembered as missing, waiting for a late datagram, per sender.
REORDER_WINDOW = 256
#: A sequence number this far behind the last one is a reboot, not a late datagram.
REBOOT_SEQ_BACK = 1024

_HEADER = re.compile(
    rb"^(?:(?P<release>[^,;\s]{1,64}),)?(?P<prival>\d{1,4}),(?P<seq>\d{1,20}),"
    rb"(?P<ts>\d{1,20}),(?P<flag>[-c+])(?P<extra>(?:,[a-z_]+=[^,;]{0,64}){0,8});"
)
_ESCAPE = re.compile(rb"\\x([0-9a-fA-F]{2})")


@dataclass
class NetconsoleStats:
    """Counters of one decoder (every sender).

    :param datagrams: datagrams decoded.
    :param records: records handed on.
    :param plain: datagrams of the plain format.
    :param malformed: extended datagrams that could not be read (a header without its
        fields, a bad ``ncfrag``).
    :param fragments_refused: fragments outside the kernel's limits or overlapping others.
    :param fragments_incomplete: fragmented messages given up: a part never came.
    :param bad_escapes: ``\\`` not followed by ``xNN`` (kept as they were).
    :param invalid_utf8: records whose text was not UTF-8 (replaced with U+FFFD).
    :param lost: messages netconsole sent that never arrived (``msgid`` gaps, or sequence
        gaps without ``msgid``).
    :param late: datagrams that came after a later one (reordered), and were kept.
    :param not_sent: records the kernel skipped on this console (sequence gaps that are
        not losses: a level above the console's loglevel).
    :param reboots: senders seen starting again (sequence numbers back, a new release).
    :param duplicates: datagrams seen twice (the same sequence number, or ``msgid``).
    """

    datagrams: int = 0
    records: int = 0
    plain: int = 0
    malformed: int = 0
    fragments_refused: int = 0
    fragments_incomplete: int = 0
    bad_escapes: int = 0
    invalid_utf8: int = 0
    lost: int = 0
    late: int = 0
    not_sent: int = 0
    reboots: int = 0
    duplicates: int = 0


@dataclass
class ExtendedHeader:
    """The header of one extended datagram.

    :param release: ``uname -r`` of the sender's kernel, when it prepends it.
    :param prival: ``facility << 3 | level``.
    :param seq: printk's sequence number (``u64``).
    :param ts_us: printk's timestamp, microseconds since boot.
    :param flag: ``-``, ``c`` (continued by the next record) or ``+`` (continues one).
    :param fields: the extra ``key=value`` fields (``caller``, ``ncfrag``, ``ncemg``).
    """

    release: str | None
    prival: int
    seq: int
    ts_us: int
    flag: str
    fields: dict[str, str]

    @property
    def fragment(self) -> tuple[int, int] | None:
        """Return ``(offset, total)`` of a fragment, ``None`` for a whole message.

        :raises ValueError: ``ncfrag`` is not two numbers.
        """
        value = self.fields.get("ncfrag")
        if value is None:
            return None
        off, sep, total = value.partition("/")
        if not sep or not off.isdigit() or not total.isdigit():
            raise ValueError(value)
        return int(off), int(total)


def parse_header(data: bytes) -> tuple[ExtendedHeader, bytes] | None:
    """Split an extended datagram into its header and body; ``None`` if it is not one.

    >>> h, body = parse_header(b"6.1.0,4,12,3400,-,ncfrag=0/5;hello")
    >>> (h.release, h.prival, h.seq, h.ts_us, h.fragment, body)
    ('6.1.0', 4, 12, 3400, (0, 5), b'hello')
    """
    m = _HEADER.match(data)
    if m is None:
        return None
    extra = m.group("extra").decode("ascii", "replace")
    fields = dict(kv.split("=", 1) for kv in extra.split(",")[1:])
    release = m.group("release")
    header = ExtendedHeader(
        release=None if release is None else release.decode("ascii", "replace"),
        prival=int(m.group("prival")),
        seq=int(m.group("seq")),
        ts_us=int(m.group("ts")),
        flag=m.group("flag").decode(),
        fields=fields,
    )
    return header, data[m.end() :]


def unescape(data: bytes) -> tuple[bytes, int]:
    """Undo the kernel's ``\\xNN`` escapes; return the bytes and how many ``\\`` were
    not an escape (kept as they were).

    >>> unescape(rb"a\\x0ab\\x5c\\q")
    (b'a\\nb\\\\\\\\q', 1)
    """
    if b"\\" not in data:  # most lines: nothing escaped
        return data, 0
    bad = data.count(b"\\") - len(_ESCAPE.findall(data))
    return _ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), data), max(bad, 0)


@dataclass
class _Partial:
    header: ExtendedHeader
    total: int
    buf: bytearray
    ranges: list[tuple[int, int]]
    started: float

    def received(self) -> int:
        return sum(end - start for start, end in self.ranges)


@dataclass
class _Sender:
    """What is known of one sender (address and port) in one boot."""

    release: str | None = None
    last_seq: int | None = None
    last_ts: int | None = None
    last_msgid: int | None = None
    low_msgid: int | None = None  # the lowest msgid heard
    missing: OrderedDict[int, None] = field(default_factory=OrderedDict)
    partial: OrderedDict[int, _Partial] = field(default_factory=OrderedDict)
    held: LogRecord | None = None  # a ``c`` record waiting for its ``+`` continuation
    plain: bytearray = field(default_factory=bytearray)
    boot: int = 0

    def reset(self) -> None:
        """Start again: the sender rebooted (its records so far were handed on)."""
        self.release = self.last_seq = self.last_ts = self.last_msgid = self.held = None
        self.low_msgid = None
        self.missing.clear()
        self.partial.clear()
        self.plain.clear()
        self.boot += 1


class NetconsoleDecoder:
    """Turn netconsole datagrams from many senders into kernel log records.

    :param source: the records' ``source`` prefix (``netconsole``).
    """

    def __init__(self, source: str = "netconsole") -> None:
        self.source = source
        self.stats = NetconsoleStats()
        self._senders: OrderedDict[tuple[str, int], _Sender] = OrderedDict()

    # -- the entry points ----------------------------------------------------------------

    def feed(self, data: bytes, host: str, port: int, now_us: int) -> list[LogRecord]:
        """Decode one datagram from ``host:port`` that arrived at ``now_us`` (µs since
        the epoch); return the records it completed."""
        self.stats.datagrams += 1
        sender = self._sender(host, port)
        parsed = parse_header(data)
        if parsed is None:
            if _looks_extended(data):
                self.stats.malformed += 1
                return []
            self.stats.plain += 1
            return self._plain(sender, data, host, now_us)
        header, body = parsed
        try:
            fragment = header.fragment
        except ValueError:
            self.stats.malformed += 1
            return []
        if fragment is not None:
            whole = self._fragment(sender, header, fragment, body, now_us)
            if whole is None:
                return []
            body = whole
        return self._message(sender, header, body, host, now_us)

    def flush(self, now_us: int | None = None) -> list[LogRecord]:
        """Hand on what waits (a ``c`` record, a plain line without its newline) and give
        up fragments older than :data:`FRAGMENT_SECONDS` (all of them without ``now_us``)."""
        out: list[LogRecord] = []
        for (host, _port), sender in self._senders.items():
            for seq, p in list(sender.partial.items()):
                if now_us is None or now_us - p.started * 1e6 >= FRAGMENT_SECONDS * 1e6:
                    del sender.partial[seq]
                    self.stats.fragments_incomplete += 1
            if sender.held is not None:
                out.append(sender.held)
                sender.held = None
            if sender.plain:
                out.append(self._plain_record(bytes(sender.plain), host, now_us))
                sender.plain.clear()
        self.stats.records += len(out)
        return out

    # -- extended format --------------------------------------------------------------------

    def _sender(self, host: str, port: int) -> _Sender:
        key = (host, port)
        sender = self._senders.get(key)
        if sender is None:
            sender = self._senders[key] = _Sender()
            if len(self._senders) > MAX_SENDERS:
                self._senders.popitem(last=False)
        else:
            self._senders.move_to_end(key)
        return sender

    def _fragment(
        self,
        sender: _Sender,
        header: ExtendedHeader,
        fragment: tuple[int, int],
        chunk: bytes,
        now_us: int,
    ) -> bytes | None:
        off, total = fragment
        end = off + len(chunk)
        if total >= MAX_TOTAL or off >= total or end > total or not chunk:
            self.stats.fragments_refused += 1
            return None
        p = sender.partial.get(header.seq)
        if p is not None and p.total != total:
            self.stats.fragments_refused += 1
            return None
        if p is None:
            p = _Partial(header, total, bytearray(total), [], now_us / 1e6)
            sender.partial[header.seq] = p
            while len(sender.partial) > MAX_PARTIAL:
                sender.partial.popitem(last=False)
                self.stats.fragments_incomplete += 1
        for start, stop in p.ranges:
            if start < end and off < stop:  # overlaps a part we have
                if start == off and stop == end and bytes(p.buf[off:end]) == chunk:
                    self.stats.duplicates += 1
                    return None
                self.stats.fragments_refused += 1
                del sender.partial[header.seq]
                return None
        p.buf[off:end] = chunk
        p.ranges.append((off, end))
        if p.received() < total:
            return None
        del sender.partial[header.seq]
        return bytes(p.buf)

    def _message(
        self, sender: _Sender, header: ExtendedHeader, body: bytes, host: str, now_us: int
    ) -> list[LogRecord]:
        lines = body.split(b"\n")
        text_raw, bad = unescape(lines[0])
        dictionary: dict[str, str] = {}
        for line in lines[1:]:
            raw, more = unescape(line.strip())
            bad += more
            key, sep, value = raw.decode("utf-8", "replace").partition("=")
            if sep and key and len(dictionary) < 32:
                dictionary[key[:64]] = value[:256]
        self.stats.bad_escapes += bad
        text, valid = utf8(text_raw)
        self.stats.invalid_utf8 += not valid
        release = header.release or dictionary.get("release")
        out = self._order(sender, header, release, dictionary)
        if out is None:
            return []
        caller = header.fields.get("caller", "")
        cpu_text = dictionary.get("cpu") or (caller[1:] if caller.startswith("C") else "")
        rec = LogRecord(
            text=text,
            source=f"{self.source}:{host}",
            seq=header.seq,
            level=header.prival & 7,
            facility=header.prival >> 3,
            ts_us=header.ts_us,
            continuation=header.flag == "+",
            dictionary=dictionary,
            caller_tid=int(caller[1:]) if caller.startswith("T") and caller[1:].isdigit() else None,
            caller_cpu=int(cpu_text) if cpu_text.isdigit() else None,
            realtime_us=now_us,
            host=host,
        )
        if release is not None:
            rec.dictionary.setdefault("release", release)
        rec.dictionary["boot"] = str(sender.boot)
        return out + self._continue(sender, rec, header.flag)

    def _continue(self, sender: _Sender, rec: LogRecord, flag: str) -> list[LogRecord]:
        # Old kernels sent one line in pieces: ``c`` for the first, ``+`` for the rest.
        out: list[LogRecord] = []
        if flag == "+" and sender.held is not None:
            sender.held.text += rec.text
            return out
        if sender.held is not None:
            out.append(sender.held)
            sender.held = None
        if flag == "c":
            sender.held = rec
        else:
            out.append(rec)
        self.stats.records += len(out)
        return out

    def _order(
        self,
        sender: _Sender,
        header: ExtendedHeader,
        release: str | None,
        dictionary: dict[str, str],
    ) -> list[LogRecord] | None:
        # A reboot (sequence numbers back, or another release), losses and late datagrams.
        # Returns the records to hand on before this one (a reboot flushes), or ``None``
        # for a duplicate.
        out: list[LogRecord] = []
        seq = header.seq
        rebooted = sender.last_seq is not None and (
            (release is not None and sender.release is not None and release != sender.release)
            or seq + REBOOT_SEQ_BACK < sender.last_seq
            or (seq < sender.last_seq and sender.last_ts is not None
                and header.ts_us + 1_000_000 < sender.last_ts and seq < REBOOT_SEQ_BACK)
        )  # fmt: skip
        if rebooted:
            self.stats.reboots += 1
            if sender.held is not None:
                out.append(sender.held)
                self.stats.records += 1
            sender.reset()
        sender.release = release or sender.release
        msgid_text = dictionary.get("msgid", "")
        msgid = int(msgid_text) if msgid_text.isdigit() else None
        if msgid is not None:
            before = sender.last_msgid
            if not self._count_msgid(sender, msgid):
                return None
            if before is not None and sender.last_seq is not None and msgid > before:
                # seq counts every record, msgid what netconsole sent: the difference is
                # what the kernel did not print here (a level above the console's).
                self.stats.not_sent += max(0, (seq - sender.last_seq) - (msgid - before))
        elif sender.last_seq is not None:
            if seq == sender.last_seq:
                self.stats.duplicates += 1
                return None
            if seq > sender.last_seq + 1:
                for s in range(sender.last_seq + 1, min(seq, sender.last_seq + 1 + REORDER_WINDOW)):
                    sender.missing[s] = None
                self.stats.lost += max(0, seq - sender.last_seq - 1 - REORDER_WINDOW)
                self._trim(sender)
            elif seq < sender.last_seq:
                if seq in sender.missing:
                    del sender.missing[seq]
                    self.stats.late += 1
                    return out
                self.stats.duplicates += 1
                return None
        if sender.last_seq is None or seq > sender.last_seq:
            sender.last_seq = seq
            sender.last_ts = header.ts_us
        return out

    def _count_msgid(self, sender: _Sender, msgid: int) -> bool:
        # msgid counts the messages netconsole sent: a gap is a loss, unless the missing
        # one arrives late. Returns False for a duplicate.
        last = sender.last_msgid
        if last is None and 1 < msgid <= REORDER_WINDOW:
            # A sender heard from (nearly) its start: msgids count from 1, so the ones
            # before the first heard are missing too (unless they come late).
            for m in range(1, msgid):
                sender.missing[m] = None
            sender.low_msgid = 1
        if last is None or msgid == last + 1:
            sender.last_msgid = msgid
            sender.low_msgid = msgid if sender.low_msgid is None else sender.low_msgid
            return True
        if sender.low_msgid is not None and msgid < sender.low_msgid:
            # Older than the first one heard (reordered at the start): late, not lost.
            for m in range(msgid + 1, sender.low_msgid):
                sender.missing[m] = None
            sender.low_msgid = msgid
            self.stats.late += 1
            self._trim(sender)
            return True
        if msgid > last + 1:
            for m in range(last + 1, min(msgid, last + 1 + REORDER_WINDOW)):
                sender.missing[m] = None
            self.stats.lost += max(0, msgid - last - 1 - REORDER_WINDOW)
            sender.last_msgid = msgid
            self._trim(sender)
            return True
        if msgid in sender.missing:
            del sender.missing[msgid]
            self.stats.late += 1
            return True
        self.stats.duplicates += 1
        return False

    def _trim(self, sender: _Sender) -> None:
        while len(sender.missing) > REORDER_WINDOW:
            sender.missing.popitem(last=False)
            self.stats.lost += 1

    def settle(self) -> int:
        """Count every message still missing as lost (the senders went quiet); return the
        number of losses so far."""
        for sender in self._senders.values():
            self.stats.lost += len(sender.missing)
            sender.missing.clear()
        return self.stats.lost

    # -- plain format -----------------------------------------------------------------------

    def _plain(self, sender: _Sender, data: bytes, host: str, now_us: int) -> list[LogRecord]:
        sender.plain += data
        out: list[LogRecord] = []
        while True:
            nl = sender.plain.find(b"\n")
            if nl == -1:
                break
            out.append(self._plain_record(bytes(sender.plain[:nl]), host, now_us))
            del sender.plain[: nl + 1]
        if len(sender.plain) > MAX_PLAIN_LINE:
            out.append(self._plain_record(bytes(sender.plain), host, now_us))
            sender.plain.clear()
        self.stats.records += len(out)
        return out

    def _plain_record(self, raw: bytes, host: str, now_us: int | None) -> LogRecord:
        line, valid = utf8(raw.rstrip(b"\r"))
        self.stats.invalid_utf8 += not valid
        ts_us, text = split_stamp(line)
        # The plain format carries no facility: only the kernel writes to the console.
        return LogRecord(text=text, source=f"{self.source}:{host}", ts_us=ts_us,
                         realtime_us=now_us, host=host)  # fmt: skip


def _looks_extended(data: bytes) -> bool:
    # A datagram that starts like an extended header (digits and commas before a ``;``)
    # but did not parse is damaged, not plain console text.
    head = data[:120]
    semi = head.find(b";")
    return semi > 0 and re.fullmatch(rb"(?:[^,;\s]{1,64},)?\d+,\d+,[^;]*", head[:semi]) is not None
