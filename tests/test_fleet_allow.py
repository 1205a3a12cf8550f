"""Who may send to ``kassist watch``'s network receivers (``--allow-from``).

The real daemon on loopback, senders bound to other loopback addresses (127.0.0.0/8 is
all local on Linux): a sender outside the allowlist is dropped unread and counted, over
UDP (netconsole, syslog) and TCP (syslog, OTLP), and the host name its records claim is
never stored; a source without an address listens on loopback only; one that listens on
every address without ``--allow-from`` stops ``watch`` in one line before anything starts.
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import httpx

from tests.conftest import HANG_S, run_kassist, wait_until
from tests.fleet_support import hits, metric, receiver
from tests.netconsole_sender import NetconsoleSender
from tests.watch_support import WatchProcess, oops_lines

ALLOW = ("--allow-from", "127.0.0.1/32", "--allow-from", "127.0.0.3/32")


def _closed_unread(sock: socket.socket) -> bool:
    # The receiver closes a connection it does not accept without a byte of answer.
    sock.settimeout(HANG_S)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def test_netconsole_from_outside_the_allowlist_is_dropped_and_counted(tmp_path: Path) -> None:
    # every address, as a fleet receiver listens: allowed with --allow-from
    watch, port = receiver(tmp_path, "netconsole:0.0.0.0:0", *ALLOW)
    outsider = NetconsoleSender(("127.0.0.1", port), source=("127.0.0.2", 0))
    insider = NetconsoleSender(("127.0.0.1", port), source=("127.0.0.3", 0))
    lines = oops_lines("allowed")
    try:
        outsider.lines(oops_lines("spoofed"))  # first: read (and dropped) before the other
        insider.lines(lines)
        wait_until(
            lambda: hits(watch.db), "the allowed host's oops stored", context=watch.log.read_text
        )
    finally:
        outsider.close()
        insider.close()
        watch.stop()
    rows = hits(watch.db)
    assert [r["host"] for r in rows] == ["127.0.0.3"], rows
    assert "kassist_wallowed_level3" in rows[0]["title"]
    counted = metric(tmp_path, "kassist_watch_network_total")
    assert counted["netconsole:not_allowed"] >= len(lines), counted


def _syslog(host: str, line: str) -> bytes:
    return f"<4>1 2026-12-07T06:58:12Z {host} kernel - - - {line}".encode()


def _until_stored(watch: WatchProcess) -> None:
    wait_until(
        lambda: hits(watch.db), "the allowed host's oops stored", context=watch.log.read_text
    )


def _only_stored(watch: WatchProcess, host: str, tag: str) -> None:
    # What is stored is the one oops (``oops_lines(tag)``) the allowed sender sent as ``host``.
    rows = hits(watch.db)
    stored = [(r["host"], f"kassist_w{tag}_level3" in r["title"]) for r in rows]
    assert stored == [(host, True)], rows


def test_syslog_naming_another_host_from_outside_is_never_stored(tmp_path: Path) -> None:
    # no address: loopback only
    watch, port = receiver(tmp_path, "syslog:0", *ALLOW)
    assert f"listening on 127.0.0.1:{port}" in watch.log.read_text()
    try:
        # a spoofer names the relay's host, over TCP and UDP
        with socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0)) as c:
            with contextlib.suppress(OSError):
                c.sendall(b"".join(_syslog("web7", x) + b"\n" for x in oops_lines("spoofed")))
            assert _closed_unread(c)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.2", 0))
            for x in oops_lines("spoofed"):
                udp.sendto(_syslog("web7", x), ("127.0.0.1", port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as relay:
            relay.bind(("127.0.0.1", 0))  # a listed relay may name the hosts it forwards
            for x in oops_lines("relayed"):
                relay.sendto(_syslog("web7", x), ("127.0.0.1", port))
        _until_stored(watch)
    finally:
        watch.stop()
    _only_stored(watch, "web7", "relayed")
    counted = metric(tmp_path, "kassist_watch_network_total")
    assert counted["syslog:not_allowed"] >= 1 + len(oops_lines("x")), counted


def _otlp(host: str, lines: list[str]) -> bytes:
    def attr(key: str, value: str) -> dict[str, object]:
        return {"key": key, "value": {"stringValue": value}}

    return json.dumps({"resourceLogs": [{
        "resource": {"attributes": [attr("host.name", host), attr("service.name", "kernel")]},
        "scopeLogs": [{"logRecords": [{"body": {"stringValue": x}} for x in lines]}],
    }]}).encode()  # fmt: skip


def test_otlp_from_outside_the_allowlist_gets_no_answer(tmp_path: Path) -> None:
    watch, port = receiver(tmp_path, "otlp:127.0.0.1:0", *ALLOW)
    try:
        body = _otlp("otel-ok", oops_lines("spoofed"))
        with socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0)) as c:
            with contextlib.suppress(OSError):
                c.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                          b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            assert _closed_unread(c)
        ok = httpx.post(f"http://127.0.0.1:{port}/v1/logs", content=_otlp("otel-ok", oops_lines(
            "allowed")), headers={"Content-Type": "application/json"}, timeout=HANG_S)  # fmt: skip
        assert ok.status_code == 200
        _until_stored(watch)
    finally:
        watch.stop()
    _only_stored(watch, "otel-ok", "allowed")
    assert metric(tmp_path, "kassist_watch_network_total")["otlp:not_allowed"] == 1


def test_every_address_without_an_allowlist_stops_watch_in_one_line(tmp_path: Path) -> None:
    for source in ("netconsole:0.0.0.0:0", "syslog:[::]:0", "otlp:0.0.0.0:0"):
        db = tmp_path / "c.db"
        proc = run_kassist(["watch", "--once", "--source", "kmsg", "--source", source,
                            "--db", str(db), "--state-dir", str(tmp_path / "s")])  # fmt: skip
        assert proc.returncode != 0, proc
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "--allow-from" in proc.stderr and source in proc.stderr
        assert not db.exists()  # nothing started
    proc = run_kassist(["watch", "--once", "--source", "syslog:0.0.0.0:0", "--allow-from",
                        "10.0.0.0/33", "--db", str(tmp_path / "c.db")])  # fmt: skip
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "10.0.0.0/33" in proc.stderr
