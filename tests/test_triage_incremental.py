"""The incremental engine: crashes come out as their reports close, as a whole-file run has them."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from typing import Any

from assistant.triage import Crash, triage_lines
from assistant.triage.engine import MAX_OPEN_WINDOWS, PREFIX_LINES, WINDOW_LINES, TriageEngine
from tests.conftest import CORPUS_DIR, DATA, require

CORPUS = CORPUS_DIR / "syzkaller-linux-reports.dev.jsonl"
GUILTY = CORPUS_DIR / "syzkaller-linux-guilty.dev.jsonl"
FIELDS = ("title", "type", "start_line", "end_line", "signature", "frame", "report", "alt_titles")


def _key(c: Crash) -> tuple[Any, ...]:
    return tuple(getattr(c, f) for f in FIELDS)


def _logs() -> list[str]:
    out = [p.read_text(encoding="utf-8") for p in sorted(DATA.glob("*.log"))]
    out += [
        json.loads(x)["log"] for x in (DATA / "syzkaller-sample.jsonl").read_text().splitlines()
    ]
    return out


def _line_by_line(log: str, pauses: random.Random | None = None) -> list[Crash]:
    engine = TriageEngine("t")
    now = 0.0
    out: list[Crash] = []
    for line in log.split("\n"):
        if pauses is not None:
            now += pauses.uniform(0.0, engine.quiet_seconds * 0.9)  # shorter than quiet
            out += engine.poll(now)
        out += engine.feed_line(line, now=now)
    before = len(out)
    result = engine.finish()
    assert [_key(c) for c in out] == [_key(c) for c in out[:before]]
    assert len(result.crashes) >= len(out)
    return sorted(result.crashes, key=lambda c: c.start_line)


def test_every_dev_corpus_log_fed_line_by_line_is_triaged_as_a_whole_file() -> None:
    require(CORPUS.exists() and GUILTY.exists(), f"the shared corpus is missing ({CORPUS_DIR})")
    logs = [json.loads(x)["log"] for p in (CORPUS, GUILTY) for x in p.read_text().splitlines()]
    for log in logs + _logs():
        whole = triage_lines(log.split("\n"), source="t").crashes
        assert [_key(c) for c in _line_by_line(log)] == [_key(c) for c in whole]


def test_random_pauses_shorter_than_the_quiet_period_change_nothing() -> None:
    rng = random.Random(7)
    for log in _logs():
        whole = triage_lines(log.split("\n"), source="t").crashes
        assert [_key(c) for c in _line_by_line(log, rng)] == [_key(c) for c in whole]


def test_a_crash_comes_out_when_its_report_ends_not_at_finish() -> None:
    log = (DATA / "kasan-uaf-strp_check_rcv.log").read_text(encoding="utf-8").rstrip("\n")
    clean = (DATA / "clean-boot.log").read_text(encoding="utf-8").split("\n")
    engine = TriageEngine("live", retain=False)
    emitted: list[Crash] = []
    fed = 0
    for line in itertools.chain(log.split("\n"), clean[200:260]):
        emitted += engine.feed_line(line)
        fed += 1
        if emitted:
            break
    (crash,) = emitted
    assert crash.title == triage_lines(log.split("\n"), source="t").crashes[0].title
    assert fed < len(log.split("\n")) + 40  # the end marker and a short grace closed it
    assert engine.finish().crashes == []  # handed out, not kept


def test_a_quiet_period_closes_an_open_report() -> None:
    log = (DATA / "hung-rtnl_lock.log").read_text(encoding="utf-8").rstrip("\n")
    lines = log.split("\n")
    engine = TriageEngine("live", retain=False, quiet_seconds=2.0)
    assert not [c for line in lines for c in engine.feed_line(line, now=100.0)]
    assert engine.poll(101.0) == []  # not quiet long enough
    (crash,) = engine.poll(102.5)
    expected = triage_lines(lines, source="t").crashes[0]  # what the input so far gives
    assert _key(crash) == _key(expected)


def _endless(reports: list[list[str]], clean: list[str]) -> Iterator[str]:
    # A live console: clean boot lines with a real crash report now and then, for ever.
    for n in itertools.count():
        yield from clean
        yield from reports[n % len(reports)]


def test_memory_stays_bounded_on_an_endless_stream() -> None:
    reports = [
        (DATA / name).read_text(encoding="utf-8").rstrip("\n").split("\n")
        for name in (
            "kasan-uaf-strp_check_rcv.log",
            "hung-rtnl_lock.log",
            "gpf-sg_remove_request.log",
        )
    ]
    clean = (DATA / "clean-boot.log").read_text(encoding="utf-8").rstrip("\n").split("\n")
    engine = TriageEngine("endless", retain=False)
    bound = PREFIX_LINES + MAX_OPEN_WINDOWS * (PREFIX_LINES + WINDOW_LINES) + 100
    crashes = events = most = 0
    stream = _endless(reports, clean)
    total = 1_000_000
    block: list[str] = []
    for i, line in enumerate(itertools.islice(stream, total)):
        if i % 200_000 < 2_000:
            crashes += len(engine.feed_line(line))  # a stretch fed one line at a time
            continue
        block.append(line)
        if len(block) == 20_000:
            crashes += len(engine.feed_block("\n".join(block)))
            block = []
            events += len(engine.take_events())
            most = max(most, engine.retained())
    assert engine.lines >= total - len(block)
    assert most <= bound
    per_round = len(clean) + sum(len(r) for r in reports) / len(reports)
    assert crashes >= 0.9 * total / per_round  # every report came out on the way
    assert engine.retained() <= bound


def test_decorated_samples_fed_line_by_line_are_triaged_as_whole_files() -> None:
    samples = sorted((DATA / "formats").glob("*/*.log"))
    assert len(samples) > 200
    for path in samples:
        log = path.read_bytes().decode("utf-8")
        whole = triage_lines(log.split("\n"), source="t").crashes
        assert [_key(c) for c in _line_by_line(log)] == [_key(c) for c in whole], path
