"""The pure helpers of crash description (assistant.triage.parse), on inline text."""

from __future__ import annotations

import pytest

from assistant.triage import parse, rules
from assistant.triage.console import continues, join_wrapped, unwrapped
from probes.printk_time import LINE_STAMP, STAMP, format_stamp, stamp_us


@pytest.mark.parametrize(
    ("line", "context"),
    [
        ("[   12.345678] BUG: x", parse.CONSOLE),
        ("[   12.345678][  T123] BUG: x", "[  T123]"),
        ("<4>[   12.345678][    C1] BUG: x", "[    C1]"),
        ("** 12 printk messages dropped ** [   12.3] BUG: x", parse.CONSOLE),
        ("syzkaller login: [   12.3] BUG: x", parse.CONSOLE),
        ("BUG: x", ""),
        ("[  12] BUG: x", ""),
    ],
)
def test_extract_context(line: str, context: str) -> None:
    assert parse.extract_context(line) == context


def test_strip_line_prefix_and_questionable_frames() -> None:
    assert parse.strip_line_prefix("[   1.000000] BUG: x", parse.CONSOLE) == ("BUG: x", False)
    assert parse.strip_line_prefix("[   1.000000]  ? foo+0x1/0x2", parse.CONSOLE) == (
        " foo+0x1/0x2",
        True,
    )
    assert parse.strip_line_prefix("[   1.0]  foo+0x1/0x2 (unreliable)", parse.CONSOLE) == (
        " foo+0x1/0x2",
        True,
    )
    assert parse.strip_line_prefix(" ? foo+0x1/0x2", "") == (" foo+0x1/0x2", True)
    assert parse.strip_line_prefix(" [<ffffffff81000000>] ? foo+0x1/0x2", "")[1]
    assert parse.strip_line_prefix("are you sure ? yes", "") == ("are you sure ? yes", False)
    # <EOI> lines are never questionable
    assert parse.strip_line_prefix("[   1.0]  ? <EOI> foo+0x1/0x2", parse.CONSOLE)[1] is False


def test_first_oops_takes_the_table_order_and_the_suppressions() -> None:
    oops = parse.first_oops("BUG: KASAN: use-after-free in foo+0x1/0x2")
    assert oops is not None and oops.header == "BUG:"
    gpf = parse.first_oops("general protection fault: 0000 [#1] SMP KASAN")
    assert gpf is not None and gpf.header == "general protection fault"
    assert parse.first_oops("nothing to see here") is None
    # a suppressed form of a header is no header of that family
    assert parse.first_oops("INFO: lockdep is turned off.") is None
    warning = next(o for o in rules.OOPSES if o.header == "WARNING:")
    assert not parse.match_oops(
        "WARNING: /etc/ssh/moduli does not exist, using fixed modulus", warning
    )
    assert parse.match_oops("WARNING: CPU: 0 PID: 1 at net/core/dev.c:1 foo+0x1/0x2", warning)


def test_normalise_title_replaces_what_varies() -> None:
    title = parse.normalise_title("KASAN: use-after-free Read in foo at addr ffff8801d0c6b080")
    assert "ffff8801d0c6b080" not in title and title.startswith("KASAN: use-after-free Read in foo")
    assert parse.normalise_title("a\tb  c\x01") == "a b c"
    assert len(parse.normalise_title("x" * 1000)) <= rules.MAX_TITLE_LEN


def test_stall_and_hang_frames() -> None:
    frames = ["foo", "bar", "process_one_work", "worker_thread"]
    assert parse.stall_frame(frames) == ("bar", 1)
    assert parse.stall_frame(["a", "b"]) == ("", -1)
    assert parse.hang_frame(["schedule", "rtnl_lock", "dev_ioctl"]) == ("rtnl_lock", 1)
    assert parse.hang_frame(["__schedule", "schedule", "down_write", "foo_ioctl"]) == (
        "foo_ioctl",
        3,
    )


def test_extract_description_names_the_guilty_frame() -> None:
    text = (
        "BUG: KASAN: use-after-free in ip6_send_skb+0x2f5/0x330 net/ipv6/ip6_output.c:1748\n"
        "Read of size 8 at addr ffff88004fab1858 by task syz-executor0/30168\n"
        "Call Trace:\n dump_stack+0x292/0x395\n ip6_send_skb+0x2f5/0x330\n"
    )
    oops = parse.first_oops(text.split("\n", maxsplit=1)[0])
    assert oops is not None
    desc = parse.extract_description(text, oops)
    assert desc.title == "KASAN: use-after-free Read in ip6_send_skb"
    assert not desc.corrupted


def test_is_corrupted_wants_a_stack_trace() -> None:
    oops = parse.first_oops("general protection fault: 0000 [#1]")
    assert oops is not None
    fmt = next(f for f in oops.formats if not f.no_stack_trace)
    bad, reason = parse.is_corrupted("general protection fault in foo", "no trace\n", fmt)
    assert bad and reason == "no stack trace in report"
    good = "Call Trace:\n foo+0x1/0x2\n bar+0x1/0x2\n baz+0x1/0x2\n"
    assert parse.is_corrupted("general protection fault in foo", good, fmt) == (False, "")
    assert parse.is_corrupted("x [  12.345678] y", good, fmt)[0]  # a stamp in a title


def test_guilty_file_skips_generic_files() -> None:
    report = [
        " kasan_report+0x230/0x340 mm/kasan/report.c:408",
        " ip6_send_skb+0x2f5/0x330 net/ipv6/ip6_output.c:1748",
    ]
    assert parse.guilty_file("KASAN: use-after-free Read in ip6_send_skb", report) == (
        "net/ipv6/ip6_output.c"
    )
    assert parse.guilty_file("x", ["no files here"]) is None


def test_printk_stamp_helpers() -> None:
    assert stamp_us("[   12.500000] x") == 12_500_000
    assert stamp_us("x [1.0]") is None
    assert format_stamp(12_500_000) == "[   12.500000]"
    m = LINE_STAMP.match("[   12.500000][  T42] oops")
    assert m is not None and m.group(3) == "T42"
    assert STAMP.search("a [  1.2] b") is not None


def test_mail_wrap_helpers() -> None:
    head = "[   95.152992] BUG: KASAN: use-after-free in "
    assert continues(
        head, True, True, "snd_seq_queue_alloc+0x670/0x690", "snd_seq_queue_alloc+0x670/0x690"
    )
    assert join_wrapped(head, "x+0x1/0x2") == head + "x+0x1/0x2"
    assert join_wrapped(head.rstrip(), "x") == head.rstrip() + " x"
    # the tail's word would have fit before the wrap column: no wrap broke there
    assert not continues("[  1.0] short line", True, False, "word", "word")
    # a line with a stamp of its own is a line of its own
    assert not continues(head, True, True, "[  1.0] x", "[  1.0] x")
    # in a log without stamps, a new sentence after a header is a line of its own
    header = "BUG: KASAN: slab-use-after-free in __list_add_valid_or_report+0x16a/0x1a0"
    assert not continues(header, False, True, "Read of size 8 at", "Read of size 8 at")
    assert continues(header, False, True, "net/core/dev.c:12", "net/core/dev.c:12")
    assert unwrapped("x " * 50)
    assert not unwrapped("y" * 120)  # no space to break at: a mail client leaves it long
