"""Production events, the crash store and its CLI, and mutated logs (hypothesis)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assistant.triage import triage_lines, triage_path
from assistant.triage.store import SCHEMA_VERSION, CrashStore, migrate
from tests.conftest import DATA, run_kassist

# Lines in the kernel's own printk formats (see assistant/triage/events.py for the sources).
PRODUCTION_LOG = """\
[ 1200.100001] postgres invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, oom_score_adj=0
[ 1200.100002] CPU: 3 PID: 4121 Comm: postgres Not tainted 6.1.0-21-amd64 #1  Debian 6.1.90-1
[ 1200.100100] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/system.slice/postgresql.service,task_memcg=/system.slice/postgresql.service,task=postgres,pid=4121,uid=107
[ 1200.100101] Memory cgroup out of memory: Killed process 4121 (postgres) total-vm:8645520kB, anon-rss:4194304kB, file-rss:1024kB, shmem-rss:0kB, UID:107 pgtables:8452kB oom_score_adj:0
[ 1300.000001] sd 2:0:0:0: [sdb] tag#17 timing out command, waited 180s
[ 1300.000002] I/O error, dev sdb, sector 123456 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2
[ 1300.000003] I/O error, dev sdb, sector 123464 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 2
[ 1300.000004] Buffer I/O error on dev sdb1, logical block 15432, async page read
[ 1300.500000] EXT4-fs error (device sdb1): ext4_find_entry:1658: inode #2: comm ls: reading directory lblock 0
[ 1301.000000] XFS (dm-2): Metadata corruption detected at xfs_dinode_verify+0x1a2/0x5c0 [xfs], inode 0x84 dinode
[ 1302.000000] BTRFS error (device nvme0n1p3): bdev /dev/nvme0n1p3 errs: wr 0, rd 1, flush 0, corrupt 0, gen 0
[ 1303.000000] nvme nvme0: I/O 841 QID 5 timeout, aborting
[ 1400.000000] NETDEV WATCHDOG: eth0 (e1000e): transmit queue 0 timed out 5120 ms
[ 1500.000000] nginx[9981]: segfault at 0 ip 000055d4c1e2a1b3 sp 00007ffd9b1f0a40 error 4 in nginx[55d4c1e00000+f1000] likely on CPU 2 (core 2, socket 0)
[ 1600.000000] mce: [Hardware Error]: Machine check events logged
[ 1600.000001] EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0 (channel:1 slot:0 page:0x4a2b3 offset:0x0 grain:32 syndrome:0x0)
[ 1600.000002] pcieport 0000:00:1c.0: AER: Corrected error received: 0000:03:00.0
[ 1700.000000] CPU2: Package temperature above threshold, cpu clock throttled (total events = 1)
[ 1800.000000] watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [kworker/1:2:231]
"""


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
    assert by_type["SOFT-LOCKUP"][0]["seconds"] == "23"
    # The soft lockup is also a crash report, named as syzbot names it.
    assert [c.title for c in result.crashes] == ["BUG: soft lockup in corrupted"]


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
    for pos, length in cuts:  # delete, duplicate and splice pieces of a real log
        pos %= max(1, len(text))
        if length % 3 == 0:
            text = text[:pos] + text[pos + length :]
        elif length % 3 == 1:
            text = text[:pos] + text[pos : pos + length] * 2 + text[pos:]
        else:
            text = text[:pos] + junk + raw.decode("latin-1") + text[pos:]
    t0 = time.monotonic()
    result = triage_lines(text.split("\n"), source="fuzz")
    assert time.monotonic() - t0 < 10
    for c in result.crashes:
        assert c.title and len(c.title) <= 120
        assert 1 <= c.start_line <= c.end_line
        json.dumps(c.to_dict())
