"""syslog from the hosts' own forwarders into ``kassist watch`` (issue 26 item 1).

Debian's rsyslog (``imfile``/``imkmsg`` + ``omfwd``) and syslog-ng (``file()`` +
``syslog()``/``network()``), each started with a config of its own, forward a real
kernel console to the receiver on loopback over TCP (octet-counted RFC 5424) and UDP
(RFC 3164) at once: every crash is stored once, under the host name the record carries.
Records of another facility (what user space wrote to /dev/kmsg, read by ``imkmsg``)
never reach the store. The framer and parser on hostile bytes.
"""

from __future__ import annotations

import time
from pathlib import Path

from assistant.triage import triage_lines
from probes.logs.syslog import SyslogDecoder, SyslogFramer, parse_message
from tests.conftest import DATA, wait_until
from tests.fleet_support import hits, metric, receiver
from tests.forwarders import rsyslogd, running, syslog_ng, syslog_ng_modules
from tests.watch_support import (
    WatchProcess,
    devkmsg_on,
    kmsg_write,
    oops_lines,
    require_kmsg_writer,
)

CONSOLE = DATA / "kernel" / "oops-then-panic.log"

# -- the parser and framer ---------------------------------------------------------------


def test_rfc5424_and_rfc3164_as_the_forwarders_send_them() -> None:
    now = 1_796_600_000.0
    cases = [
        (b"<4>1 2026-12-07T06:58:12.123456+01:00 web7 kernel - - - [  1.5] BUG: x", "web7", 0),
        (
            b'<4>1 2026-12-07T06:58:12Z web7 kernel - - [a b="c\\]d"][e] \xef\xbb\xbfBUG: x',
            "web7",
            0,
        ),
        (b"<12>Dec  7 06:58:12 web8 kernel: BUG: x", "web8", 1),
        (b"<4>2026-12-07T06:58:12.5+00:00 web9 kernel: BUG: x", "web9", 0),
        (b"<4>Dec  7 06:58:12 web9 kernel[0]: BUG: x", "web9", 0),
    ]
    for raw, host, facility in cases:
        parsed = parse_message(raw, now)
        assert parsed is not None, raw
        msg, valid = parsed
        assert (msg.hostname, msg.facility, msg.text, valid) == (host, facility, msg.text, True)
        assert msg.text.endswith("BUG: x") and msg.app == "kernel"
    for junk in (b"no pri", b"<999>1 x", b"<4>1 not-a-time h a p m - x", b"<4>1 short"):
        assert parse_message(junk, now) is None, junk


def test_the_framer_reads_counts_and_lines_and_resyncs_after_a_wrong_count() -> None:
    one = b"<4>1 - h kernel - - - BUG: a"
    two = b"<4>1 - h kernel - - - BUG: b"
    stream = b"%d %s%d %s" % (len(one), one, len(two), two)
    framer = SyslogFramer()
    got = [f for i in range(0, len(stream), 5) for f in framer.feed(stream[i : i + 5])]
    assert got == [one, two] and framer.errors == 0
    lines = SyslogFramer()
    assert lines.feed(b"<4>Dec  7 06:58:12 h kernel: a\r\n<4>Dec  7 06:58:12 h k: b\n") == [
        b"<4>Dec  7 06:58:12 h kernel: a",
        b"<4>Dec  7 06:58:12 h k: b",
    ]
    wrong = SyslogFramer()
    frames = wrong.feed(b"%d %s%d %s" % (len(one) - 4, one, len(two), two))
    assert frames == [two] and wrong.errors == 1  # the bad frame counted, the next one read
    huge = SyslogFramer(max_frame=64)
    assert huge.feed(b"999999 <4>x") == [] and huge.errors == 1
    long_line = SyslogFramer(max_frame=16)
    assert long_line.feed(b"<4>" + b"x" * 40 + b"\n<4>ok\n") == [b"<4>" + b"x" * 13, b"<4>ok"]
    assert long_line.too_long == 1


def test_a_message_sent_twice_is_read_once_and_bad_bytes_are_data() -> None:
    dec = SyslogDecoder()
    raw = b"<4>1 2026-12-07T06:58:12Z h kernel - - - [ 5.000001] \x1b]0;x\x07 \xff BUG"
    first = dec.feed(raw, "10.0.0.1", 0)
    assert [r.text for r in first] == ["\x1b]0;x\x07 \ufffd BUG"] and first[0].ts_us == 5_000_001
    assert dec.feed(raw, "10.0.0.1", 0) == [] and dec.stats.duplicates == 1
    assert dec.stats.invalid_utf8 == 2  # both copies had the bad byte


# -- real forwarders ------------------------------------------------------------------------


def _crashes(path: Path) -> int:
    return len(triage_lines(path.read_text().split("\n"), "x").crashes)


def _watch(tmp: Path) -> tuple[WatchProcess, int]:
    return receiver(tmp, "syslog:127.0.0.1:0")


