"""Kernel log sources: /dev/kmsg for real, pstore and journal records from real formats."""

from __future__ import annotations

import itertools
import json
import os
import uuid
import zlib
from pathlib import Path

import pytest

from probes.errors import ProbeError
from probes.logs import (
    KmsgStats,
    PstoreStats,
    SourceStats,
    iter_kmsg,
    iter_log_lines,
    iter_pstore,
    iter_records,
    parse_kmsg_record,
)
from probes.logs.journal import parse_journal_entry
from probes.logs.kmsg import MAX_DICT_ENTRIES, MAX_DICT_VALUE
from probes.stats.parse import parse_kconfig
from probes.stats.read import read_kconfig_text
from tests.conftest import require


def _kmsg_usable() -> bool:
    return os.geteuid() == 0 and os.access("/dev/kmsg", os.R_OK | os.W_OK)


def _write_kmsg(lines: list[str]) -> None:
    # Each open file of /dev/kmsg has its own rate limit (10 lines per 5 s with the default
    # kernel.printk_devkmsg=ratelimit), so a fresh one is opened for every few lines.
    for start in range(0, len(lines), 8):
        fd = os.open("/dev/kmsg", os.O_WRONLY)
        try:
            for line in lines[start : start + 8]:
                os.write(fd, line.encode())
        finally:
            os.close(fd)


def _last_seq() -> int:
    stats = KmsgStats()
    for _ in iter_kmsg(stats=stats):
        pass
    assert stats.last_seq is not None
    return stats.last_seq


# --- /dev/kmsg, parsed -------------------------------------------------------------------


def test_kmsg_record_fields_and_dictionary() -> None:
    raw = b"30,1207,8812345,c;usb 1-1: new device\n SUBSYSTEM=usb\n DEVICE=c189:1\n"
    r = parse_kmsg_record(raw)
    assert r is not None
    assert (r.level, r.facility, r.seq, r.ts_us, r.continuation) == (6, 3, 1207, 8812345, True)
    assert r.text == "usb 1-1: new device"
    assert r.dictionary == {"SUBSYSTEM": "usb", "DEVICE": "c189:1"}
    assert r.as_dmesg_line() == "[    8.812345] usb 1-1: new device"


def test_kmsg_invalid_utf8_is_replaced_and_counted() -> None:
    stats = KmsgStats()
    r = parse_kmsg_record(b"3,5,10,-;bad \xff\xfe bytes\n", stats)
    assert r is not None and "\ufffd" in r.text and r.level == 3
    assert stats.invalid_utf8 == 1
    assert any("invalid UTF-8" in w for w in stats.warnings())


def test_kmsg_huge_dictionary_is_bounded_and_counted() -> None:
    lines = b"".join(b" K%d=%s\n" % (i, b"v" * 10) for i in range(10_000))
    stats = KmsgStats()
    r = parse_kmsg_record(b"6,7,1,-;msg\n" + lines + b" BIG=" + b"x" * 100_000 + b"\n", stats)
    assert r is not None
    assert len(r.dictionary) == MAX_DICT_ENTRIES
    assert stats.dict_dropped == 10_000 + 1 - MAX_DICT_ENTRIES


def test_kmsg_long_value_is_cut() -> None:
    stats = KmsgStats()
    r = parse_kmsg_record(b"6,7,1,-;msg\n DEVICE=" + b"y" * 5000 + b"\n", stats)
    assert r is not None and len(r.dictionary["DEVICE"]) == MAX_DICT_VALUE
    assert stats.dict_dropped == 1


@pytest.mark.parametrize(
    "raw", [b"", b"no header at all", b"6,x,1,-;msg", b"6,1;msg", b"-6,1,1,-;m", b"\xff\xff;\xff"]
)
def test_kmsg_malformed_records_are_skipped_and_counted(raw: bytes) -> None:
    stats = KmsgStats()
    assert parse_kmsg_record(raw, stats) is None
    assert stats.malformed == 1


# --- /dev/kmsg, for real -------------------------------------------------------------------


def test_kmsg_reads_back_written_err_lines_with_their_level() -> None:
    require(_kmsg_usable(), "needs root to write and read /dev/kmsg")
    tag = uuid.uuid4().hex
    after = _last_seq()
    _write_kmsg(
        [f"<3>kassist-test {tag} err {i}\n" for i in range(3)] + [f"<6>kassist {tag} info\n"]
    )
    stats = KmsgStats()
    mine = [r for r in iter_kmsg(after_seq=after, stats=stats) if tag in r.text]
    assert [r.text for r in mine[:3]] == [f"kassist-test {tag} err {i}" for i in range(3)]
    assert [r.level for r in mine] == [3, 3, 3, 6]
    assert all(r.facility == 1 for r in mine)  # written by user space: LOG_USER
    assert all(r.seq is not None and r.seq > after for r in mine)
    assert mine[0].ts_us is not None and mine[0].ts_us > 0
    assert stats.lost == 0 and stats.last_seq is not None and stats.last_seq >= mine[-1].seq  # type: ignore[operator]


