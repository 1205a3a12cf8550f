"""netconsole into ``kassist watch`` (issue 26 item 1): the kernel's wire format byte for byte.

The decoder on datagrams a byte-exact sender makes (fragments, escapes, continuations,
sysdata, losses, reorder, reboot, the kernel's fragment limits), then the real daemon
receiving on loopback from several hosts (source addresses 127.0.0.x): each crash stored
once under its host, CPUs' interleaved reports apart, a flood that starves no one.
"""

from __future__ import annotations

import random
import socket
import time
from pathlib import Path

from probes.logs.netconsole import MAX_TOTAL, NetconsoleDecoder, parse_header, unescape
from tests.conftest import run_kassist, wait_until
from tests.fleet_support import hits, metric, receiver
from tests.netconsole_sender import NetconsoleSender, datagrams, escape
from tests.watch_support import WatchProcess, oops_lines

NOW = 1_796_000_000_000_000


def _feed(dec: NetconsoleDecoder, packets: list[bytes], host: str = "10.0.0.1") -> list[str]:
    out = []
    for p in packets:
        out += [r.text for r in dec.feed(p, host, 6665, NOW)]
    return out + [r.text for r in dec.flush()]


# -- the decoder -------------------------------------------------------------------------


def test_a_long_record_is_sent_in_fragments_and_read_back_whole_in_any_order() -> None:
    text = "BUG: " + "".join(chr(0x41 + i % 26) for i in range(2900)) + "\x1b[2J\\end é"
    packets = datagrams(text.encode(), seq=7, ts_us=1, release="6.1.0-21-amd64",
                        sysdata={"cpu": "1", "msgid": "1"})  # fmt: skip
    assert len(packets) == 4 and all(len(p) <= 1000 for p in packets)
    assert b"ncfrag=0/" in packets[0]
    dec = NetconsoleDecoder()
    shuffled = packets[2:] + packets[:2]
    records = [r for p in shuffled for r in dec.feed(p, "10.0.0.1", 6665, NOW)]
    assert [r.text for r in records] == [text]  # escapes undone: ESC stays data
    assert records[0].caller_cpu == 1 and records[0].dictionary["release"] == "6.1.0-21-amd64"
    assert dec.stats.fragments_refused == 0


def test_fragments_outside_the_kernels_limits_are_refused() -> None:
    head = b"6,5,100,-,ncfrag="
    dec = NetconsoleDecoder()
    bad = [
        head + b"10/10;x",  # off >= total
        head + b"8/10;xyz",  # off + len > total
        head + b"0/%d;abc" % MAX_TOTAL,  # total >= 8192
        head + b"a/10;abc",  # not numbers
    ]
    assert _feed(dec, bad) == []
    assert dec.stats.fragments_refused == 3 and dec.stats.malformed == 1
    # overlapping parts with other bytes: the message is refused, not glued together
    dec = NetconsoleDecoder()
    assert _feed(dec, [head + b"0/6;abcd", head + b"2/6;XXXX"]) == []
    assert dec.stats.fragments_refused == 1
    # one that never completes is given up (and counted) when flushed
    dec = NetconsoleDecoder()
    assert _feed(dec, [head + b"0/6;abc"]) == []
    assert dec.stats.fragments_incomplete == 1


def test_escapes_invalid_utf8_and_dictionary_lines() -> None:
    raw = b"4,1,2,-;tab\\x09there \\xff\\xfe \\q\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:01.0\n"
    dec = NetconsoleDecoder()
    [rec] = dec.feed(raw, "h", 1, NOW)
    assert rec.text == "tab\tthere \ufffd\ufffd \\q"
    assert rec.dictionary["SUBSYSTEM"] == "pci" and rec.dictionary["DEVICE"] == "+pci:0000:00:01.0"
    assert dec.stats.invalid_utf8 == 1 and dec.stats.bad_escapes == 1
    assert unescape(escape(bytes(range(256))))[0] == bytes(range(256))
    assert parse_header(b"no header here") is None


def test_continuations_are_merged() -> None:
    dec = NetconsoleDecoder()
    packets = (
        datagrams(b"Modules linked in:", seq=1, ts_us=1, flag="c")
        + datagrams(b" ext4", seq=2, ts_us=2, flag="+")
        + datagrams(b" xfs", seq=3, ts_us=3, flag="+")
        + datagrams(b"next line", seq=4, ts_us=4)
    )
    assert _feed(dec, packets) == ["Modules linked in: ext4 xfs", "next line"]


