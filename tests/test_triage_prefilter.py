"""The Aho-Corasick pre-filter finds exactly the lines the plain substring scan finds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from assistant.triage import engine
from assistant.triage.engine import ANCHORS, anchor_hits

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
    assert engine._automaton(ANCHORS) is not None  # ahocorasick-rs is a dependency
    assert anchor_hits(block, ANCHORS) == _by_find(block)


def test_slices_end_on_line_boundaries(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(engine, "AUTOMATON_SLICE", 7)  # many slices, lines cut across them
    block = "ok line\n" * 5 + "a BUG: here and WARNING: there\n" + "x" * 50 + "\nfault\nend"
    assert anchor_hits(block, ANCHORS) == _by_find(block)


_NEEDLE_PIECES = st.sampled_from([*engine.NEEDLES[:40], *ANCHORS, "x", " ", "\n", "[ 1.0] "])


@settings(max_examples=300, deadline=None)
@given(st.lists(_NEEDLE_PIECES, max_size=200).map("".join))
def test_needle_automaton_finds_the_lines_the_needle_regex_finds(block: str) -> None:
    lines = block.split("\n")
    expected = [i for i, line in enumerate(lines) if engine._NEEDLE_RE.search(line)]
    if not block.isascii():
        return
    found, exact = engine.TriageEngine("t")._candidates(block)
    assert exact
    assert found == expected