def test_kmsg_resume_skips_what_was_read() -> None:
    require(_kmsg_usable(), "needs root to write and read /dev/kmsg")
    tag = uuid.uuid4().hex
    _write_kmsg([f"<4>kassist {tag} first\n"])
    first = KmsgStats()
    seen = [r.text for r in iter_kmsg(stats=first) if tag in r.text]
    assert seen == [f"kassist {tag} first"]
    _write_kmsg([f"<4>kassist {tag} second\n"])
    again = KmsgStats()
    resumed = [r.text for r in iter_kmsg(after_seq=first.last_seq, stats=again) if tag in r.text]
    assert resumed == [f"kassist {tag} second"]
    assert again.skipped_resume > 0


def test_kmsg_follow_sees_new_records_and_stops() -> None:
    require(_kmsg_usable(), "needs root to write and read /dev/kmsg")
    tag = uuid.uuid4().hex
    after = _last_seq()
    got: list[str] = []

    def stop() -> bool:
        if not got:
            _write_kmsg([f"<2>kassist {tag} followed\n"])
        return bool(got)

    for r in iter_kmsg(follow=True, after_seq=after, stop=stop, poll_interval=0.05):
        if tag in r.text:
            got.append(r.text)
            assert r.level == 2
    assert got == [f"kassist {tag} followed"]


