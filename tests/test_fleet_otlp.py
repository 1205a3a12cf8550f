"""OTLP in and out of ``kassist watch`` (issue 26 item 1).

In: the OpenTelemetry SDK's own OTLP/HTTP exporter (a ``LoggingHandler`` on a Python
logger, as a collector pipeline would forward kernel lines) sends to the receiver on
loopback; the crash is stored under the resource's ``host.name``, records no attribute
marks as the kernel's are left out, bad requests are refused with their status.
Out: a real HTTP server on loopback receives the export, decoded with
``opentelemetry-proto``: one LogRecord per new signature, with the issue's attributes
and the same-bug link.
"""

from __future__ import annotations

import logging
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx

from tests.conftest import DATA, HANG_S, wait_until
from tests.fleet_support import hits, metric, receiver
from tests.watch_support import REAL_WATCH, WatchProcess, oops_lines


def _sdk_logger(port: int, host: str) -> tuple[logging.Logger, Any]:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(
        resource=Resource.create({"host.name": host, "os.kernel.release": "6.1.0-21-amd64"})
    )
    exporter = OTLPLogExporter(endpoint=f"http://127.0.0.1:{port}/v1/logs", timeout=HANG_S)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger(f"kassist-otlp-test-{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(LoggingHandler(level=logging.DEBUG, logger_provider=provider))
    return logger, provider


def test_the_sdks_exporter_feeds_the_receiver(tmp_path: Path) -> None:
    watch, port = receiver(tmp_path, "otlp:127.0.0.1:0")
    logger, provider = _sdk_logger(port, "otel-host")
    try:
        for line in oops_lines("otlp"):
            logger.warning(line, extra={"syslog.facility": 0})
        for line in oops_lines("otlpuser"):  # user space's: no kernel facility
            logger.warning(line, extra={"syslog.facility": 1})
        url = f"http://127.0.0.1:{port}/v1/logs"
        bad = httpx.post(url, content=b"\xff\x00garbage", timeout=HANG_S,
                         headers={"Content-Type": "application/x-protobuf"})  # fmt: skip
        assert bad.status_code == 400
        json_ok = httpx.post(url, content=b"{}", timeout=HANG_S,
                             headers={"Content-Type": "application/json"})  # fmt: skip
        assert json_ok.status_code == 200
        wait_until(
            lambda: hits(watch.db), "the OTLP records' oops stored", context=watch.log.read_text
        )
    finally:
        provider.shutdown()
        watch.stop()
    rows = hits(watch.db)
    assert [(r["host"], r["source"]) for r in rows] == [("otel-host", "otlp")]
    assert "kassist_wotlp_level3" in rows[0]["title"]
    counted = metric(tmp_path, "kassist_watch_network_total")
    assert counted["otlp:malformed"] == 1
    assert counted["otlp:not_kernel"] == len(oops_lines("x"))


class _Collector(BaseHTTPRequestHandler):
    bodies: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_each_new_signature_is_exported_as_one_log_record(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    _Collector.bodies = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    log = tmp_path / "console.log"
    read = (DATA / "kasan-uaf-ip6_send_skb.log").read_text()
    write = read.replace("Read of size", "Write of size")  # another title, the same stack
    log.write_text(read + read + write)
    try:
        watch = WatchProcess(
            tmp_path, "--once", "--host", "exp-host", "--otlp-endpoint",
            f"http://127.0.0.1:{server.server_address[1]}/v1/logs",
            sources=(f"file:{log}",), command=REAL_WATCH,
        )  # fmt: skip
        watch.start()
        assert watch.proc is not None
        watch.proc.wait(HANG_S)
    finally:
        server.shutdown()
        server.server_close()
    records = []
    for body in _Collector.bodies:
        req = logs_service_pb2.ExportLogsServiceRequest()
        req.ParseFromString(body)
        records += [r for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    assert len(records) == 2  # two signatures; the repeated report is no new one
    attrs = [{kv.key: kv.value.string_value for kv in r.attributes} for r in records]
    by_title = {r.body.string_value: a for r, a in zip(records, attrs, strict=True)}
    read_attrs = by_title["KASAN: use-after-free Read in ip6_send_skb"]
    assert read_attrs["kernel.crash.type"] == "KASAN-USE-AFTER-FREE-READ"
    assert read_attrs["kernel.crash.guilty_frame"] == "ip6_send_skb"
    assert read_attrs["host.name"] == "exp-host"
    assert read_attrs["os.kernel.release"] == "4.12.0-rc3+"
    assert len(read_attrs["kernel.crash.signature"]) == 16
    write_attrs = by_title["KASAN: use-after-free Write in ip6_send_skb"]
    assert write_attrs["kernel.crash.same_as"] == read_attrs["kernel.crash.signature"]
    assert "alike" in write_attrs["kernel.crash.same_as.evidence"]
    assert all(r.severity_number >= 13 for r in records)
