"""Production decorations of real logs triage like the logs they decorate.

The samples under ``tests/data/formats`` are real console logs re-decorated by
``tests/data/formats/make_formats.py`` (syslog, journald, rsyslog, dmesg flags, kmsg
records, journal JSON/export, tabs, U+00A0, CRLF, mail wrapping, unreliable frames,
another CPU's lines); each must give its original's title, frame, report and span.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.triage import Crash, parse, triage_lines
from tests.conftest import CORPUS_DIR, DATA, require
from tests.decorate import (
    FORMATS,
    GIVES_TIMES,
    LINE_FORMATS,
    OTHER_CPU,
    Decorated,
    applies,
    decorate,
    has_stamps,
    mix,
    read_lines,
)

FORMATS_DIR = DATA / "formats"
ORIGINALS = FORMATS_DIR / "originals"
SEED = 1  # make_formats.SEED
CASES = sorted(p.stem for p in ORIGINALS.glob("*.log"))
CORPUS = CORPUS_DIR / "syzkaller-linux-reports.dev.jsonl"


def _crashes(text: str) -> list[Crash]:
    return triage_lines(text.split("\n"), source="t").crashes


def _report(crash: Crash, header: str) -> list[str]:
    # The report's words from its header on (the lines before are context, and a mail
    # client's wrap makes fewer of them fit): indentation, runs of spaces and line ends
    # aside (tabs and four spaces for the kernel's indentation, a wrap that stays
    # unjoined in a line of a log without stamps), and the lines of another CPU that
    # the interleaving added.
    lines = [" ".join(line.split()) for line in crash.report.split("\n")]
    lines = [x for x in lines if not any(x.endswith(other) for other in OTHER_CPU)]
    text = " ".join(lines)
    return text[text.find(header) :].split()


def _header(log: str, crash: Crash) -> str:
    line = log.split("\n")[crash.start_line - 1]
    text, _ = parse.strip_line_prefix(line, parse.extract_context(line))
    return " ".join(text.split())


def _same(original: Crash, decorated: Crash, d: Decorated, log: str) -> None:
    assert decorated.title == original.title
    assert decorated.frame == original.frame
    assert decorated.type == original.type
    header = _header(log, original)
    assert _report(decorated, header) == _report(original, header)
    # the span: the same input lines, through the decorated lines' origins
    assert d.origin[decorated.start_line - 1] == original.start_line - 1
    end = decorated.end_line - 1
    while d.origin[end] == -1:  # a line that the decoration added (another CPU's)
        end -= 1
    assert d.origin[end] == original.end_line - 1


def _params() -> list[Any]:
    out = []
    for fmt in FORMATS:
        for case in CASES:
            if (FORMATS_DIR / fmt / f"{case}.log").exists():
                out.append(pytest.param(fmt, case, id=f"{fmt}/{case}"))
    return out


@pytest.mark.parametrize(("fmt", "case"), _params())
def test_a_decorated_sample_triages_like_its_original(fmt: str, case: str) -> None:
    log = (ORIGINALS / f"{case}.log").read_text(encoding="utf-8")
    sample = (FORMATS_DIR / fmt / f"{case}.log").read_bytes().decode("utf-8")
    d = decorate(log, fmt, SEED)
    assert sample == d.text, "the sample is stale: run tests/data/formats/make_formats.py"
    (original, *_) = _crashes(log)
    decorated = _crashes(sample)
    assert decorated, f"{fmt}/{case}: no crash found"
    _same(original, decorated[0], d, log)


def test_every_format_has_samples() -> None:
    for fmt in FORMATS:
        assert list((FORMATS_DIR / fmt).glob("*.log")), fmt
    assert len(CASES) >= 8


_LOGS = [(ORIGINALS / f"{case}.log").read_text(encoding="utf-8") for case in CASES]


@st.composite
def _mixed(draw: st.DrawFn) -> tuple[str, list[str]]:
    log = draw(st.sampled_from(_LOGS))
    names = [n for n in LINE_FORMATS if applies(n, log)]
    if not has_stamps(log):
        names = [n for n in names if n not in GIVES_TIMES]
    count = len(log.split("\n"))
    return log, draw(st.lists(st.sampled_from(names), min_size=count, max_size=count))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mixed(), st.integers(0, 1000))
def test_decorations_mixed_line_by_line_do_not_change_the_answer(
    case: tuple[str, list[str]], seed: int
) -> None:
    import random

    log, names = case
    d = mix(read_lines(log), names, random.Random(seed))
    (original, *_) = _crashes(log)
    decorated = _crashes(d.text)
    assert decorated
    _same(original, decorated[0], d, log)


def test_the_dev_corpus_mixed_line_by_line_keeps_its_titles() -> None:
    require(CORPUS.exists(), f"the shared corpus is missing ({CORPUS_DIR})")
    rows = [json.loads(x) for x in CORPUS.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r["expect_crash"]]
    same = 0
    for r in rows:
        (original, *_) = _crashes(r["log"])
        decorated = _crashes(decorate(r["log"], "mixed", 7).text)
        same += bool(decorated) and decorated[0].title == original.title
    assert same / len(rows) >= 0.99


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("Nov  2 12:00:01 pve kernel: [  12.500000] BUG: x", "[  12.500000] BUG: x"),
        ("Nov  2 12:00:01 kernel: BUG: x", "[    0.0000000] BUG: x"),
        ("kernel: BUG: x", "[    0.0000000] BUG: x"),
        ("<4>Nov  2 12:00:01 pve kernel: BUG: x", "[    0.0000000] BUG: x"),
        ("<4>1 2026-11-02T12:00:01.5+00:00 pve kernel - - - BUG: x", "[    0.0000000] BUG: x"),
        ("2026-11-02T12:00:01+0000 pve kernel: BUG: x", "[    0.0000000] BUG: x"),
        ("Mon 2026-11-02 12:00:01 UTC pve kernel: BUG: x", "[    0.0000000] BUG: x"),
        ("1764676801.123456 pve kernel: BUG: x", "[    0.0000000] BUG: x"),
        ("[  12.500000] pve kernel: BUG: x", "[    0.0000000] BUG: x"),
        ("Nov  2 12:00:01 pve sshd[12]: BUG: x", "BUG: x"),
        ("kern  :warn  : [  12.500000] BUG: x", "[  12.500000] BUG: x"),
        ("[Mon Nov  2 12:00:01 2026] BUG: x", "[    0.0000000] BUG: x"),
        ("[Mon Nov  2 12:00:01 2026] [  T42] BUG: x", "[    0.0000000][  T42] BUG: x"),
        ("[Nov 2 12:00] BUG: x", "[    0.0000000] BUG: x"),
        ("[  +0.000012] BUG: x", "[    0.0000000] BUG: x"),
        ("[  12.500000 <    0.000012>] BUG: x", "[    0.0000000] BUG: x"),
        ("<4>[  12.500000] BUG: x", "[  12.500000] BUG: x"),
        ("[  12.500000] [  T42] BUG: x", "[  12.500000][  T42] BUG: x"),
        ("4,99,12500000,-,caller=T42;BUG: x", "[   12.500000][   T42] BUG: x"),
        ("4,99,12500000,-;BUG: x", "[   12.500000] BUG: x"),
        (" SUBSYSTEM=pci", None),
        ("_TRANSPORT=kernel", None),
        ("MESSAGE=BUG: x", "[    0.0000000] BUG: x"),
        (
            '{"MESSAGE": "BUG: x", "SYSLOG_FACILITY": "0", "__MONOTONIC_TIMESTAMP": "1"}',
            "[    0.000001] BUG: x",
        ),
        ("[  12.500000]\tdump_stack+0x1/0x2", "[  12.500000]  dump_stack+0x1/0x2"),
        ("\tdump_stack+0x1/0x2", " dump_stack+0x1/0x2"),
        ("rcu: \t(detected by 0, t=1)", "rcu: \t(detected by 0, t=1)"),
        ("[  12.500000] BUG: x\r", "[  12.500000] BUG: x"),
        ("RAX=0000000000000000 RBX=0000000000000001", "RAX=0000000000000000 RBX=0000000000000001"),
        ("> > [  12.500000] BUG: x", "[  12.500000] BUG: x"),
        (" kernel:[ 1234.567890] watchdog: BUG: x", "[ 1234.567890] watchdog: BUG: x"),
        ("Mar  1 12:00:00 nas kern.warn kernel: [  12.500000] BUG: x", "[  12.500000] BUG: x"),
        ("Fri Mar  1 12:00:00 2024 kern.warn kernel: [  12.500000] BUG: x", "[  12.500000] BUG: x"),
        ("    _TRANSPORT=kernel", None),
        ("    MESSAGE=BUG: x", "[    0.0000000] BUG: x"),
        ("    [  12.500000] BUG: x", "[  12.500000] BUG: x"),
        (">ffff888012345678: fb fb fb", ">ffff888012345678: fb fb fb"),  # KASAN's marked row
        ("\x1b[33m[  12.500000] \x1b[0mBUG: x", "[  12.500000] BUG: x"),
    ],
)
def test_normalise_line_undoes_one_decoration(line: str, expected: str | None) -> None:
    from assistant.triage.console import normalise_line

    assert normalise_line(line) == expected


def test_unicode_spaces_become_spaces_before_the_prefilter() -> None:
    log = (DATA / "hung-rtnl_lock.log").read_text(encoding="utf-8")
    crash = _crashes(log.replace(" ", "\u00a0"))[0]
    assert crash.title == _crashes(log)[0].title


def test_a_wrapped_line_is_not_joined_in_a_log_that_shows_no_wrapping() -> None:
    # An unrelated line after a 79-column header stays a line of its own once a longer
    # line shows that the log was not wrapped (syzkaller's report 0).
    header = "[  772.918915] BUG: unable to handle kernel paging request at ffff88002bde1e40"
    lines = [header, "unrelated line", "[  772.919010] IP: [<ffffffff82d4e304>] __memset+0x24/0x30"]
    lines += ["[  772.919010] RIP: 0010:[<ffffffff82d4e304>]  [<ffffffff82d4e304>] " + "x" * 20]
    crash = _crashes("\n".join(lines))[0]
    assert "unrelated line" not in crash.report.split("\n")[0]
    assert re.search(r"paging request at ffff88002bde1e40$", crash.report.split("\n")[0])