def _rsyslog_conf(tmp: Path, port: int, host: str, inputs: str) -> Path:
    conf = tmp / "rsyslog.conf"
    work = tmp / "rsyslog"
    work.mkdir()
    conf.write_text(f"""
global(workDirectory="{work}" localHostname="{host}")
{inputs}
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp"
       TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="udp"
       template="RSYSLOG_TraditionalForwardFormat")
""")
    return conf


def _stored_by_host(db: Path, host: str) -> int:
    return sum(1 for r in hits(db) if r["host"] == host)


def test_rsyslog_and_syslog_ng_forward_each_crash_once_with_its_host(tmp_path: Path) -> None:
    rsyslog = rsyslogd()
    sng, sng_env = syslog_ng()
    expected = _crashes(CONSOLE)
    assert expected >= 2
    watch, port = _watch(tmp_path)
    console = tmp_path / "console.log"
    console.write_text(CONSOLE.read_text())
    rs_conf = _rsyslog_conf(
        tmp_path,
        port,
        "fleet-rs",
        f"""
module(load="imfile")
input(type="imfile" File="{console}" Tag="kernel:" Facility="kern" Severity="warning")
""",
    )
    sng_dir = tmp_path / "sng"
    sng_dir.mkdir()
    sng_conf = sng_dir / "syslog-ng.conf"
    sng_conf.write_text(f"""@version: 3.38
options {{ keep-hostname(yes); use-dns(no); use-fqdn(no); stats-freq(0); }};
source s {{ file("{console}" flags(no-parse) program-override("kernel")
           default-facility(kern) default-priority(warning) host-override("fleet-ng")
           follow-freq(0.2)); }};
destination tcp5424 {{ syslog("127.0.0.1" port({port}) transport("tcp")); }};
destination udp3164 {{ network("127.0.0.1" port({port}) transport("udp")); }};
log {{ source(s); destination(tcp5424); destination(udp3164); }};
""")
    sng_argv = [str(sng), "-F", "-f", str(sng_conf), *syslog_ng_modules(sng),
                f"--persist-file={sng_dir}/persist", f"--pidfile={sng_dir}/pid",
                f"--control={sng_dir}/ctl"]  # fmt: skip
    try:
        with (
            running([str(rsyslog), "-n", "-f", str(rs_conf), "-i", str(tmp_path / "rs.pid")],
                    {}, tmp_path / "rsyslog.log"),
            running(sng_argv, sng_env, tmp_path / "syslog-ng.log"),
        ):  # fmt: skip
            wait_until(
                lambda: (
                    _stored_by_host(watch.db, "fleet-rs") >= expected
                    and _stored_by_host(watch.db, "fleet-ng") >= expected
                ),
                f"{expected} reports stored from each of rsyslog and syslog-ng",
                context=lambda: watch.log.read_text() + (tmp_path / "syslog-ng.log").read_text(),
            )
            time.sleep(2)  # anything sent twice has come by now
    finally:
        watch.stop()
    rows = hits(watch.db)
    assert _stored_by_host(watch.db, "fleet-rs") == expected, rows
    assert _stored_by_host(watch.db, "fleet-ng") == expected, rows
    assert {r["source"] for r in rows} == {"syslog"}
    assert {r["sender"] for r in rows} == {"127.0.0.1"}  # the forwarders' address
    counted = metric(tmp_path, "kassist_watch_network_total")
    assert counted["syslog:rfc5424"] > 0 and counted["syslog:duplicates"] > 0
    assert counted["syslog:messages"] > counted["syslog:rfc5424"]  # 3164 came too


def test_only_kernel_facility_records_feed_triage(tmp_path: Path) -> None:
    # rsyslog's imkmsg reads the real /dev/kmsg: what user space wrote there (an oops text
    # with LOG_USER) is forwarded with its facility and never stored as a crash.
    require_kmsg_writer()
    rsyslog = rsyslogd()
    watch, port = _watch(tmp_path)
    copy = tmp_path / "forwarded.log"
    conf = _rsyslog_conf(tmp_path, port, "fleet-kmsg", 'module(load="imkmsg")')
    with conf.open("a") as fh:  # after the forwarding actions: a copy tells they ran
        fh.write(f'action(type="omfile" file="{copy}")\n')
    token = f"u{time.monotonic_ns()}"
    try:
        with running([str(rsyslog), "-n", "-f", str(conf), "-i", str(tmp_path / "rs.pid")],
                     {}, tmp_path / "rsyslog.log"):  # fmt: skip
            with devkmsg_on():
                kmsg_write(oops_lines(token))
                kmsg_write([f"kassist-fleet-marker {token}"])
            wait_until(
                lambda: copy.exists() and f"kassist-fleet-marker {token}" in copy.read_text(),
                "rsyslog's copy holds the marker",
                context=(tmp_path / "rsyslog.log").read_text,
            )
            time.sleep(1)
    finally:
        watch.stop()
    assert not [r for r in hits(watch.db) if token in r["title"]]
    assert metric(tmp_path, "kassist_watch_records_not_kernel_total")[""] >= len(oops_lines(token))
