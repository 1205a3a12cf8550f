"""OTLP export: one OpenTelemetry LogRecord per new signature, for a collector.

``kassist watch --otlp-endpoint http://collector:4318/v1/logs`` POSTs each new
signature's announcement (the hooks' ``kassist.watch/1`` document) as an OTLP/HTTP
``ExportLogsServiceRequest`` (protobuf; the wire types of ``opentelemetry-proto``):

- ``body``: the crash's title;
- ``severity_number``/``severity_text``: from the kernel's level of the report's header
  line (:data:`probes.logs.otlp.SEVERITY_OF_LEVEL`), ``ERROR`` when the source had none;
- attributes ``kernel.crash.signature``, ``kernel.crash.type``,
  ``kernel.crash.guilty_frame``, ``kernel.crash.taint``, ``host.name``,
  ``os.kernel.release``, and ``kernel.crash.same_as`` / ``kernel.crash.same_as.evidence``
  where the store linked it to a signature that is probably the same bug;
- ``time_unix_nano``: when the kernel crashed (where the source told), else when stored.

Deliveries run in the hooks' thread, retried with backoff (:mod:`assistant.watch.background`).
"""

from __future__ import annotations

import time
from typing import Any

from probes.logs.otlp import SEVERITY_OF_LEVEL

#: The severity of a new signature whose level the source did not give.
DEFAULT_SEVERITY = 17  # ERROR
_SEVERITY_TEXT = {21: "FATAL", 19: "ERROR3", 18: "ERROR2", 17: "ERROR", 13: "WARN",
                  10: "INFO2", 9: "INFO", 5: "DEBUG"}  # fmt: skip


def otlp_request(doc: dict[str, Any]) -> bytes:
    """Return the OTLP/HTTP body (protobuf) for one ``kassist.watch/1`` announcement."""
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2
    from opentelemetry.proto.logs.v1 import logs_pb2
    from opentelemetry.proto.resource.v1 import resource_pb2

    crash = doc.get("crash") or {}
    kernel = crash.get("kernel") or {}
    same = crash.get("same_as") or {}
    level = doc.get("level")
    severity = (
        SEVERITY_OF_LEVEL.get(level, DEFAULT_SEVERITY)
        if isinstance(level, int)
        else (DEFAULT_SEVERITY)
    )
    attrs = {
        "kernel.crash.signature": crash.get("signature"),
        "kernel.crash.type": crash.get("type"),
        "kernel.crash.guilty_frame": crash.get("frame"),
        "kernel.crash.taint": "".join(kernel.get("tainted") or []) or None,
        "host.name": doc.get("host"),
        "os.kernel.release": kernel.get("release") or doc.get("release"),
        "kernel.crash.same_as": same.get("signature"),
        "kernel.crash.same_as.evidence": same.get("why"),
    }

    def kv(key: str, value: str) -> common_pb2.KeyValue:
        return common_pb2.KeyValue(key=key, value=common_pb2.AnyValue(string_value=value))

    wall = (crash.get("time") or {}).get("wall")
    stamp = int((wall if isinstance(wall, (int, float)) else time.time()) * 1e9)
    record = logs_pb2.LogRecord(
        time_unix_nano=stamp,
        observed_time_unix_nano=int(time.time() * 1e9),
        severity_number=logs_pb2.SeverityNumber.ValueType(severity),
        severity_text=_SEVERITY_TEXT.get(severity, "ERROR"),
        body=common_pb2.AnyValue(string_value=str(crash.get("title", ""))),
        attributes=[kv(k, str(v)) for k, v in attrs.items() if v not in (None, "")],
    )
    request = logs_service_pb2.ExportLogsServiceRequest(
        resource_logs=[
            logs_pb2.ResourceLogs(
                resource=resource_pb2.Resource(attributes=[kv("service.name", "kassist")]),
                scope_logs=[
                    logs_pb2.ScopeLogs(
                        scope=common_pb2.InstrumentationScope(name="kassist.watch"),
                        log_records=[record],
                    )
                ],
            )
        ]
    )
    return bytes(request.SerializeToString())
