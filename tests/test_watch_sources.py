"""``kassist watch``'s sources and its life under faults (issue 21 item 2, issue 22 items 13-15).

Pipes and followed files fed by a writer over time, the kernel's own records against those
user space wrote, a store on a full file system, a kdump directory that appears later, and
a hook that hangs. No timed assertion: each waits for its condition under the one hang guard
(`tests.conftest.wait_until`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from assistant.triage import triage_lines
from tests.conftest import DATA, HANG_S, ROOT, require, run_kassist, wait_until
from tests.watch_support import (
    REAL_WATCH,
    WatchProcess,
    devkmsg_on,
    kmsg_write,
    oops_lines,
    require_kmsg_writer,
    segfault_as,
    stored_count,
    wait_for,
)

KERNEL = DATA / "kernel"


def _title(log: Path) -> str:
    return triage_lines(log.read_text().split("\n"), "x").crashes[0].title


def _lines(log: Path) -> list[str]:
    return log.read_text().split("\n")


def _append(path: Path, lines: list[str]) -> None:
    with path.open("a") as fh:
        fh.write("\n".join(lines) + "\n")
        fh.flush()


def _watch_cmd(tmp: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "assistant", "watch", "--no-llm", "--db", str(tmp / "c.db"),
            "--state-dir", str(tmp / "s"), *args]  # fmt: skip


# -- a pipe and a followed file -------------------------------------------------------------


def test_a_pipe_hands_each_report_on_as_its_window_closes(tmp_path: Path) -> None:
    # A real kernel's console (five soft lockups) written into `--source file:-` a report at
    # a time: each is stored while the pipe is still open, not when the input ends.
    lines = _lines(KERNEL / "softlockup.log")
    title = _title(KERNEL / "softlockup.log")
    ends = [i for i, x in enumerate(lines) if "soft lockup - CPU#" in x][1:]  # next headers
    err = tmp_path / "watch.err"
    proc = subprocess.Popen(
        _watch_cmd(tmp_path, "--source", "file:-"),
        stdin=subprocess.PIPE,
        stderr=err.open("wb"),
        cwd=ROOT,
    )
    assert proc.stdin is not None
    try:
        done = 0
        for stored, end in enumerate(ends[:2], start=1):
            proc.stdin.write(("\n".join(lines[done:end]) + "\n").encode())
            proc.stdin.flush()
            done = end
            wait_until(
                lambda n=stored: stored_count(tmp_path / "c.db", title) >= n,  # type: ignore[misc]
                f"{stored} soft lockups stored",
                context=err.read_text,
            )
            assert proc.poll() is None  # still reading: the input has not ended
        proc.stdin.write(("\n".join(lines[done:]) + "\n").encode())
        proc.stdin.close()
        proc.wait(timeout=HANG_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.read_text()
    assert stored_count(tmp_path / "c.db", title) == 5


def test_a_followed_file_is_read_like_tail_minus_f(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("")  # empty at the start: waited on, not an error
    watch = WatchProcess(tmp_path, sources=(f"file:{log}",), command=REAL_WATCH).start()
    db = watch.db
    try:
        # appended lines, a report at a time
        oops = KERNEL / "oops-then-panic.log"
        _append(log, _lines(oops)[:50])
        _append(log, _lines(oops)[50:])
        wait_until(
            lambda: stored_count(db, _title(oops)) == 1,
            "the oops stored once",
            context=watch.log.read_text,
        )
        # rotation: the old file moved away, a new one at the path
        log.rename(tmp_path / "console.log.1")
        hung = DATA / "hung-rtnl_lock.log"
        log.write_text(hung.read_text())
        wait_until(
            lambda: stored_count(db, _title(hung)) == 1,
            "the rotated file's hang stored once",
            context=watch.log.read_text,
        )
        # truncation (copytruncate): read again from the start
        with log.open("r+") as fh:
            fh.truncate(0)
        pagealloc = KERNEL / "pagealloc-corruption.log"
        _append(log, _lines(pagealloc))
        wait_until(
            lambda: stored_count(db, _title(pagealloc)) == 1,
            "the truncated file's crash stored once",
            context=watch.log.read_text,
        )
        # 50 lines, then 682 more holding 7 crashes (the console capture)
        crash_lines = [
            f"[{10 + i:5d}.000000] {x}" for i in range(7) for x in oops_lines("tailf", i)
        ]
        _append(log, ["[    0.000000] boot line"] * 50)
        _append(log, crash_lines + ["[  100.000000] done"] * (682 - len(crash_lines)))
        wait_until(
            lambda: stored_count(db, "kassist_wtailf_level") == 7,
            "the 7 crashes of 682 lines stored",
            context=watch.log.read_text,
        )
        assert watch.alive()
    finally:
        watch.stop()
    assert watch.proc is not None and watch.proc.returncode == 0, watch.log.read_text()


# -- the kernel's own records --------------------------------------------------------------


def _rows(db: Path) -> list[dict[str, Any]]:
    listing = run_kassist(["crashes", "list", "--db", str(db), "--format", "json"])
    return json.loads(listing.stdout) if listing.returncode == 0 else []


def _show(db: Path, signature: object) -> dict[str, Any]:
    args = ["crashes", "show", str(signature), "--db", str(db), "--format", "json"]
    shown: dict[str, Any] = json.loads(run_kassist([*args, "--reports", "100000"]).stdout)
    return shown


def _hits(db: Path, kind: str) -> list[dict[str, Any]]:
    return [h for r in _rows(db) if r["type"] == kind for h in _show(db, r["signature"])["hits"]]


def _reported(db: Path, pid: int) -> bool:
    # A user-space fault of this pid is stored (its details name the pid).
    return any(f'"pid": "{pid}"' in str(h["report"]) for h in _hits(db, "SEGFAULT"))


def test_records_user_space_wrote_and_forged_task_names_are_not_crashes(tmp_path: Path) -> None:
    require_kmsg_writer()
    require(
        Path("/proc/sys/debug/exception-trace").read_text().strip() != "0",
        "needs debug.exception-trace (show_unhandled_signals) on to log user faults",
    )
    token = uuid.uuid4().hex[:10].replace("0", "a")
    watch = WatchProcess(tmp_path, "--metrics-file", str(tmp_path / "m.prom"), command=REAL_WATCH)
    with devkmsg_on():
        watch.start()
        try:
            oops = oops_lines(token)
            kmsg_write(oops)  # root's echo > /dev/kmsg: facility LOG_USER
            # then the kernel's own line, after it in the ring buffer: a task named like a
            # crash header, as nobody, segfaults (retried if printk's ratelimit ate it)
            seen: list[str] = []
            for _ in range(10):
                pid = segfault_as("WARNING: CPU: 0")
                if wait_for(lambda p=pid: _reported(watch.db, p), 20):  # type: ignore[misc]
                    seen.append(str(pid))
                    break
            require(bool(seen), "the kernel rate-limited every segfault line (printk_ratelimit)")
        finally:
            watch.stop()
    rows = _rows(watch.db)
    assert not [r for r in rows if f"kassist_w{token}_level" in r["title"]]
    assert not [r for r in rows if "CPU: 0[" in r["title"] and r["type"] != "SEGFAULT"]
    segfaults = [r for r in rows if r["type"] == "SEGFAULT"]
    assert len(segfaults) == 1  # one signature, whatever the names
    prom = (tmp_path / "m.prom").read_text()
    skipped = next(x for x in prom.splitlines() if x.startswith("kassist_watch_records_not_kernel"))
    assert int(skipped.split()[1]) >= len(oops)


# -- faults: a full store, a late kdump directory, a hanging hook ------------------------------


@contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "kassist-test", str(where)],
                   check=True)  # fmt: skip
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(fs: Path) -> Path:
    filler = fs / "filler"
    with filler.open("wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


def test_a_full_store_is_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    require(os.geteuid() == 0, "needs root to mount a small tmpfs")
    log = tmp_path / "console.log"
    log.write_text("")
    with _tmpfs(tmp_path / "small", "1m") as fs:
        watch = WatchProcess(tmp_path, sources=(f"file:{log}",), command=REAL_WATCH,
                             db=fs / "c.db", state=fs / "s")  # fmt: skip
        watch.start()
        try:
            filler = _fill(fs)
            crashes = [KERNEL / "oops-then-panic.log", DATA / "hung-rtnl_lock.log"]
            for c in crashes:
                _append(log, _lines(c))
            wait_until(
                lambda: "retrying" in watch.log.read_text(),
                "the full store retried",
                context=watch.log.read_text,
            )
            assert watch.alive()
            filler.unlink()
            for c in crashes:
                wait_until(
                    lambda c=c: stored_count(watch.db, _title(c)) == 1,  # type: ignore[misc]
                    f"{c.name} stored once after the store had room",
                    context=watch.log.read_text,
                )
            assert watch.alive()
        finally:
            watch.stop()
    assert watch.proc is not None and watch.proc.returncode == 0, watch.log.read_text()


def test_a_kdump_directory_that_appears_later_is_watched(tmp_path: Path) -> None:
    top = tmp_path / "var" / "crash"  # neither exists yet
    watch = WatchProcess(tmp_path, sources=(f"kdump:{top}",), command=REAL_WATCH).start()
    try:
        stamp = top / "202612070100"
        stamp.mkdir(parents=True)
        (stamp / "dmesg.202612070100").write_text((DATA / "hung-rtnl_lock.log").read_text())
        title = _title(DATA / "hung-rtnl_lock.log")
        wait_until(
            lambda: stored_count(watch.db, title) == 1,
            "the kdump directory's hang stored once",
            context=watch.log.read_text,
        )
    finally:
        watch.stop()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")  # a zombie no one reaped yet is dead


def test_stopping_kills_a_hanging_hook_and_what_it_started(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text((DATA / "hung-rtnl_lock.log").read_text())
    pids = tmp_path / "pids"
    hook = f"sh -c 'echo $$ > {pids}.sh; sleep 1000 & echo $! > {pids}.sleep; wait'"
    watch = WatchProcess(tmp_path, "--hook-cmd", hook, sources=(f"file:{log}",),
                         command=REAL_WATCH).start()  # fmt: skip
    try:
        wait_until(
            lambda: all(Path(f"{pids}.{n}").exists() and Path(f"{pids}.{n}").read_text().strip()
                        for n in ("sh", "sleep")),
            "the hook's shell and sleep started", context=watch.log.read_text,
        )  # fmt: skip
        started = [int(Path(f"{pids}.{n}").read_text()) for n in ("sh", "sleep")]
        assert not any(_gone(p) for p in started)
    finally:
        watch.stop()
    assert watch.proc is not None and watch.proc.returncode == 0
    assert all(_gone(p) for p in started), started


# -- when the kernel crashed --------------------------------------------------------------------


def test_kmsg_crashes_keep_when_the_kernel_crashed(tmp_path: Path) -> None:
    require_kmsg_writer()
    token = uuid.uuid4().hex[:10].replace("0", "a")
    title = triage_lines(oops_lines(token), "x").crashes[0].title
    with devkmsg_on():
        watch = WatchProcess(tmp_path).start()
        try:
            before = time.time()
            kmsg_write(oops_lines(token))
            after = time.time()
            wait_until(
                lambda: stored_count(watch.db, title) == 1,
                "the oops stored once",
                context=watch.log.read_text,
            )
        finally:
            watch.stop()
    row = next(r for r in _rows(watch.db) if r["title"] == title)
    shown = _show(watch.db, row["signature"])
    (hit,) = shown["hits"]
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    assert 0 < hit["uptime"] <= uptime
    assert before - 5 <= hit["crashed_at"] <= after + 5  # boot time + printk stamp
    assert hit["crashed_at"] <= hit["seen"]
    assert shown["last_crashed"] == hit["crashed_at"]
    listing = run_kassist(["crashes", "list", "--db", str(watch.db)]).stdout
    assert "crashed " in listing and "stored " in listing


def test_journal_crashes_keep_the_journals_own_time(tmp_path: Path) -> None:
    from tests.watch_support import journal_file

    token = uuid.uuid4().hex[:10].replace("0", "a")
    title = triage_lines(oops_lines(token), "x").crashes[0].title
    journal = tmp_path / "kernel.journal"
    realtime_us = int(time.time() * 1e6) - 3_600_000_000  # an hour before it is read
    journal_file(journal, oops_lines(token, marker=1), start_us=5_000_000, realtime_us=realtime_us)
    proc = run_kassist(["watch", "--once", "--source", f"journal:{journal}", "--db",
                        str(tmp_path / "c.db"), "--state-dir", str(tmp_path / "s")])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    row = next(r for r in _rows(tmp_path / "c.db") if r["title"] == title)
    (hit,) = _show(tmp_path / "c.db", row["signature"])["hits"]
    # journal_file stamps line i at its start time + i µs (realtime and monotonic alike)
    header = next(i for i, x in enumerate(oops_lines(token, marker=1)) if "BUG:" in x)
    assert abs(hit["uptime"] - (5_000_000 + header) / 1e6) < 1e-6
    assert abs(hit["crashed_at"] - (realtime_us + header) / 1e6) < 1e-6
    assert hit["seen"] - hit["crashed_at"] > 3000  # stored now, crashed an hour ago
