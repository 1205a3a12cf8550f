"""The Aho-Corasick pre-filter finds exactly the lines the plain substring scan finds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.triage import engine, prefilter
from assistant.triage.prefilter import ANCHORS, anchor_hits

_PIECES = st.sampled_from([*ANCHORS, "x", " ", "\n", "BU", "G:", "rro", "[ 1.0] ", "\n\n"])


def _by_find(block: str) -> list[int]:
    hits = set()
    for needle in ANCHORS:
        pos = block.find(needle)
        while pos != -1:
            hits.add(block.rfind("\n", 0, pos) + 1)
            pos = block.find(needle, pos + 1)
    return sorted(hits)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=400).map("".join))
def test_automaton_agrees_with_substring_scan(block: str) -> None:
    automaton = prefilter.automaton(ANCHORS)
    assert automaton is not None  # ahocorasick-rs is a dependency
    assert prefilter.automaton_hits(block.encode("ascii"), automaton) == _by_find(block)
    assert anchor_hits(block, ANCHORS) == _by_find(block)  # the scan without it


def test_slices_end_on_line_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prefilter, "AUTOMATON_SLICE", 7)  # many slices, lines cut across them
    block = "ok line\n" * 5 + "a BUG: here and WARNING: there\n" + "x" * 50 + "\nfault\nend"
    automaton = prefilter.automaton(ANCHORS)
    assert prefilter.automaton_hits(block.encode("ascii"), automaton) == _by_find(block)


_NEEDLE_PIECES = st.sampled_from([*prefilter.NEEDLES[:40], *ANCHORS, "x", " ", "\n", "[ 1.0] "])


@settings(max_examples=300, deadline=None)
@given(st.lists(_NEEDLE_PIECES, max_size=200).map("".join))
def test_needle_automaton_finds_the_lines_the_needle_regex_finds(block: str) -> None:
    lines = block.split("\n")
    expected = [i for i, line in enumerate(lines) if prefilter.NEEDLE_RE.search(line)]
    if not block.isascii():
        return
    found, exact = prefilter.Prefilter().candidates(block)
    assert exact
    assert found == expected


def test_past_the_crash_cap_events_panics_and_counts_are_kept() -> None:
    from assistant.triage import triage_lines

    header = "[{:6d}.000000] BUG: KASAN: use-after-free in foo+0x1/0x2"
    lines = [header.format(i) for i in range(engine.MAX_CRASHES + 300)]
    lines.insert(
        engine.MAX_CRASHES + 100,
        "[ 1200.100101] Memory cgroup out of memory: Killed process 4121 (postgres) "
        "total-vm:8645520kB, anon-rss:4194304kB, file-rss:1024kB, shmem-rss:0kB, UID:107",
    )
    # within a second of the last report (rules.PANIC_JOIN_SECONDS): it joins that report
    lines.append("[  1299.500000] Kernel panic - not syncing: Fatal exception")
    lines.append("[ 9999.000001] DEBUG: not BUG: a near-header that is not a header")
    result = triage_lines(lines, source="storm")
    assert len(result.crashes) == engine.MAX_CRASHES
    assert any("300 more crash header(s)" in w for w in result.warnings), result.warnings
    assert [e.type for e in result.events] == ["OOM-KILL"]
    assert result.crashes[-1].panicked
