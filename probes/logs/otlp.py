"""OTLP/HTTP logs: kernel records forwarded by an OpenTelemetry Collector, Vector or
Fluent Bit, read back into kernel log records; and the syslog-to-OTLP severity table.

:class:`OtlpReceiver` serves ``POST /v1/logs`` (OTLP/HTTP, protobuf
``application/x-protobuf`` or JSON ``application/json``; the wire types come from the
``opentelemetry-proto`` package). A request is checked whole before it is accepted
(a body over :data:`MAX_BODY` bytes: 413; one that does not decode: 400); an accepted
one is queued in the receiver's fair queue (:mod:`probes.logs.netrecv`), or refused with
429 and ``Retry-After`` when its sender's share is full, so that the sender retries and
nothing is lost.

A record is the kernel's when an attribute says so: ``syslog.facility`` (or
``facility``, ``SYSLOG_FACILITY``) 0 or ``kern``; or, without one, ``service.name`` /
the record's ``app`` ``kernel``. The host is the resource's ``host.name`` (the sender's
address without one), the release ``os.kernel.release`` (or ``host.kernel.release``),
the wall time ``time_unix_nano`` (else ``observed_time_unix_nano``), the printk stamp a
``[   12.345678]`` prefix of the body, when there is one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from probes.logs.netrecv import Allow, FairQueue, Message, allowed
from probes.logs.records import LogRecord
from probes.printk_time import split_stamp

#: Bytes of one request body at most.
MAX_BODY = 4 << 20
#: Seconds a refused sender is told to wait (``Retry-After``).
RETRY_AFTER = 1
#: syslog level (0 emerg .. 7 debug) -> OTLP ``SeverityNumber`` (the OpenTelemetry
#: specification's syslog mapping).
SEVERITY_OF_LEVEL: dict[int, int] = {0: 21, 1: 19, 2: 18, 3: 17, 4: 13, 5: 10, 6: 9, 7: 5}
#: OTLP ``SeverityNumber`` ranges -> syslog level (the first row at or below the number).
_LEVEL_OF_SEVERITY: tuple[tuple[int, int], ...] = (
    (21, 0), (19, 1), (18, 2), (17, 3), (13, 4), (10, 5), (9, 6), (1, 7),
)  # fmt: skip
_FACILITY_KEYS = ("syslog.facility", "facility", "SYSLOG_FACILITY")
_KERNEL_NAMES = {"0", "kern", "kernel"}


@dataclass
class OtlpStats:
    """Counters of the OTLP receiver.

    :param requests: requests accepted.
    :param records: log records read.
    :param malformed: requests that did not decode (400).
    :param too_large: requests over :data:`MAX_BODY` (413).
    :param refused: requests refused while their sender's queue was full (429).
    :param not_kernel: records no attribute marks as the kernel's.
    :param not_allowed: connections from a sender outside ``--allow-from``, closed unread.
    """

    requests: int = 0
    records: int = 0
    malformed: int = 0
    too_large: int = 0
    refused: int = 0
    not_kernel: int = 0
    not_allowed: int = 0


def _wire() -> tuple[Any, Any]:
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    return logs_service_pb2.ExportLogsServiceRequest, logs_service_pb2.ExportLogsServiceResponse


def decode_request(body: bytes, content_type: str) -> Any:
    """Decode an OTLP logs request (protobuf, or JSON by its content type).

    :raises ValueError: it does not decode.
    """
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError

    request_type, _ = _wire()
    request = request_type()
    try:
        if "json" in content_type:
            json_format.Parse(body.decode("utf-8"), request)
        else:
            request.ParseFromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(str(exc)[:200]) from None
    return request


def _value(v: Any) -> str | None:
    kind = v.WhichOneof("value")
    if kind in ("string_value", "int_value", "bool_value", "double_value"):
        return str(getattr(v, kind))
    return None


def _attrs(kvs: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in list(kvs)[:64]:
        value = _value(kv.value)
        if value is not None:
            out[kv.key[:64]] = value[:256]
    return out


def level_of(severity_number: int) -> int | None:
    """Return the syslog level of an OTLP severity number (``None`` for unspecified)."""
    if severity_number <= 0:
        return None
    return next(level for floor, level in _LEVEL_OF_SEVERITY if severity_number >= floor)


def records_of(request: Any, peer: str, now_us: int, stats: OtlpStats) -> list[LogRecord]:
    """Turn a decoded request into kernel log records (the facility set from attributes:
    see the module doc)."""
    out: list[LogRecord] = []
    for rl in request.resource_logs:
        resource = _attrs(rl.resource.attributes)
        host = resource.get("host.name") or peer
        release = resource.get("os.kernel.release") or resource.get("host.kernel.release")
        for sl in rl.scope_logs:
            for lr in sl.log_records:
                attrs = {**resource, **_attrs(lr.attributes)}
                body = _value(lr.body) or ""
                facility_text = next((attrs[k] for k in _FACILITY_KEYS if k in attrs), None)
                if facility_text is not None:
                    kernel = facility_text.lower() in _KERNEL_NAMES
                else:
                    kernel = (attrs.get("service.name") or attrs.get("app")) == "kernel"
                stats.not_kernel += not kernel
                ts_us, body = split_stamp(body)
                wall = lr.time_unix_nano or lr.observed_time_unix_nano
                rec = LogRecord(
                    text=body,
                    source=f"otlp:{host}",
                    level=level_of(lr.severity_number),
                    facility=0 if kernel else 1,
                    ts_us=ts_us,
                    realtime_us=wall // 1000 if wall else now_us,
                    host=host,
                )
                if release:
                    rec.dictionary["release"] = release
                out.append(rec)
    stats.records += len(out)
    return out


class OtlpReceiver:
    """An OTLP/HTTP logs endpoint on ``host:port`` whose requests wait in :attr:`queue`.

    :param allow: the sender networks accepted (empty: all); others are closed unread.
    :raises OSError: it cannot listen there.
    """

    def __init__(
        self, host: str, port: int, queue: FairQueue | None = None, allow: Allow = ()
    ) -> None:
        self.queue = queue if queue is not None else FairQueue()
        self.stats = OtlpStats()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._post(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                if allowed(str(client_address[0]), allow):
                    return True
                receiver.stats.not_allowed += 1
                return False

        self._server = Server((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="otlp")  # fmt: skip
        self._thread.start()

    def _post(self, h: BaseHTTPRequestHandler) -> None:
        if h.path.rstrip("/") != "/v1/logs":
            self._answer(h, 404)
            return
        length_text = h.headers.get("Content-Length", "")
        if not length_text.isdigit():
            self._answer(h, 411)
            return
        length = int(length_text)
        if length > MAX_BODY:
            self.stats.too_large += 1
            self._answer(h, 413)
            return
        body = h.rfile.read(length)
        content_type = h.headers.get("Content-Type", "application/x-protobuf")
        try:
            decode_request(body, content_type)
        except ValueError:
            self.stats.malformed += 1
            self._answer(h, 400)
            return
        peer = str(h.client_address[0])
        kind = "json" if "json" in content_type else "protobuf"
        if not self.queue.push(Message(peer, body, int(time.time() * 1e6), kind)):
            self.stats.refused += 1
            self._answer(h, 429)
            return
        self.stats.requests += 1
        self._answer(h, 200, kind)

    def _answer(self, h: BaseHTTPRequestHandler, code: int, kind: str = "protobuf") -> None:
        _, response_type = _wire()
        body = b"{}" if kind == "json" else response_type().SerializeToString()
        h.send_response(code)
        h.send_header("Content-Type", "application/json" if kind == "json" else
                      "application/x-protobuf")  # fmt: skip
        if code == 429:
            h.send_header("Retry-After", str(RETRY_AFTER))
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def decode(self, msg: Message) -> list[LogRecord]:
        """Read the records of a request this endpoint accepted."""
        try:
            request = decode_request(msg.payload, msg.kind)
        except ValueError:
            return []
        return records_of(request, msg.peer, msg.arrival_us, self.stats)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
