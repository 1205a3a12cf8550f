"""Triage's corner cases on real kernels' logs (issue 21 item 4, issue 22 item 12).

The logs of ``tests/data/kernel/`` are the serial consoles of Debian's 6.1 kernel under
QEMU, each running one fault of ``tests/fixtures/crashlogs/module/kassist_faults.c``
(``tests/fixtures/crashlogs/make_logs.sh`` writes them); the others come from syzkaller's
corpus, or from the kernel this test runs on.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

from assistant.drafters.summary import context_claims, taint_phrase
from assistant.triage import triage_lines, triage_path
from assistant.triage.console import SYNTHETIC_STAMP
from tests.conftest import CORPUS_DIR, DATA, require
from tests.decorate import wrap_line
from tests.watch_support import segfault_as

KERNEL = DATA / "kernel"
_STAMP = re.compile(r"^\[ *\d+\.\d+\](?:\[ *[CT]\d+\])? ?")


def _corpus_log(number: str) -> list[str]:
    path = CORPUS_DIR / "syzkaller-linux-reports.dev.jsonl"
    require(path.exists(), f"needs the shared corpus at {path}")
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row["id"] == number:
                return str(row["log"]).split("\n")
    raise AssertionError(f"corpus log {number} is missing")


def test_a_panic_a_second_after_an_oops_is_its_own_crash() -> None:
    # The oops at 11.9 s ends at 12.036; "sysrq: Trigger a crash" and the panic come at 13.2.
    result = triage_path(str(KERNEL / "oops-then-panic.log"))
    titles = [c.title for c in result.crashes]
    assert titles == [
        "BUG: unable to handle kernel NULL pointer dereference in kassist_fault_oops",
        "kernel panic: sysrq triggered crash",
    ]
    oops, panic = result.crashes
    assert "Kernel panic" not in oops.report
    assert oops.end_line < panic.start_line
    assert oops.signature != panic.signature


def test_a_panic_right_after_its_oops_stays_in_the_report() -> None:
    # oops=panic: the panic follows the end marker within milliseconds and is part of it.
    result = triage_path(str(DATA / "oops-null-deref-debian-6.1.log"))
    (crash,) = result.crashes  # no "kernel panic: Fatal exception" of its own
    assert crash.panicked


def test_a_soft_lockup_is_one_crash_and_no_event() -> None:
    result = triage_path(str(KERNEL / "softlockup.log"))
    assert result.crashes and {c.type for c in result.crashes} == {"HANG"}
    assert all(c.title.startswith("BUG: soft lockup in ") for c in result.crashes)
    assert len({c.signature for c in result.crashes}) == 1  # one signature for one bug
    assert [e for e in result.events if "lockup" in e.title.lower()] == []


def test_slub_double_free_is_a_crash() -> None:
    checked = triage_path(str(KERNEL / "slub-double-free.log"))  # slub_debug=F
    (crash,) = checked.crashes
    assert crash.title == "BUG: slab double free in kassist_faults_write"
    assert crash.type == "MEMORY_SAFETY_BUG" and not crash.corrupted
    assert crash.task.comm == "kassist-fault"
    hardened = triage_path(str(KERNEL / "slub-double-free-hardened.log"))  # BUG_ON in slub
    assert [c.title for c in hardened.crashes] == ["kernel BUG in kassist_faults_write"]


def test_pagealloc_memory_corruption_is_a_crash() -> None:
    result = triage_path(str(KERNEL / "pagealloc-corruption.log"))  # page_poison=1
    (crash,) = result.crashes
    assert crash.title == "pagealloc: memory corruption in kassist_fault_pagecorrupt"
    assert crash.type == "MEMORY_SAFETY_BUG" and crash.frame == "kassist_fault_pagecorrupt"


def test_slab_bug_lines_of_old_kasan_are_no_crash() -> None:
    # syzkaller's negative test 1: "BUG UNIX (Not tainted): kasan: bad access detected".
    assert triage_lines(_corpus_log("1"), "x").crashes == []


def test_a_lockdep_banner_is_not_glued_to_the_kernel_version_line() -> None:
    # A log without stamps (syzkaller's 27, stamps taken away): the banner is followed by a
    # long "2.6.32-rc6-00035-g8b17a4f #1" line that a mail client did not wrap.
    lines = [_STAMP.sub("", x) for x in _corpus_log("27")]
    (first, *_) = triage_lines(lines, "x").crashes
    assert first.title == "possible deadlock in flush_workqueue"


def test_a_held_lock_line_is_not_glued_to_the_next() -> None:
    # syzkaller's 117 without stamps, mail-wrapped at 72 columns: the held-lock line ends
    # at its address, its symbol on the next line; kernels printed the two apart too.
    lines = [p for x in _corpus_log("117") for p in wrap_line(_STAMP.sub("", x), 72, False)]
    (crash,) = triage_lines(lines, "x").crashes
    assert crash.title == "WARNING: bad unlock balance in ipmr_mfc_seq_stop"
    report = crash.report.split("\n")
    held = next(x for x in report if x.startswith(" #0:"))
    assert held.endswith("at: [<00000000cd36f0f9>]")


def _kmsg_after(marker: str, needle: str, timeout: float) -> list[str]:
    # The dmesg lines after our marker, once one holds `needle`.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
        lines = out.split("\n")
        at = next((i for i, x in enumerate(lines) if x.endswith(f"] {marker}")), -1)
        if at >= 0 and any(needle in x for x in lines[at:]):
            return lines[at:]
        time.sleep(0.2)
    return []


def _records_of(lines: list[str], comms: tuple[str, ...]) -> list[str]:
    # The lines that name one of the tasks `comm[pid]`, each with the Code: line after it.
    out: list[str] = []
    for i, line in enumerate(lines):
        if any(f"{comm}[" in line for comm in comms):
            out.append(line)
            if i + 1 < len(lines) and "] Code: " in lines[i + 1]:
                out.append(lines[i + 1])
    return out


def test_a_forged_comm_that_segfaults_is_a_user_fault_not_a_crash() -> None:
    require(os.geteuid() == 0, "needs root to run a task as nobody and read the kernel log")
    require(
        Path("/proc/sys/debug/exception-trace").read_text().strip() != "0",
        "needs debug.exception-trace (show_unhandled_signals) on to log user faults",
    )
    token = uuid.uuid4().hex[:8]
    marker = f"kassist-forged-{token}"
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write(f"{marker}\n")
    sys.stdout.flush()
    forged = ("WARNING: CPU: 0", "Kernel panic - ", "BUG: KASAN: use", "kernel BUG at x")
    for comm in forged:
        segfault_as(comm)
    # Only our tasks' records (each fault line and the Code: line after it): another
    # program may write crash-like lines to the kernel log meanwhile.
    lines = _records_of(_kmsg_after(marker, f"{forged[-1]}[", 60), forged)
    faults = [x for x in lines if ": segfault at " in x]
    require(len(faults) >= 2, "the kernel rate-limited the segfault lines (printk_ratelimit)")
    result = triage_lines(lines, "dmesg")
    assert result.crashes == []
    events = [e for e in result.events if e.type == "SEGFAULT"]
    assert len(events) == len(faults)
    assert {e.details["comm"] for e in events} <= set(forged)
    assert len({e.signature for e in events}) == 1  # a new name is no new signature


def test_an_oom_kill_of_the_real_kernel_keeps_a_clean_gfp_mask(tmp_path: Path) -> None:
    # A memory cgroup with a 16 MiB limit and a task that wants 64 MiB: the real kernel's
    # OOM report, read back from its ring buffer.
    require(os.geteuid() == 0, "needs root for a memory cgroup")
    v1 = Path("/sys/fs/cgroup/memory")
    v2 = Path("/sys/fs/cgroup/unified")
    token = uuid.uuid4().hex[:8]
    if (v1 / "memory.limit_in_bytes").exists():
        group, limit = v1 / f"kassist-oom-{token}", "memory.limit_in_bytes"
    else:
        require("memory" in (v2 / "cgroup.controllers").read_text(), "needs a memory cgroup")
        group, limit = v2 / f"kassist-oom-{token}", "memory.max"
    group.mkdir()
    try:
        (group / limit).write_text(str(16 << 20))
        marker = f"kassist-oom-{token}"
        with open("/dev/kmsg", "w") as kmsg:
            kmsg.write(f"{marker}\n")
        code = (
            f"open('{group}/cgroup.procs', 'w').write(str(__import__('os').getpid()));"
            "b = bytearray(64 << 20)"
        )
        subprocess.run([sys.executable, "-c", code], check=False, timeout=120)
        lines = _kmsg_after(marker, "Killed process", 60)
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
    require(bool(lines), "the kernel logged no OOM kill (rate-limited)")
    # The OOM report alone, from "invoked oom-killer" to "Killed process": other programs
    # may log meanwhile.
    start = next((i for i, x in enumerate(lines) if "invoked oom-killer" in x), 0)
    end = next(i for i, x in enumerate(lines) if "Killed process" in x and i >= start)
    result = triage_lines(lines[start : end + 1], "dmesg")
    (oom,) = [e for e in result.events if e.type == "OOM-KILL"]
    gfp = oom.details["gfp_mask"]
    assert gfp.startswith("0x") and not gfp.endswith(",") and "," not in gfp
    assert result.crashes == []


def test_synthetic_stamps_never_count_as_late() -> None:
    # Stamps a decoration invented (journal lines) say nothing of time: the panic joins.
    lines = (DATA / "oops-null-deref-debian-6.1.log").read_text().split("\n")
    restamped = [SYNTHETIC_STAMP + _STAMP.sub("", x) for x in lines]
    assert len(triage_lines(restamped, "x").crashes) == 1


def test_syzbot_s_release_word_still_gives_task_cpu_and_taint() -> None:
    # syzbot's kernels print "syzkaller" as the release: "CPU: 0 UID: 0 PID: 10040 Comm:
    # kworker/u8:0 Tainted: G             L      syzkaller #0 PREEMPT"; a hung-task report
    # says it on its own line: "      Tainted: G             L      syzkaller #0".
    (crash, *_) = triage_lines(_corpus_log("999"), "corpus:999").crashes
    assert (crash.task.comm, crash.task.cpu) == ("kworker/u8:0", 0)
    assert crash.kernel.release == "syzkaller"
    assert crash.kernel.tainted == ["L"]
    (hung, *_) = triage_lines(_corpus_log("1000"), "corpus:1000").crashes
    assert hung.title.startswith("INFO: task hung in ")
    assert (hung.kernel.release, hung.kernel.tainted) == ("syzkaller", ["L"])


def test_slub_s_header_gives_the_taint() -> None:
    # "BUG kmalloc-8 (Tainted: G    B         ): Object already free", no CPU line after it
    (crash, *_) = triage_lines(_corpus_log("82"), "corpus:82").crashes
    assert crash.title == "BUG: Object already free"
    assert crash.kernel.tainted == ["B"]
    (debian, *_) = triage_path(str(KERNEL / "slub-double-free.log")).crashes
    assert set(debian.kernel.tainted) == {"O", "E"}


def test_a_taint_whose_letters_were_not_read_is_never_said_to_be_none() -> None:
    # the report says "Tainted:" but no letter kassist knows: its taint is unknown, and a
    # sentence that the kernel was not tainted is refused
    lines = _corpus_log("82")
    forged = [line.replace("(Tainted: G    B         )", "(Tainted: G    ?    )") for line in lines]
    (crash, *_) = triage_lines(forged, "forged").crashes
    assert crash.kernel.tainted == []
    assert taint_phrase(crash) == "unknown"
    assert context_claims("The kernel was not tainted.", crash)


def test_rhel_s_kdump_word_in_the_cpu_line_still_gives_task_and_taint() -> None:
    # "CPU: 185 PID: 11718 Comm: dbus-daemon Kdump: loaded Tainted: G        W  4.20.0-rc2+ #4"
    (crash, *_) = triage_lines(_corpus_log("316"), "corpus:316").crashes
    assert (crash.task.comm, crash.task.cpu, crash.task.pid) == ("dbus-daemon", 185, 11718)
    assert (crash.kernel.release, crash.kernel.tainted) == ("4.20.0-rc2+", ["W"])