def test_losses_late_datagrams_and_skipped_records_are_told_apart() -> None:
    rng = random.Random(5)
    sender = NetconsoleSender(("127.0.0.1", 9))
    sender.close()
    packets: list[list[bytes]] = [sender.record(f"line {i}") for i in range(300)]
    # the kernel skipped some records (above the console loglevel): seq gaps, msgids on
    packets += [sender.record("after skipped ones", skip_seq=5)]
    dropped = set(rng.sample(range(1, 300), 17))
    kept = [p for i, p in enumerate(packets) if i not in dropped]
    for i in range(0, len(kept) - 3, 40):  # reorder: some datagrams come after the next
        kept[i], kept[i + 2] = kept[i + 2], kept[i]
    dec = NetconsoleDecoder()
    texts = _feed(dec, [d for p in kept for d in p])
    assert len(texts) == len(kept)
    assert dec.settle() == len(dropped)
    assert dec.stats.late > 0 and dec.stats.not_sent == 5
    # a datagram seen twice is handed on once
    again = NetconsoleDecoder()
    assert len(_feed(again, packets[0] + packets[0] + packets[1])) == 2
    assert again.stats.duplicates == 1


def test_the_first_records_of_a_sender_lost_on_the_way_are_counted() -> None:
    sender = NetconsoleSender(("127.0.0.1", 9))
    sender.close()
    packets = [sender.record(f"line {i}") for i in range(10)]
    dec = NetconsoleDecoder()
    assert len(_feed(dec, [d for p in packets[3:] for d in p])) == 7
    assert dec.settle() == 3
    # one of them comes late after all: late, not lost
    late = NetconsoleDecoder()
    _feed(late, [d for p in packets[2:] + packets[1:2] for d in p])
    assert late.settle() == 1 and late.stats.late == 1


def test_a_reboot_starts_the_senders_state_again() -> None:
    sender = NetconsoleSender(("127.0.0.1", 9))
    sender.close()
    dec = NetconsoleDecoder()
    first = [d for i in range(3000) for d in sender.record(f"a{i}")]
    sender.reboot(release="6.1.0-22-amd64")
    second = [d for i in range(5) for d in sender.record(f"b{i}")]
    recs = [r for p in first + second for r in dec.feed(p, "h", 1, NOW)]
    assert dec.stats.reboots == 1 and dec.stats.lost == 0 and dec.stats.duplicates == 0
    assert {r.dictionary["release"] for r in recs[-5:]} == {"6.1.0-22-amd64"}
    assert recs[-1].dictionary["boot"] != recs[0].dictionary["boot"]


def test_the_plain_format_is_console_text_cut_anywhere() -> None:
    dec = NetconsoleDecoder()
    stream = b"[   12.500000] BUG: one\n[   12.600000] second li" + b"ne\npartial"
    recs = [r for i in range(0, len(stream), 7) for r in dec.feed(stream[i : i + 7], "h", 1, NOW)]
    assert [(r.ts_us, r.text) for r in recs] == [
        (12_500_000, "BUG: one"),
        (12_600_000, "second line"),
    ]
    assert [r.text for r in dec.flush()] == ["partial"]


# -- the daemon on loopback ------------------------------------------------------------------


def _watch(tmp: Path) -> tuple[WatchProcess, int]:
    return receiver(tmp, "netconsole:127.0.0.1:0")


def test_hosts_crashes_are_stored_once_each_under_their_host(tmp_path: Path) -> None:
    watch, port = _watch(tmp_path)
    db = watch.db
    senders = [NetconsoleSender(("127.0.0.1", port), source=(f"127.0.0.{i}", 0)) for i in (2, 3)]
    try:
        a, b = senders
        # host a: two CPUs print two different reports at once, line by line
        one, two = oops_lines("cpuA"), oops_lines("cpuB")
        for x, y in zip(one, two, strict=False):
            a.send(a.record(x, cpu=0))
            a.send(a.record(y, cpu=3))
        # host b: the first report, with a line long enough to be fragmented
        b.lines(oops_lines("cpuA")[:5])
        b.send(b.record("x" * 2500))
        b.lines(oops_lines("cpuA")[5:])
        wait_until(lambda: len(hits(db)) == 3, "the 3 reports stored", context=watch.log.read_text)
        # the same reports sent again (a forwarder replaying): counted once
        a.seq -= 2 * len(one)
        a.msgid -= 2 * len(one)
        a.ts_us -= 2 * len(one) * 1000
        for x, y in zip(one, two, strict=False):
            a.send(a.record(x, cpu=0))
            a.send(a.record(y, cpu=3))
        a.lines(["[quiet]"])
        time.sleep(2)
    finally:
        for s in senders:
            s.close()
        watch.stop()
    rows = hits(db)
    assert len(rows) == 3, rows
    by_host: dict[str, set[str]] = {}
    for r in rows:
        by_host.setdefault(r["host"], set()).add(r["title"])
    assert {h: len(t) for h, t in by_host.items()} == {"127.0.0.2": 2, "127.0.0.3": 1}
    assert all(r["source"] == "netconsole:6.1.0-21-amd64" for r in rows)
    assert all(not r["corrupted"] for r in rows)


