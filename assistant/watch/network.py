"""The network sources of ``kassist watch``: netconsole, syslog and OTLP receivers.

Each is a :class:`~assistant.watch.stream.StreamSource` whose records come from many
hosts: a :class:`~probes.logs.netrecv.Receiver` hands out messages fairly and within
bounds, a decoder of :mod:`probes.logs` turns them into records, and the source's
``split`` gives the daemon each record's host (its triage engine and the host its crashes
are stored under), the store's source name, and its lane (the CPU that printed it).

Several ``kassist watch`` processes may listen on one address (``SO_REUSEPORT``): the
kernel sends each sender to one of them, always the same.

Who may send: a source without an address listens on loopback only; one that listens
beyond this host needs ``--allow-from`` (the senders' networks), or ``kassist watch``
stops before it starts. Datagrams and connections from other addresses are dropped unread
and counted (``not_allowed``). A syslog or OTLP record names its own host: every sender
in the allowlist (a host, or a relay that forwards others' records) is trusted to.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from assistant.errors import InputError
from assistant.watch.spool import Spool
from assistant.watch.stream import NETWORK_KINDS, SourceSpec, StreamContext, StreamSource
from probes.errors import ProbeUnavailable
from probes.logs.netconsole import NetconsoleDecoder
from probes.logs.netrecv import Allow, Message, Receiver, tcp_listener, udp_listener
from probes.logs.records import LogRecord
from probes.logs.syslog import SyslogDecoder, SyslogFramer

#: Seconds between two flushes of what a decoder holds back (a ``c`` record, fragments).
FLUSH_SECONDS = 0.25
_ADDRESS = re.compile(r"(?:(?P<host>\[[0-9a-fA-F:.]+\]|[0-9.]+|[A-Za-z0-9.-]+):)?(?P<port>\d{1,5})")


def listen_address(spec: SourceSpec) -> tuple[str, int]:
    """Return the ``(address, port)`` a network ``--source`` listens on: ``PORT`` (loopback,
    127.0.0.1) or ``ADDRESS:PORT`` (``127.0.0.1:6666``, ``[::1]:6666``); port 0 lets the
    kernel choose one (logged).

    :raises InputError: the port is not 0..65535.
    """
    m = _ADDRESS.fullmatch(spec.arg)
    port = int(m.group("port")) if m else -1
    if m is None or not 0 <= port < 65536:
        raise InputError(f"watch: {spec.text}: not [ADDRESS:]PORT", "give a port, e.g. 6666")
    host = (m.group("host") or "127.0.0.1").strip("[]")
    return host, port


def allowlist(specs: list[SourceSpec], allow_from: tuple[str, ...]) -> Allow:
    """Check the network sources against ``--allow-from`` and return its networks.

    :raises InputError: a network is not ``ADDRESS[/PREFIX]``, or a source listens beyond
        loopback (``0.0.0.0``, ``::``, an interface's address) without ``--allow-from``:
        any host that reaches the port could send there (fail closed).
    """
    nets = []
    for text in allow_from:
        try:
            nets.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise InputError(f"watch: --allow-from {text}: not a network",
                             "give ADDRESS[/PREFIX], e.g. 10.0.0.0/8") from None  # fmt: skip
    for spec in specs:
        if spec.kind not in NETWORK_KINDS or nets:
            continue
        host, _port = listen_address(spec)
        try:
            local = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = False
        if not local:
            raise InputError(
                f"watch: {spec.text} listens beyond this host with no --allow-from",
                "give --allow-from CIDR (the senders' networks, repeatable), "
                "or listen on 127.0.0.1",
            )
    return tuple(nets)


def _listen(spec: SourceSpec, ctx: StreamContext, open_: Callable[[str, int], Any],
            port: int | None = None) -> Any:  # fmt: skip
    host, asked = listen_address(spec)
    try:
        sock = open_(host, asked if port is None else port)
        ctx.log(f"{spec.text}: listening on {host}:{sock.getsockname()[1]}")
        return sock
    except OSError as exc:
        raise ProbeUnavailable(
            f"{spec.text}: cannot listen on {host}:{port}: {exc.strerror or exc}",
            "choose a free port (below 1024 needs root)",
        ) from None


def _counters(*parts: Any) -> Callable[[], dict[str, int]]:
    def read() -> dict[str, int]:
        out: dict[str, int] = {}
        for part in parts:
            for key, value in asdict(part).items():
                if isinstance(value, int) and not isinstance(value, bool):
                    out[key] = out.get(key, 0) + value
        return out

    return read


def spool_of(spec: SourceSpec, ctx: StreamContext) -> Spool | None:
    """Return a network source's spool (:mod:`assistant.watch.spool`), or ``None``."""
    return None if ctx.spool_dir is None else Spool(ctx.spool_dir, spec.text)


def _spooled(records: list[LogRecord], position: int | None, sender: str) -> list[LogRecord]:
    # Each record's spool position and the address it came from.
    for rec in records:
        rec.spool, rec.sender = position, sender
    return records


def _stream(
    spec: SourceSpec,
    ctx: StreamContext,
    receiver: Receiver,
    decode: Callable[[Message], list[LogRecord]],
    flush: Callable[[int | None], list[LogRecord]],
    spool: Spool | None = None,
) -> Callable[[Callable[[], bool], Callable[[], None]], Iterator[LogRecord]]:
    def records(stop: Callable[[], bool], idle: Callable[[], None]) -> Iterator[LogRecord]:
        # What a killed receiver held: the spool from the saved position (none saved: all
        # of it; a report read twice is stored once).
        since = ctx.resume.get(spec.text, 0)
        if spool is not None and isinstance(since, int):
            for at, old in spool.replay(since):
                yield from _spooled(decode(old), at, old.peer)

        def spooled() -> None:  # on disk before its records are handed on
            if spool is not None:
                spool.flush()
            idle()

        last = time.monotonic()
        for msg in receiver.messages(stop, spooled, ctx.poll_interval):
            if msg is not None:
                position = None if spool is None else spool.append(msg)
                yield from _spooled(decode(msg), position, msg.peer)
            now = time.monotonic()
            if now - last >= FLUSH_SECONDS:
                last = now
                yield from flush(int(time.time() * 1e6))
        yield from flush(None)
        if spool is not None:
            spool.close()

    return records


def netconsole_lane(rec: LogRecord) -> tuple[str, str, str]:
    """Split a netconsole record: its host, ``netconsole:RELEASE`` and its CPU."""
    release = rec.dictionary.get("release", "")
    stream = f"netconsole:{release}" if release else "netconsole"
    cpu = "" if rec.caller_cpu is None else str(rec.caller_cpu)
    return rec.host or "", stream, cpu


def netconsole_source(spec: SourceSpec, ctx: StreamContext) -> StreamSource:
    """Receive netconsole (extended or plain) on a UDP port."""
    receiver = Receiver(udp=[_listen(spec, ctx, udp_listener)], allow=ctx.allow)
    decoder = NetconsoleDecoder()

    def decode(msg: Message) -> list[LogRecord]:
        return decoder.feed(msg.payload, msg.peer, msg.port, msg.arrival_us)

    def flush(now_us: int | None) -> list[LogRecord]:
        out = decoder.flush(now_us)
        if now_us is None:  # the end: what is still missing never came
            decoder.settle()
        return out

    spool = spool_of(spec, ctx)
    return StreamSource(
        spec.text, "netconsole", _stream(spec, ctx, receiver, decode, flush, spool),
        batched=True, clock="netconsole", split=netconsole_lane,
        counters=_counters(decoder.stats, receiver.stats), backlog=receiver.queue.__len__,
        spool=spool,
    )  # fmt: skip


def syslog_lane(rec: LogRecord) -> tuple[str, str, str]:
    """Split a syslog record: its host (from the record), ``syslog``, one lane."""
    return rec.host or "", "syslog", ""


def syslog_source(spec: SourceSpec, ctx: StreamContext) -> StreamSource:
    """Receive syslog (RFC 5424 and 3164) on a UDP and a TCP port of the same number."""
    udp = _listen(spec, ctx, udp_listener)
    try:  # TCP on the UDP socket's port (the one the kernel chose, for port 0)
        tcp = _listen(spec, ctx, tcp_listener, udp.getsockname()[1])
    except ProbeUnavailable:
        udp.close()
        raise
    receiver = Receiver(udp=[udp], tcp=[(tcp, SyslogFramer)], allow=ctx.allow)
    decoder = SyslogDecoder()

    def decode(msg: Message) -> list[LogRecord]:
        return decoder.feed(msg.payload, msg.peer, msg.arrival_us)

    def flush(now_us: int | None) -> list[LogRecord]:
        return []

    spool = spool_of(spec, ctx)
    return StreamSource(
        spec.text, "syslog", _stream(spec, ctx, receiver, decode, flush, spool), batched=True,
        clock="syslog", split=syslog_lane, counters=_counters(decoder.stats, receiver.stats),
        backlog=receiver.queue.__len__, spool=spool,
    )  # fmt: skip


def otlp_source(spec: SourceSpec, ctx: StreamContext) -> StreamSource:
    """Receive OTLP/HTTP logs (``POST /v1/logs``, protobuf or JSON) on a TCP port."""
    from probes.logs.otlp import OtlpReceiver

    host, port = listen_address(spec)
    try:
        server = OtlpReceiver(host, port, allow=ctx.allow)
        ctx.log(f"{spec.text}: listening on {host}:{server.port}")
    except OSError as exc:
        raise ProbeUnavailable(
            f"{spec.text}: cannot listen on {host}:{port}: {exc.strerror or exc}",
            "choose a free port",
        ) from None
    receiver = Receiver(queue=server.queue)

    def decode(msg: Message) -> list[LogRecord]:
        return server.decode(msg)

    def flush(now_us: int | None) -> list[LogRecord]:
        if now_us is None:
            server.close()
        return []

    return StreamSource(
        spec.text, "otlp", _stream(spec, ctx, receiver, decode, flush), batched=True,
        clock="otlp", split=lambda r: (r.host or "", "otlp", ""),
        counters=_counters(server.stats, receiver.stats), backlog=receiver.queue.__len__,
    )  # fmt: skip
