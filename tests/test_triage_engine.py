"""The triage engine against syzkaller's answers, console decorations and many reports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from assistant.triage import triage_lines, triage_path
from assistant.triage.engine import MAX_CRASHES
from assistant.triage.prefilter import ANCHORS, NEEDLES
from assistant.triage.taint import decode_taint
from tests.conftest import CORPUS_DIR, DATA, require

SAMPLE = DATA / "syzkaller-sample.jsonl"
CORPUS = CORPUS_DIR / "syzkaller-linux-reports.dev.jsonl"
GUILTY = CORPUS_DIR / "syzkaller-linux-guilty.dev.jsonl"


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _first(log: str) -> Any:
    result = triage_lines(log.split("\n"), source="t")
    return result.crashes[0] if result.crashes else None


@pytest.mark.parametrize("row", _rows(SAMPLE), ids=lambda r: f"syzkaller-{r['id']}")
def test_sample_logs_are_named_as_syzkaller_names_them(row: dict[str, Any]) -> None:
    crash = _first(row["log"])
    assert crash is not None
    assert crash.title == row["title"]
    assert crash.type == (row["type"] or "UNKNOWN")
    assert crash.corrupted == row["corrupted"]
    assert bool(crash.corrupted_reason) == row["corrupted"]


def test_dev_corpus_meets_the_targets() -> None:
    require(CORPUS.exists() and GUILTY.exists(), f"the shared corpus is missing ({CORPUS_DIR})")
    rows = _rows(CORPUS)
    pos = [r for r in rows if r["expect_crash"]]
    neg = [r for r in rows if not r["expect_crash"]]
    firsts = [_first(r["log"]) for r in pos]
    exact = sum(1 for r, c in zip(pos, firsts, strict=True) if c and c.title == r["title"])
    corrupted = sum(
        1 for r, c in zip(pos, firsts, strict=True) if c and c.corrupted == bool(r["corrupted"])
    )
    negatives = sum(1 for r in neg if _first(r["log"]) is None)
    assert exact / len(pos) >= 0.90
    assert corrupted / len(pos) >= 0.90
    assert negatives / len(neg) >= 0.95
    guilty_rows = _rows(GUILTY)
    right = 0
    for r in guilty_rows:
        c = _first(r["log"])
        right += bool(c and c.guilty_file == r["guilty_file"])
    assert right / len(guilty_rows) >= 0.90


def test_every_report_is_found_in_order_with_its_span() -> None:
    rows = _rows(SAMPLE)
    logs = [rows[1]["log"], (DATA / "clean-boot.log").read_text(), rows[4]["log"]]
    lines = "\n".join(logs).split("\n")
    result = triage_lines(lines, source="joined")
    titles = [c.title for c in result.crashes]
    assert titles[0] == rows[1]["title"]
    assert rows[4]["title"] in titles
    starts = [c.start_line for c in result.crashes]
    assert starts == sorted(starts)
    for c in result.crashes:
        assert 1 <= c.start_line <= c.end_line <= len(lines)
    # The second log's report starts after the clean boot, and its header line is there.
    second = next(c for c in result.crashes if c.title == rows[4]["title"])
    first_end = len(logs[0].split("\n")) + len(logs[1].split("\n"))
    assert second.start_line > first_end
    assert "KCSAN" in lines[second.start_line - 1]


def _decorated(log: str, style: str) -> str:
    out = []
    for line in log.split("\n"):
        if style == "syslog":
            out.append(f"Nov 27 04:00:01 build-host kernel: {line}")
        elif style == "journal":
            out.append(f"2026-11-27T04:00:01.123456+0000 build-host kernel: {line}")
        elif style == "crlf":
            out.append(line + "\r")
    return "\n".join(out)


@pytest.mark.parametrize("style", ["syslog", "journal", "crlf"])
def test_syslog_journal_and_crlf_decorations_do_not_change_the_answer(style: str) -> None:
    for row in _rows(SAMPLE)[:6]:
        crash = _first(_decorated(row["log"], style))
        assert crash is not None, row["id"]
        assert crash.title == row["title"], row["id"]


def test_the_file_reader_and_the_line_api_agree(tmp_path: Path) -> None:
    row = _rows(SAMPLE)[0]
    path = tmp_path / "x.log"
    path.write_text(row["log"])
    from_file = triage_path(str(path))
    from_lines = triage_lines(row["log"].splitlines(), source=str(path))
    assert [c.to_dict() for c in from_file.crashes] == [c.to_dict() for c in from_lines.crashes]
    assert from_file.lines == from_lines.lines


def test_kernel_task_frames_and_taint_are_extracted() -> None:
    crash = triage_path(str(DATA / "kasan-uaf-strp_check_rcv.log")).crashes[0]
    assert crash.task.comm and crash.task.comm.startswith("syz-executor")
    assert crash.task.pid and crash.task.pid > 0
    assert crash.kernel.release == "4.15.0-rc5+"
    assert crash.kernel.hardware and "Google" in crash.kernel.hardware
    functions = [f.function for f in crash.call_trace]
    assert "strp_check_rcv" in functions
    assert all(f.offset is None or f.offset >= 0 for f in crash.call_trace)
    assert decode_taint("G    B   W  O     ") == ["B", "W", "O"]


def test_signature_ignores_addresses_pids_and_timestamps() -> None:
    log = (DATA / "gpf-sg_remove_request.log").read_text()
    changed = re.sub(r"\[\s*\d+\.\d+\]", "[ 9999.000001]", log)
    changed = re.sub(r"ffff[0-9a-f]{12}", "ffff888012345678", changed)
    changed = re.sub(r"PID: \d+", "PID: 4242", changed)
    a, b = _first(log), _first(changed)
    assert a.signature == b.signature
    other = _first((DATA / "warning-xfrm_state_fini.log").read_text())
    assert other.signature != a.signature


def test_a_line_cut_short_by_a_console_takeover_is_read_from_its_replay() -> None:
    row = _rows(SAMPLE)[1]
    lines = row["log"].split("\n")
    header = next(i for i, x in enumerate(lines) if "WARNING:" in x or "INFO:" in x)
    cut = [*lines[:header], lines[header][:30], "** replaying previous printk message **"]
    crash = _first("\n".join(cut + lines[header:]))
    assert crash.title == row["title"]


def test_every_needle_is_covered_by_an_anchor() -> None:
    assert all(any(a in n for a in ANCHORS) for n in NEEDLES)


def test_hostile_input_ends_bounded_and_clean() -> None:
    # how fast is benchmarks/triage_speed.py's (hostile inputs); pytest-timeout catches a hang
    headers = ["[   1.000000] BUG: KASAN: use-after-free in foo+0x1/0x2"] * (MAX_CRASHES + 500)
    result = triage_lines(headers, source="headers")
    assert len(result.crashes) == MAX_CRASHES
    assert any("500 more crash header(s)" in w for w in result.warnings)
    assert all(c.title == "KASAN: use-after-free in foo" and c.corrupted for c in result.crashes)
    huge = ["WARNING: " + "x" * (1 << 20), "general protection fault: " + "\x00\ufffd" * 50000]
    result = triage_lines(huge + ["Call Trace:"] * 5000, source="huge")
    assert result.crashes and all(len(c.title) <= 120 for c in result.crashes)


def test_the_two_core_scan_finds_what_the_one_core_scan_finds(tmp_path: Path) -> None:
    from assistant.triage.engine import triage_blocks
    from probes.logs import iter_log_blocks

    clean = (DATA / "clean-boot.log").read_text()
    crash = (DATA / "gpf-sg_remove_request.log").read_text()
    events = (DATA / "production-events.log").read_text()
    path = tmp_path / "big.log"
    path.write_text(clean * 80 + crash + clean * 80 + events + clean * 30)
    assert path.stat().st_size > 4 << 20
    two = triage_blocks(iter_log_blocks(str(path)), "big", parallel=True)
    one = triage_blocks(iter_log_blocks(str(path)), "big", parallel=False)
    assert [c.to_dict() for c in two.crashes] == [c.to_dict() for c in one.crashes]
    assert [e.to_dict() for e in two.events] == [e.to_dict() for e in one.events]
    assert any(c.title == "general protection fault in sg_remove_request" for c in two.crashes)
    assert any(e.type == "OOM-KILL" for e in two.events)