def test_a_flood_from_one_address_starves_no_other_and_bad_packets_are_counted(
    tmp_path: Path,
) -> None:
    # 15,000 crash headers from one address at full speed, another host's oops interleaved:
    # the socket's buffer holds the burst, the flooder's own queue drops its excess, the
    # other host's report comes through whole.
    watch, port = _watch(tmp_path)
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.bind(("127.0.0.9", 0))
    host = NetconsoleSender(("127.0.0.1", port), source=("127.0.0.4", 0))
    bad = [b"6,1,2,-,ncfrag=9/3;x", b"\x00\xff" * 300, b"4,1,1,-;\x1b]52;c;AAAA\x07 BUG: x",
           b"6,1,2,-,ncfrag=0/99999;x"]  # fmt: skip
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.10", 0))
            for p in bad:
                other.sendto(p, ("127.0.0.1", port))
        lines = oops_lines("flood")
        for sent in range(15_000):
            flood.sendto(b"4,%d,1,-;BUG: flood line" % sent, ("127.0.0.1", port))
            if sent % 200 == 0 and lines:
                host.lines([lines.pop(0)])
        host.lines(lines)
        wait_until(
            lambda: any(r["host"] == "127.0.0.4" for r in hits(watch.db)),
            "the flooded host's report stored",
            context=watch.log.read_text,
        )
    finally:
        flood.close()
        host.close()
        watch.stop()
    [mine] = [r for r in hits(watch.db) if r["host"] == "127.0.0.4"]
    assert not mine["corrupted"] and "kassist_wflood_level3" in mine["title"]
    counted = metric(tmp_path, "kassist_watch_network_total")
    assert counted["netconsole:fragments_refused"] == 2, counted
    assert counted["netconsole:dropped_queue"] > 0  # the flooder's excess, at its own queue
    assert "\x1b" not in watch.log.read_text(errors="replace")  # nothing printed raw
    assert watch.proc is not None and watch.proc.returncode == 0


def test_a_slow_senders_report_is_stored_whole_not_cut_by_the_wall_clock(tmp_path: Path) -> None:
    # Two hosts sending in turn, each report in pieces seconds apart (on the wall clock, and
    # on their kernel clocks, in order), no end marker until the last piece: each report is
    # stored once and whole (its title names the faulting function, printed after the
    # first pause), not cut at the first pause.
    watch, port = _watch(tmp_path)
    senders = [NetconsoleSender(("127.0.0.1", port), source=(f"127.0.0.{i}", 0)) for i in (5, 6)]
    reports = [oops_lines(f"slow{i}") for i in range(2)]
    try:
        for cut in ((0, 2), (2, 6), (6, None)):
            for sender, lines in zip(senders, reports, strict=True):
                sender.ts_us += 2_000_000
                sender.lines(lines[cut[0] : cut[1]])
            time.sleep(1.5)  # more than a wall-clock quiet of 0.5 s
        wait_until(
            lambda: len(hits(watch.db)) >= 2,
            "both senders' reports stored",
            context=watch.log.read_text,
        )
        time.sleep(1)  # a piece stored apart would come now
    finally:
        for s in senders:
            s.close()
        watch.stop()
    rows = sorted(hits(watch.db), key=lambda r: r["host"])
    assert [r["host"] for r in rows] == ["127.0.0.5", "127.0.0.6"], rows
    for i, row in enumerate(rows):
        assert f"kassist_wslow{i}_level" in row["title"], row["title"]
        assert "---[ end trace" in row["report"] and "kassist_watch_marker" in row["report"]
        assert row["sender"] == row["host"]  # netconsole: the host is its address
    # `crashes show` tells where each report came from
    shown = run_kassist(["crashes", "show", rows[0]["signature"], "--db", str(watch.db)])
    assert shown.returncode == 0 and "127.0.0.5 from 127.0.0.5" in shown.stdout, shown.stdout


