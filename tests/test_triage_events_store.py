"""Production events, the crash store and its CLI, and mutated logs (hypothesis)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.triage import triage_lines, triage_path
from assistant.triage.store import SCHEMA_VERSION, CrashStore, migrate
from tests.conftest import DATA, run_kassist

#: Lines in the kernel's own printk formats (see assistant/triage/events.py for the sources).
PRODUCTION_LOG = (DATA / "production-events.log").read_text()


def test_production_events_are_found_with_their_details() -> None:
    result = triage_lines(PRODUCTION_LOG.splitlines(), source="prod")
    by_type: dict[str, list[dict[str, object]]] = {}
    for e in result.events:
        by_type.setdefault(e.type, []).append({"title": e.title, **e.details})
        assert 1 <= e.start_line <= e.end_line <= result.lines
    (oom,) = by_type["OOM-KILL"]
    assert oom["comm"] == "postgres" and oom["pid"] == "4121"
    assert oom["constraint"] == "CONSTRAINT_MEMCG"
    assert oom["cgroup"] == "/system.slice/postgresql.service"
    oom_event = next(e for e in result.events if e.type == "OOM-KILL")
    assert (oom_event.start_line, oom_event.end_line) == (1, 4)
    io = {str(e["device"]): e for e in by_type["IO-ERROR"]}
    assert io["sdb"]["count"] == 2  # two errors on one device: one event
    assert "sdb1" in io
    assert {str(e["device"]) for e in by_type["IO-TIMEOUT"]} == {"sdb", "nvme0"}
    assert {str(e["device"]) for e in by_type["FS-ERROR"]} == {"sdb1", "dm-2", "nvme0n1p3"}
    assert by_type["NETDEV-WATCHDOG"][0]["device"] == "eth0"
    assert by_type["SEGFAULT"][0]["comm"] == "nginx"
    assert len(by_type["HARDWARE-ERROR"]) == 2
    assert by_type["PCIE-AER"][0]["severity"] == "Corrected"
    assert by_type["THERMAL-THROTTLE"][0]["sensor"] == "Package"
    # The soft lockup is a crash report, named as syzbot names it, and no event too.
    assert "SOFT-LOCKUP" not in by_type
    assert [c.title for c in result.crashes] == ["BUG: soft lockup in corrupted"]
    # the OOM report's gfp_mask without the comma that follows it
    assert oom["gfp_mask"] == "0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP)"


def test_store_counts_hits_and_does_not_double_count(tmp_path: Path) -> None:
    db = tmp_path / "crashes.db"
    crash_log = DATA / "kasan-uaf-strp_check_rcv.log"
    result = triage_path(str(crash_log))
    with CrashStore(db) as store:
        assert store.record(result.crashes, "a.log", host="h1", now=1000.0) == 1
        assert store.record(result.crashes, "a.log", host="h1", now=1001.0) == 0
        assert store.record(result.crashes, "b.log", host="h2", now=2000.0) == 1
    with CrashStore(db) as store:  # reopened: the migrations run again harmlessly
        (row,) = store.signatures()
        summary, hits = store.get(row.signature[:6])
    assert summary.count == 2
    assert (summary.first_seen, summary.last_seen) == (1000.0, 2000.0)
    assert summary.hosts == ["h1", "h2"]
    assert summary.releases == ["4.15.0-rc5+"]
    assert [h.source for h in hits] == ["b.log", "a.log"]
    assert "strp_check_rcv" in hits[0].report


def test_migrations_upgrade_an_old_store_and_are_safe_to_rerun(tmp_path: Path) -> None:
    db = sqlite3.connect(str(tmp_path / "old.db"), isolation_level=None)
    db.execute("CREATE TABLE crashes (signature TEXT PRIMARY KEY, title TEXT NOT NULL)")
    assert migrate(db) == 0
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert migrate(db) == SCHEMA_VERSION
    db.execute("PRAGMA user_version = 1")  # as if killed after migration 1
    migrate(db)
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "hits_once" in indexes


def test_triage_store_and_crashes_cli_across_runs(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path)}
    logs = [str(DATA / "kasan-uaf-strp_check_rcv.log"), str(DATA / "hung-rtnl_lock.log")]
    for _ in range(2):
        proc = run_kassist(["triage", "--store", "--format", "jsonl", *logs], env=env)
        assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "kassist" / "crashes.db").exists()
    proc = run_kassist(["crashes", "list", "--format", "json"], env=env)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert sorted(r["title"] for r in rows) == [
        "INFO: task hung in rtnl_lock",
        "KASAN: use-after-free Read in strp_check_rcv",
    ]
    assert all(r["count"] == 1 for r in rows)
    sig = next(r["signature"] for r in rows if r["type"] == "HANG")
    proc = run_kassist(["crashes", "show", sig[:8]], env=env)
    assert proc.returncode == 0, proc.stderr
    assert "INFO: task hung in rtnl_lock" in proc.stdout and "rtnl_lock" in proc.stdout
    proc = run_kassist(["crashes", "show", "ffffffffffff"], env=env)
    assert proc.returncode != 0 and "no crash" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_kassist(["crashes", "list"], env={"XDG_STATE_HOME": str(tmp_path / "none")})
    assert proc.returncode != 0 and "no crash store" in proc.stderr


_REAL_LOGS = [
    (DATA / name).read_text(errors="replace")
    for name in ("gpf-sg_remove_request.log", "warning-xfrm_state_fini.log", "hung-rtnl_lock.log")
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(_REAL_LOGS) - 1),
    cuts=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 400)), max_size=6),
    junk=st.text(max_size=200),
    raw=st.binary(max_size=300),
)
def test_mutated_real_logs_never_raise(
    which: int, cuts: list[tuple[int, int]], junk: str, raw: bytes
) -> None:
    text = _REAL_LOGS[which]
    for at, length in cuts:  # delete, duplicate and splice pieces of a real log
        pos = at % max(1, len(text))
        if length % 3 == 0:
            text = text[:pos] + text[pos + length :]
        elif length % 3 == 1:
            text = text[:pos] + text[pos : pos + length] * 2 + text[pos:]
        else:
            text = text[:pos] + junk + raw.decode("latin-1") + text[pos:]
    result = triage_lines(text.split("\n"), source="fuzz")
    for c in result.crashes:
        assert c.title and len(c.title) <= 120
        assert 1 <= c.start_line <= c.end_line
        json.dumps(c.to_dict())


def test_vmlinux_symbolises_frames_with_elfutils(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from tests.conftest import require

    require(bool(shutil.which("gcc") and shutil.which("eu-addr2line")), "gcc or elfutils missing")
    src = tmp_path / "net" / "ipv4" / "demo.c"
    src.parent.mkdir(parents=True)
    src.write_text(
        "static inline int helper(int x) { return x * 3 + 1; }\n"
        "int tcp_close_demo(int a) {\n"
        "    int b = helper(a);\n"
        "    if (b > 10)\n"
        "        b -= 2;\n"
        "    return b;\n"
        "}\n"
        "int main(void) { return tcp_close_demo(4); }\n"
    )
    binary = tmp_path / "vmlinux"
    subprocess.run(["gcc", "-g", "-O1", "-o", str(binary), str(src)], check=True)
    log = tmp_path / "oops.log"
    log.write_text(
        "[   10.000000] WARNING: CPU: 0 PID: 1 at net/ipv4/demo.c:5 tcp_close_demo+0x8/0x20\n"
        "[   10.000001] Call Trace:\n"
        "[   10.000002]  tcp_close_demo+0x8/0x20\n"
        "[   10.000003]  main+0x5/0x10\n"
        "[   10.000004] ---[ end trace 0000000000000000 ]---\n"
    )
    proc = run_kassist(["triage", "--format", "json", "--vmlinux", str(binary), str(log)])
    assert proc.returncode == 0, proc.stderr
    (crash,) = json.loads(proc.stdout)["crashes"]
    assert crash["title"] == "WARNING in tcp_close_demo"
    files = {f["function"]: f for f in crash["call_trace"]}
    assert files["tcp_close_demo"]["file"] == "net/ipv4/demo.c"
    assert files["main"]["file"] == "net/ipv4/demo.c" and files["main"]["line"] == 8
    assert crash["guilty_file"] == "net/ipv4/demo.c"
