"""What a person meets with ``kassist triage``, ``crashes`` and ``report`` (issue 21 items 3,
5, 6, 9; issue 22 item 14): inputs that never end, output that groups repeats and never
sends a log's escapes to the terminal, stored crashes by signature, and crash times."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

from assistant.triage import triage_path
from assistant.triage.store import CrashStore
from tests.conftest import DATA, HANG_S, ROOT, require, run_kassist
from tests.pg_support import postgres

KERNEL = DATA / "kernel"
#: OSC 52 (writes the operator's clipboard) and OSC 0 (retitles the terminal).
OSC52 = "\x1b]52;c;cm0gLXJmIC8=\x07"
OSC0 = "\x1b]0;pwned\x07"


def _hostile_log(tmp: Path) -> Path:
    # A real kernel's oops with escapes in its lines, as a file: source could carry them.
    lines = (KERNEL / "oops-then-panic.log").read_text().split("\n")
    at = next(i for i, x in enumerate(lines) if "Call Trace:" in x)
    lines.insert(at, f"[   11.941000] {OSC52}")
    lines = [x.replace("Comm: kassist-fault", f"Comm: {OSC0}") for x in lines]
    path = tmp / "hostile.log"
    path.write_text("\n".join(lines))
    return path


def _raw_escapes(text: str) -> list[str]:
    # What `cat -v` would show as ^[ (ESC) or ^G (BEL): control bytes that reach a terminal.
    return sorted({f"\\x{ord(c):02x}" for c in text if ord(c) < 32 and c not in "\n"})


def test_escapes_in_logs_never_reach_the_terminal(tmp_path: Path) -> None:
    log = _hostile_log(tmp_path)
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    triage = run_kassist(["triage", "--store", str(log)], env=env)
    assert triage.returncode == 0, triage.stderr
    assert _raw_escapes(triage.stdout + triage.stderr) == []
    (crash, _panic) = triage_path(str(log)).crashes
    show = run_kassist(["crashes", "show", crash.signature], env=env)
    assert show.returncode == 0, show.stderr
    assert _raw_escapes(show.stdout) == []
    assert "\\x1b]52;c;" in show.stdout  # shown escaped, not dropped
    out = tmp_path / "report.md"
    report = run_kassist(["report", "--no-llm", "-o", str(out), str(log)], env=env)
    assert report.returncode == 0, report.stderr
    assert _raw_escapes(report.stdout) == [] and _raw_escapes(out.read_text()) == []
    stored = run_kassist(["report", "--no-llm", crash.signature[:8]], env=env)
    assert stored.returncode == 0, stored.stderr
    assert _raw_escapes(stored.stdout) == []


def test_report_takes_a_stored_crashs_signature(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    log = DATA / "kasan-uaf-ip6_send_skb.log"
    assert run_kassist(["triage", "--store", str(log)], env=env).returncode == 0
    (crash,) = triage_path(str(log)).crashes
    by_file = run_kassist(["report", "--no-llm", str(log)], env=env)
    by_sig = run_kassist(["report", "--no-llm", crash.signature[:6]], env=env)
    assert by_sig.returncode == 0, by_sig.stderr
    assert crash.title in by_sig.stdout and "ip6_send_skb" in by_sig.stdout
    assert by_sig.stdout.split("\n")[0] == by_file.stdout.split("\n")[0]
    missing = run_kassist(["report", "--no-llm", "deadbeef"], env=env)
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1
    assert "no crash 'deadbeef' in the store" in missing.stderr


def test_triage_of_dev_kmsg_reads_the_ring_buffer_now(tmp_path: Path) -> None:
    require(os.access("/dev/kmsg", os.R_OK), "needs to read /dev/kmsg (root, or dmesg_restrict=0)")
    # A hang would be a timeout here: /dev/kmsg never ends, triage must not wait for it.
    proc = run_kassist(["triage", "--format", "json", "/dev/kmsg"])
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["source"] == "/dev/kmsg"
    # Kernel lines, unless a flood of records user space wrote overwrote them all: that
    # buffer holds no crash and says what it left out (never "is empty").
    left_out = [w for w in doc["warnings"] if "written by user space left out" in w]
    assert doc["lines"] > 0 or left_out, doc
    from probes.logs.kmsg import read_ring_buffer

    assert read_ring_buffer()  # the function the chat calls, the same snapshot


def test_a_fifo_without_writer_and_a_device_are_refused_in_one_line(tmp_path: Path) -> None:
    fifo = tmp_path / "console.fifo"
    os.mkfifo(fifo)
    for path, expected in ((fifo, "a FIFO with no writer"), (Path("/dev/tty"), "a character")):
        proc = run_kassist(["triage", str(path)])
        assert proc.returncode != 0
        (line,) = proc.stderr.strip().splitlines()
        assert expected in line and "kassist watch --source file:" in line


def test_a_fifo_with_a_writer_is_read_to_its_end(tmp_path: Path) -> None:
    fifo = tmp_path / "console.fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistant", "triage", str(fifo)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    with fifo.open("w") as writer:  # opens once triage holds the reading end
        writer.write((DATA / "hung-rtnl_lock.log").read_text())
    out, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 0, err
    assert "INFO: task hung in rtnl_lock" in out


def test_a_directory_that_is_no_kdump_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "dmesg").write_bytes(Path(sys.executable).read_bytes()[:4096])
    for path in (tmp_path, tmp_path / "bin"):
        proc = run_kassist(["triage", str(path)])
        assert proc.returncode != 0 and proc.stdout == ""
        (line,) = proc.stderr.strip().splitlines()
        assert "not a kdump one" in line
    crash = tmp_path / "crash" / "202612070100"
    crash.mkdir(parents=True)
    (crash / "dmesg.202612070100").write_text((DATA / "hung-rtnl_lock.log").read_text())
    assert "rtnl_lock" in run_kassist(["triage", str(tmp_path / "crash")]).stdout


def test_triage_of_stdin_on_a_terminal_says_it_reads_stdin() -> None:
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "assistant", "triage", "-"],
            cwd=ROOT, stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        os.write(controller, b"\x04")  # Ctrl-D: the end of an empty input
        _, err = proc.communicate(timeout=HANG_S)
    finally:
        os.close(controller)
        os.close(terminal)
    assert b"reading the log from standard input" in err


def test_repeats_are_grouped_and_memory_stays_bounded(tmp_path: Path) -> None:
    # 300,000 user-space segfault lines in the kernel's own format.
    line = next(
        x for x in (DATA / "production-events.log").read_text().splitlines() if "segfault" in x
    )
    body = line.split("] ", 1)[1]
    log = tmp_path / "segfaults.log"
    with log.open("w") as fh:
        for i in range(300_000):
            fh.write(f"[{1000 + i // 1000:5d}.{i % 1000:06d}] " + body.replace("9981", str(i)))
            fh.write("\n")
    probe = (
        "import resource, subprocess, sys;"
        f"p = subprocess.run([sys.executable, '-m', 'assistant', 'triage', {str(log)!r}],"
        " capture_output=True, text=True);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
        "sys.stdout.write(p.stdout)"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)  # fmt: skip
    rss_kib, *out = proc.stdout.split("\n")
    print(f"triage of 300,000 segfault lines: peak RSS {int(rss_kib) / 1024:.0f} MiB")
    assert int(rss_kib) < 150 * 1024
    text = "\n".join(out).strip().split("\n")
    assert len(text) < 5, text[:10]
    assert re.search(r"segfault in nginx \(pid \d+\)  \[SEGFAULT\] ×300000", "\n".join(text))


def test_no_unknown_value_is_printed_as_none() -> None:
    proc = run_kassist(["triage", str(DATA / "production-events.log")])
    assert proc.returncode == 0
    assert "None" not in proc.stdout
    assert "kworker/1:2 pid 231" in proc.stdout  # a soft lockup names no CPU in its task


def test_the_markdown_renderers_keep_log_text_in_code(tmp_path: Path) -> None:
    from assistant.triage.render import crash_markdown, crashes_markdown, triage_markdown

    log = _hostile_log(tmp_path)
    result = triage_path(str(log))
    md = triage_markdown(result)
    assert "**2 crash(es)**" in md and "`BUG: unable to handle kernel NULL pointer" in md
    with CrashStore(tmp_path / "c.db") as store:
        store.record(result.crashes, "x", host="h")
        rows = store.signatures()
        summary, hits = store.get(result.crashes[0].signature)
    assert "| signature | count | crashed | stored | title |" in crashes_markdown(rows)
    shown = crash_markdown(summary, hits)
    assert shown.count("```") == 2  # the report is fenced, whatever it holds


def test_crash_times_go_through_both_stores_and_sync(tmp_path: Path) -> None:
    (crash,) = triage_path(str(DATA / "oops-null-deref-debian-6.1.log")).crashes
    assert crash.time.uptime is not None and crash.time.uptime > 0
    crash.time.wall = 1_700_000_000.5
    local = tmp_path / "c.db"
    with CrashStore(local) as store:
        store.record([crash], "kernel:abc", host="h1", now=1_800_000_000.0)
        summary, (hit,) = store.get(crash.signature)
    assert (hit.crashed_at, hit.uptime, hit.seen) == (1_700_000_000.5, crash.time.uptime,
                                                      1_800_000_000.0)  # fmt: skip
    assert summary.last_crashed == 1_700_000_000.5 and summary.last_seen == 1_800_000_000.0
    with postgres() as url:
        sync = run_kassist(["crashes", "sync", "--db", str(local), "--store", url])
        assert sync.returncode == 0, sync.stderr
        shown = json.loads(run_kassist(["crashes", "show", crash.signature, "--store", url,
                                        "--format", "json"]).stdout)  # fmt: skip
    (fleet_hit,) = shown["hits"]
    assert fleet_hit["crashed_at"] == 1_700_000_000.5 and fleet_hit["uptime"] == crash.time.uptime
    assert shown["first_crashed"] == 1_700_000_000.5