def test_a_network_hosts_report_closes_on_the_kernels_evidence_first() -> None:
    # On an engine's own clock (no waiting): a host's report without its end marker stays
    # open through a wall-clock quiet and closes at the fallback, or at once when the next
    # record comes STAMP_GAP_US later on the host's kernel clock; with its end marker it
    # closes after the short quiet.
    from assistant.watch.daemon import LANE_FALLBACK, STAMP_GAP_US, _Stream
    from assistant.watch.stream import StreamSource
    from probes.logs.records import LogRecord

    source = StreamSource("netconsole:0", "netconsole", lambda stop, idle: iter(()))

    lines = oops_lines("gap")
    end = next(i for i, x in enumerate(lines) if "---[ end trace" in x)

    def records(texts: list[str], ts_us: int) -> list[LogRecord]:
        return [LogRecord(t, "netconsole", ts_us=ts_us + i, host="h") for i, t in enumerate(texts)]

    lane = _Stream("netconsole", 0.5, source, host="h")
    assert lane.feed(records(lines[:end], 1_000_000), 0.0, lambda: None) == []
    assert lane.engine.poll(5.0) == []  # seconds of wall-clock quiet: still open
    [cut] = lane.engine.poll(LANE_FALLBACK)  # the fallback
    assert "kassist_wgap_level" in cut.title
    lane = _Stream("netconsole", 0.5, source, host="h")
    lane.feed(records(lines[:end], 1_000_000), 0.0, lambda: None)
    [gap] = lane.feed(records(["later"], 1_000_000 + STAMP_GAP_US + end), 0.1, lambda: None)
    assert gap.title == cut.title
    lane = _Stream("netconsole", 0.5, source, host="h")
    lane.feed(records(lines, 1_000_000), 0.0, lambda: None)
    [whole] = lane.engine.poll(0.5)  # its end marker came: the short quiet closes it
    assert whole.title == cut.title


def _spooled(watch: WatchProcess, text: str) -> bool:
    spool = watch.state / "spool"
    return spool.is_dir() and any(text.encode() in p.read_bytes() for p in spool.iterdir())


def test_a_receiver_killed_mid_report_reads_it_again_and_stores_each_report_once(
    tmp_path: Path,
) -> None:
    # Host A's report is stored; host B's is half received when the receiver is SIGKILLed.
    # The restarted receiver reads its spool again: B's report comes out whole once its
    # second half arrives, and A's (read again) is not stored twice.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = f"netconsole:127.0.0.1:{port}"
    watch, _ = receiver(tmp_path, source)
    a = NetconsoleSender(("127.0.0.1", port), source=("127.0.0.7", 0))
    b = NetconsoleSender(("127.0.0.1", port), source=("127.0.0.8", 0), seq=900, ts_us=9_000_000)
    first, second = oops_lines("killA"), oops_lines("killB")
    half = len(second) // 2
    try:
        a.lines(first)
        wait_until(
            lambda: len(hits(watch.db)) == 1, "A's report stored", context=watch.log.read_text
        )
        b.lines(second[:half])
        last = f",{b.seq},{b.ts_us},-;"  # the header of B's last record sent (A's differ)
        wait_until(
            lambda: _spooled(watch, last), "B's last record spooled", context=watch.log.read_text
        )
        watch.kill()
        watch, _ = receiver(tmp_path, source)
        b.lines(second[half:])
        wait_until(
            lambda: len(hits(watch.db)) >= 2,
            "B's report stored after the restart",
            context=watch.log.read_text,
        )
        time.sleep(2)  # anything stored twice would come now
    finally:
        a.close()
        b.close()
        watch.stop()
    rows = sorted(hits(watch.db), key=lambda r: r["host"])
    assert [r["host"] for r in rows] == ["127.0.0.7", "127.0.0.8"], rows
    assert "kassist_wkillA_level" in rows[0]["title"]
    assert "kassist_wkillB_level" in rows[1]["title"] and not rows[1]["corrupted"]
    assert "---[ end trace" in rows[1]["report"] and "#PF: supervisor" in rows[1]["report"]


def test_the_anchor_check_of_a_hosts_line_finds_what_a_substring_scan_finds() -> None:
    # A network host's lines are checked one at a time (an automaton for short ones): the
    # answer is the substring scan's for real log lines, each anchor anywhere in a line,
    # non-ASCII text, and a block longer than the automaton takes.
    from assistant.triage.prefilter import ANCHORS, AUTOMATON_CHARS, has_anchor

    rng = random.Random(3)
    lines = [*oops_lines("anchor"), "", "é ünïcode ✓ line", "x" * (AUTOMATON_CHARS + 10)]
    for needle in ANCHORS:
        lines.append(f"[ 1.0] é{'y' * rng.randrange(50)}{needle}{'z' * rng.randrange(50)}")
        lines.append(needle[:-1])
    lines.append("q" * AUTOMATON_CHARS + "BUG: x")
    for line in lines:
        assert has_anchor(line) == any(n in line for n in ANCHORS), line[:80]
    assert sum(map(has_anchor, lines)) > len(ANCHORS)