def test_kmsg_counts_records_lost_to_ring_buffer_overwrite() -> None:
    require(_kmsg_usable(), "needs root to write and read /dev/kmsg")
    found = read_kconfig_text()
    config = parse_kconfig(found[0]) if found else {}
    shift = config.get("CONFIG_LOG_BUF_SHIFT", 17)
    size = 1 << (shift if isinstance(shift, int) else 17)
    tag = uuid.uuid4().hex
    stats = KmsgStats()
    reader = iter_kmsg(follow=True, stats=stats, stop=lambda: True, poll_interval=0.01)
    first = next(reader)  # the reader now sits at the oldest record, holding its position
    # Write more than the whole ring buffer, so what the reader had not read is overwritten.
    line = f"<7>kassist overflow {tag} " + "z" * 900 + "\n"
    _write_kmsg([line] * (3 * size // len(line)))
    rest = list(reader)
    assert stats.lost > 0, "an overwritten ring buffer must be reported as lost records"
    assert any(tag in r.text for r in rest)
    seqs = [r.seq for r in (first, *rest) if r.seq is not None]
    assert len(seqs) == 1 + len(rest)
    assert stats.lost == sum(b - a - 1 for a, b in itertools.pairwise(seqs))
    assert any("lost to ring-buffer overwrite" in w for w in stats.warnings())


def test_iter_records_over_kmsg_and_files_share_one_type(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("[    1.000000] hello\n[    2.000000] world\n")
    stats = SourceStats()
    records = list(iter_records(str(log), stats))
    assert [r.text for r in records] == ["[    1.000000] hello", "[    2.000000] world"]
    assert all(r.source == f"file:{log}" for r in records)
    assert stats.files == [str(log)]
    crash = tmp_path / "202401011200"
    crash.mkdir()
    (crash / "dmesg.202401011200").write_text("[ 5.0] Kernel panic - not syncing: x\n")
    kd = list(iter_records(str(tmp_path / "202401011200")))
    assert kd[0].source.startswith("kdump:") and "Kernel panic" in kd[0].text
    assert list(iter_log_lines(str(log))) == [r.text for r in records]  # the old API still works


# --- pstore --------------------------------------------------------------------------------

_PANIC_TAIL = (
    "Panic#1 Part1\n"
    "<4>[  101.250001] CPU: 1 PID: 1 Comm: init Not tainted 6.1.0 #1\n"
    "<0>[  101.250300] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009\n"
)
_PANIC_HEAD = (
    "Panic#1 Part2\n"
    "<6>[  100.000000] sysrq: Trigger a crash\n"
    "<1>[  100.000100] BUG: kernel NULL pointer dereference, address: 0000000000000000\n"
)


def _raw_deflate(text: str) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(text.encode()) + c.flush()


def test_pstore_parts_are_read_oldest_first_and_decompressed(tmp_path: Path) -> None:
    (tmp_path / "dmesg-ramoops-0").write_text(_PANIC_TAIL)
    (tmp_path / "dmesg-ramoops-1.enc.z").write_bytes(_raw_deflate(_PANIC_HEAD))
    (tmp_path / "console-ramoops-0").write_text("not a dmesg file\n")
    stats = PstoreStats()
    records = list(iter_pstore(str(tmp_path), stats))
    texts = [r.text for r in records]
    assert texts[0] == "Panic#1 Part2"
    assert texts.index("sysrq: Trigger a crash") < texts.index("Panic#1 Part1")
    panic = next(r for r in records if r.text.startswith("Kernel panic"))
    assert (panic.level, panic.ts_us) == (0, 101_250_300)
    assert panic.source == "pstore:dmesg-ramoops-0"
    assert stats.warnings() == [] and len(stats.files) == 2


def test_pstore_truncated_and_hostile_files_are_counted_not_fatal(tmp_path: Path) -> None:
    long_part = _PANIC_HEAD + "".join(f"<6>[  100.{i:06d}] line {i * i}\n" for i in range(2000))
    deflated = _raw_deflate(long_part)
    (tmp_path / "dmesg-efi-1.enc.z").write_bytes(deflated[: len(deflated) // 2])
    (tmp_path / "dmesg-efi-2").write_bytes(os.urandom(4096))
    (tmp_path / "dmesg-efi-3.enc.z").write_bytes(b"\x00garbage that is not deflate\xff" * 3)
    (tmp_path / "dmesg-efi-4").write_bytes(b"Oops#1 Part1\n<3>[ 1.0] bad \xc3\x28 utf8\n")
    stats = PstoreStats()
    records = list(iter_pstore(str(tmp_path), stats))
    assert stats.truncated == [str(tmp_path / "dmesg-efi-1.enc.z")]
    skipped = dict(stats.skipped)
    assert set(skipped) == {str(tmp_path / "dmesg-efi-2"), str(tmp_path / "dmesg-efi-3.enc.z")}
    assert stats.invalid_utf8_lines == 1
    assert any(r.text.startswith("sysrq") for r in records)  # what the truncated part held
    assert any("\ufffd" in r.text and r.level == 3 for r in records)
    assert len(stats.warnings()) == 4


def test_pstore_empty_or_missing_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="not available: no dmesg"):
        list(iter_pstore(str(tmp_path)))
    with pytest.raises(ProbeError, match="is not a directory"):
        list(iter_records(f"pstore:{tmp_path / 'nope'}"))


# --- journal -------------------------------------------------------------------------------


def test_journal_entries_parse_including_binary_messages() -> None:
    line = (
        '{"MESSAGE":"e1000e 0000:00:1f.6 eth0: NIC Link is Up","PRIORITY":"6",'
        '"SYSLOG_FACILITY":"0","_SOURCE_MONOTONIC_TIMESTAMP":"5123456","__SEQNUM":"88",'
        '"_KERNEL_SUBSYSTEM":"pci","_KERNEL_DEVICE":"+pci:0000:00:1f.6"}'
    )
    r = parse_journal_entry(line)
    assert r is not None
    assert (r.level, r.facility, r.ts_us, r.seq) == (6, 0, 5123456, 88)
    assert r.dictionary == {"SUBSYSTEM": "pci", "DEVICE": "+pci:0000:00:1f.6"}
    binary = parse_journal_entry('{"MESSAGE":[104,105,255],"PRIORITY":"3"}')
    assert binary is not None and binary.text == "hi\ufffd" and binary.level == 3
    assert parse_journal_entry("not json") is None
    assert parse_journal_entry('["MESSAGE"]') is None


def test_journal_says_not_available_in_one_line_or_reads() -> None:
    from probes.logs.journal import journal_available

    why = journal_available()
    if why is None:
        records = list(iter_records("journal"))
        assert records and all(r.source == "journal" for r in records)
    else:
        with pytest.raises(ProbeError) as info:
            list(iter_records("journal"))
        assert "not available" in info.value.one_line()
        assert "\n" not in info.value.one_line()


# --- the CLI ---------------------------------------------------------------------------------


def test_cli_logs_prints_kmsg_records_and_refuses_bad_sources(tmp_path: Path) -> None:
    from tests.conftest import run_kassist

    require(_kmsg_usable(), "needs root to write and read /dev/kmsg")
    tag = uuid.uuid4().hex
    _write_kmsg([f"<3>kassist-cli {tag}\n", f"<7>kassist-cli-debug {tag}\n"])
    proc = run_kassist(["probe", "logs", "kmsg", "--level", "3", "--format", "jsonl"])
    assert proc.returncode == 0, proc.stderr
    mine = [json.loads(line) for line in proc.stdout.splitlines() if tag in line]
    assert [(r["text"], r["level"], r["source"]) for r in mine] == [
        (f"kassist-cli {tag}", 3, "kmsg")
    ]  # the debug line is filtered out by --level 3
    text = run_kassist(["probe", "logs", "kmsg"])
    assert any(line.startswith("<3>[") and tag in line for line in text.stdout.splitlines())
    bad = run_kassist(["probe", "logs", f"pstore:{tmp_path}"])
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1
    assert "not available: no dmesg-* files" in bad.stderr
