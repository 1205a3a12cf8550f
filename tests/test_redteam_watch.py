"""``kassist watch`` and triage against forged kernel lines (the red team's round after
issue 22): a task's name is data wherever the kernel quotes it.

Issue 22 closed the user-fault lines (``comm[pid]: segfault at``); the kernel quotes a
task's name in more lines that any local user can trigger, and triage searched for crash
headers anywhere in a line. Each test here failed before the fix.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from assistant.triage import triage_lines
from assistant.triage.parse import first_oops
from tests.conftest import require
from tests.watch_support import segfault_as

#: Names a task may take (15 bytes at most) that are crash headers.
FORGED = ("Kernel panic - ", "WARNING: CPU: 0", "BUG: KASAN: use", "INFO: task hun")

#: x86-64: ``xor esp, esp; mov eax, 15 (rt_sigreturn); syscall`` — a sigreturn whose frame
#: cannot be read: the kernel logs ``comm[pid] bad frame in rt_sigreturn ...``.
BAD_SIGRETURN = bytes([0x31, 0xE4, 0xB8, 0x0F, 0, 0, 0, 0x0F, 0x05])
#: A call into the vsyscall page off any entry: ``comm[pid] misaligned vsyscall ... ip:``.
MISALIGNED_VSYSCALL = 0xFFFFFFFFFF600001


def _bad_sigreturn() -> None:
    code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(BAD_SIGRETURN)
    ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(code)))()


def _misaligned_vsyscall() -> None:
    ctypes.CFUNCTYPE(None)(MISALIGNED_VSYSCALL)()


def _kernel_log() -> list[str]:
    return subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout.split("\n")


@pytest.mark.parametrize(
    ("fault", "says"),
    [(_bad_sigreturn, "bad frame in"), (_misaligned_vsyscall, "vsyscall")],
    ids=["bad-sigreturn-frame", "misaligned-vsyscall"],
)
def test_a_task_named_like_a_crash_header_forges_no_crash(
    fault: Callable[[], None], says: str
) -> None:
    require(os.geteuid() == 0, "needs root to run a task as nobody and read the kernel log")
    require(platform.machine() == "x86_64", "these faults are x86-64's")
    require(
        Path("/proc/sys/debug/exception-trace").read_text().strip() != "0",
        "needs debug.exception-trace (show_unhandled_signals) on to log user faults",
    )
    marker = f"kassist-redteam-{uuid.uuid4().hex[:8]}"
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write(f"{marker}\n")
    pids = [segfault_as(comm, fault) for comm in FORGED]
    # The kernel rate-limits these lines: retried until one of them shows (or a minute).
    logged: list[str] = []
    for _ in range(30):
        lines = _kernel_log()
        at = next((i for i, x in enumerate(lines) if x.endswith(f"] {marker}")), len(lines))
        logged = [x for x in lines[at:] if says in x and any(f"[{p}]" in x for p in pids)]
        if logged:
            break
        pids.append(segfault_as(FORGED[len(pids) % len(FORGED)], fault))
        time.sleep(2)
    require(bool(logged), f"the kernel logged no {says!r} line (rate-limited or not built in)")
    assert all(first_oops(x) is None for x in logged), logged
    result = triage_lines(lines[at:], "dmesg")
    forged = [c.title for c in result.crashes if says in c.title or "[NUM]" in c.title]
    assert forged == []


#: Lines of the kernel's formats that quote a task's name (or a path it chose), each with
#: a name that is a crash header; the kernel here cannot be made to print all of them
#: (no memory controller delegated, no audit), so their text is checked.
QUOTING = {
    "oom-invoked": "{} invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    "oom-killed": "Memory cgroup out of memory: Killed process 1234 ({}) total-vm:1000kB, "
    "anon-rss:100kB, file-rss:0kB, shmem-rss:0kB, UID:65534 pgtables:40kB oom_score_adj:0",
    "oom-kill": "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/x,task_memcg=/x,task={},pid=1234,uid=65534",
    "oom-reaper": "oom_reaper: reaped process 1234 ({}), now anon-rss:0kB, file-rss:0kB",
    "split-lock": "x86/split lock detection: #AC: {}/1234 took a split_lock trap at address: 0x4",
    "exec-stack": "process '/tmp/{}/a' started with executable stack",
    "stack-depth": "{} (1234) used greatest stack depth: 11960 bytes left",
    "drop-caches": "{} (1234): drop_caches: 3",
    "syslog": "{} (1234): Attempt to access syslog with CAP_SYS_ADMIN but no CAP_SYSLOG",
    "audit": 'audit: type=1701 audit(1.2:3): auid=1 uid=65534 pid=5 comm="x" exe="/tmp/{}" sig=11',
}


@pytest.mark.parametrize("kind", sorted(QUOTING))
@pytest.mark.parametrize("name", FORGED)
def test_a_name_quoted_in_any_kernel_line_is_no_header(kind: str, name: str) -> None:
    line = f"[  12.345678] {QUOTING[kind].format(name)}"
    assert first_oops(line) is None
    assert triage_lines([line], "dmesg").crashes == []


def test_a_hung_task_keeps_its_family_whatever_its_name() -> None:
    # A real hang (a task in D state for 120 s: any user with a FUSE mount can make one) of
    # a task named like another crash: one family, one signature, whatever the name.
    titles = set()
    for name in (*FORGED, "kworker/0:1"):
        report = [
            f"[  99.000000] INFO: task {name}:1234 blocked for more than 120 seconds.",
            "[  99.000001]       Not tainted 6.18.0 #1",
            "[  99.000002] Call Trace:",
            "[  99.000003]  <TASK>",
            "[  99.000004]  __schedule+0x1/0x2",
            "[  99.000005]  schedule+0x1/0x2",
            "[  99.000006]  fuse_wait_answer+0x1/0x2",
            "[  99.000007]  </TASK>",
        ]
        titles |= {c.title for c in triage_lines(report, "dmesg").crashes}
    assert len(titles) == 1, titles
    assert next(iter(titles)).startswith("INFO: task hung")
