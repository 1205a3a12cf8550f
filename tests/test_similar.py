"""Crash similarity (issue 26 item 3): the same bug under other titles, with evidence."""

from __future__ import annotations

from assistant.triage import triage_lines
from assistant.triage.similar import Features, clusters, features, link, pair_distance
from tests.watch_support import oops_lines


def _crash(lines: list[str]) -> Features:
    [crash] = triage_lines(lines, "test").crashes
    return features(crash)


def test_a_report_without_its_call_trace_links_by_kind_and_access_site() -> None:
    # The same oops, once with its call trace and once cut to its guilty frame (a report
    # whose trace was lost): the stacks cannot be compared, the access site can.
    whole = oops_lines("site")
    start = next(i for i, x in enumerate(whole) if x.startswith("Call Trace:"))
    end = next(i for i, x in enumerate(whole) if "</TASK>" in x)
    a, b = _crash(whole), _crash(whole[:start] + whole[end + 1 :])
    assert len(a.frames) > 2 and len(b.frames) == 1 and a.frames[0] == b.frames[0]
    ev = link(a, b)
    assert ev.linked and ev.same_site == a.frames[0] and ev.distance is None
    assert f"in {a.frames[0]}" in ev.text() and pair_distance(a, b) == 0.0
    assert clusters([a, b, _crash(oops_lines("other"))]) == [0, 0, 2]


def test_the_access_site_alone_needs_the_same_kind_and_file_and_no_boilerplate() -> None:
    site = Features(frames=("tcp_close",), kind="KASAN-USE-AFTER-FREE-READ")
    assert link(site, site).same_site == "tcp_close"
    other_kind = Features(frames=("tcp_close",), kind="WARNING")
    assert not link(site, other_kind).linked
    a = Features(frames=("release",), kind="WARNING", guilty_file="drivers/a/x.c")
    b = Features(frames=("release",), kind="WARNING", guilty_file="drivers/b/y.c")
    assert not link(a, b).linked  # two static functions of one name
    assert not link(Features(frames=("dump_stack",), kind="WARNING"),
                    Features(frames=("dump_stack",), kind="WARNING")).linked  # fmt: skip
    # stored features of an older kassist (no kind) read back and never link by site
    old = Features.from_dict({"frames": ["tcp_close"], "guilty_file": None})
    assert old.kind is None and not link(old, old).linked
    assert Features.from_dict(site.to_dict()) == site
