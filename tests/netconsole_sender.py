"""A netconsole sender that speaks the kernel's wire format byte for byte.

It formats records as ``drivers/net/netconsole.c`` (with ``kernel/printk``'s extended
header) does: ``[release,]<prival>,<seq>,<ts_usec>,<flag>;<text>`` with the text's bytes
below 0x20, above 0x7e and ``\\`` escaped as ``\\xNN``, dictionary lines after raw
newlines, netconsole's sysdata lines (`` cpu=``, `` taskname=``, `` release=``,
`` msgid=``), and, past ``MAX_PRINT_CHUNK`` (1000) bytes, fragments with
``,ncfrag=<offset>/<total>`` inserted into the header (the body cut at 1000 bytes a
datagram, header included). It can drop, reorder and duplicate datagrams and reboot.
"""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass, field

MAX_PRINT_CHUNK = 1000


def escape(text: bytes) -> bytes:
    """Escape a record's text as printk's ``msg_add_ext_text`` does."""
    return b"".join(
        b"\\x%02x" % c if c < 0x20 or c >= 0x7F or c == 0x5C else bytes([c]) for c in text
    )


def datagrams(
    text: bytes,
    *,
    seq: int,
    ts_us: int,
    level: int = 4,
    facility: int = 0,
    flag: str = "-",
    release: str | None = None,
    dictionary: dict[str, str] | None = None,
    sysdata: dict[str, str] | None = None,
) -> list[bytes]:
    """Return the datagrams netconsole sends for one record (fragmented past 1000 bytes)."""
    header = b"%d,%d,%d,%s" % ((facility << 3) | level, seq, ts_us, flag.encode())
    body = escape(text) + b"\n"
    for k, v in (dictionary or {}).items():
        body += b" " + escape(f"{k}={v}".encode()) + b"\n"
    for k, v in (sysdata or {}).items():
        body += f" {k}={v}\n".encode()
    prefix = (release.encode() + b",") if release else b""
    if len(prefix) + len(header) + 1 + len(body) <= MAX_PRINT_CHUNK:
        return [prefix + header + b";" + body]
    out = []
    offset = 0
    while offset < len(body):
        this_header = prefix + header + b",ncfrag=%d/%d;" % (offset, len(body))
        chunk = body[offset : offset + MAX_PRINT_CHUNK - len(this_header)]
        out.append(this_header + chunk)
        offset += len(chunk)
    return out


@dataclass
class NetconsoleSender:
    """One host's netconsole: its own UDP socket (source port), sequence numbers, msgids.

    :param target: the receiver's (address, port).
    :param release: prepended (``netconsole=+r``) when ``prepend_release``; also sysdata.
    :param sysdata: send ``cpu``/``taskname``/``release``/``msgid`` lines.
    :param extended: the extended format; ``False``: the plain console text.
    """

    target: tuple[str, int]
    release: str = "6.1.0-21-amd64"
    prepend_release: bool = True
    sysdata: bool = True
    extended: bool = True
    seq: int = 100
    msgid: int = 0
    ts_us: int = 5_000_000
    sent: list[bytes] = field(default_factory=list)
    dropped: int = 0
    source: tuple[str, int] = ("127.0.0.1", 0)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(self.source)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def record(self, text: str | bytes, *, cpu: int = 0, level: int = 4, flag: str = "-",
               task: str = "swapper/0", dictionary: dict[str, str] | None = None,
               skip_seq: int = 0) -> list[bytes]:  # fmt: skip
        """Return the datagrams of the next record (not sent)."""
        data = text.encode() if isinstance(text, str) else text
        self.seq += 1 + skip_seq
        self.ts_us += 1000
        if not self.extended:
            line = b"[%5d.%06d] " % divmod(self.ts_us, 1_000_000) + data + b"\n"
            return [line[i : i + MAX_PRINT_CHUNK] for i in range(0, len(line), MAX_PRINT_CHUNK)]
        self.msgid += 1
        sys = (
            {"cpu": str(cpu), "taskname": task, "release": self.release, "msgid": str(self.msgid)}
            if self.sysdata
            else None
        )
        return datagrams(
            data, seq=self.seq, ts_us=self.ts_us, level=level, flag=flag,
            release=self.release if self.prepend_release else None,
            dictionary=dictionary, sysdata=sys,
        )  # fmt: skip

    def send(self, packets: list[bytes]) -> None:
        """Send datagrams as they are."""
        for p in packets:
            self.sock.sendto(p, self.target)
            self.sent.append(p)

    def lines(self, lines: list[str], *, cpu: int = 0, drop: float = 0.0,
              rng: random.Random | None = None) -> None:  # fmt: skip
        """Send one record per line; drop each *record* with probability ``drop`` (counted)."""
        for line in lines:
            packets = self.record(line, cpu=cpu)
            if drop and rng is not None and rng.random() < drop:
                self.dropped += 1
                continue
            self.send(packets)

    def reboot(self, release: str | None = None) -> None:
        """Start again: sequence numbers and msgids from the start, the clock from zero."""
        self.seq, self.msgid, self.ts_us = 0, 0, 1_000_000
        self.release = release or self.release
