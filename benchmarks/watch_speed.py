"""The watch daemon's speed: records/s vs ``cat /dev/kmsg``, oops-to-stored latency, idle CPU,
fleet upserts/s.

Usage (as root; writes to /dev/kmsg, starts a throwaway PostgreSQL)::

    .venv/bin/python benchmarks/watch_speed.py [--seconds 10] [--oopses 20] [--idle 30]

- throughput: a writer floods /dev/kmsg as fast as it can while ``kassist watch`` and
  ``cat /dev/kmsg`` follow the same stream; records each one read per second, and the
  records the ring buffer overwrote before kassist read them;
- latency: an oops written to /dev/kmsg until its crash is in the store (p50, p99; target
  p99 <= 1 s);
- idle CPU: the daemon's CPU time over an idle period, as % of one core (target <= 0.5 %);
- fleet: hits upserted per second into one PostgreSQL store by 8 writer processes.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistant.triage import triage_lines  # noqa: E402
from tests.pg_support import postgres  # noqa: E402
from tests.watch_support import (  # noqa: E402
    WatchProcess,
    devkmsg_on,
    kmsg_write,
    oops_lines,
    stored_count,
    wait_for,
)

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return a process's user + system CPU time in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def throughput(tmp: Path, seconds: float, rate: int) -> None:
    # A writer at a steady rate the ring buffer can carry; kassist watch and cat follow
    # the same stream. cat stops at the first overwritten record (EPIPE), so the rate is
    # kept where neither loses any; what each can sustain is records per CPU-second.
    (tmp / "tp").mkdir()
    watch = WatchProcess(tmp / "tp", "--metrics-file", str(tmp / "tp.prom")).start()
    assert watch.proc is not None
    cat = subprocess.Popen(["cat", "/dev/kmsg"], stdout=subprocess.PIPE)
    reader = subprocess.Popen(["wc", "-l"], stdin=cat.stdout, stdout=subprocess.PIPE)
    time.sleep(1.0)
    w0, c0 = cpu_seconds(watch.proc.pid), cpu_seconds(cat.pid)
    marker = f"kassist-bench-{os.getpid()}"
    fd = os.open("/dev/kmsg", os.O_WRONLY)
    n = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        tick = time.monotonic()
        for _ in range(rate // 10):
            os.write(fd, f"<6>{marker} {n}\n".encode())
            n += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
    os.close(fd)
    elapsed = time.monotonic() - start
    time.sleep(1.0)
    w1, c1 = cpu_seconds(watch.proc.pid), cpu_seconds(cat.pid)
    watch.stop()
    cat.terminate()
    reader.communicate()
    prom = (tmp / "tp.prom").read_text().splitlines()
    read = int(next(x for x in prom if x.startswith("kassist_watch_records_read")).split()[1])
    lost = int(next(x for x in prom if x.startswith("kassist_watch_records_lost")).split()[1])
    k_rate = n / max(w1 - w0, 1e-9)
    c_rate = n / max(c1 - c0, 1e-9)
    print(f"throughput: {n:,} records at {n / elapsed:,.0f}/s for {elapsed:.0f} s; "
          f"kassist read {read:,} in all, lost {lost}")  # fmt: skip
    print(
        f"  per CPU-second: kassist watch {k_rate:,.0f} records, cat /dev/kmsg {c_rate:,.0f}"
        f" (ratio {k_rate / c_rate:.3f}); kassist used {100 * (w1 - w0) / elapsed:.0f} % of a core"
    )


def latency(tmp: Path, oopses: int) -> None:
    (tmp / "lat").mkdir()
    watch = WatchProcess(tmp / "lat").start()
    token = "benchlat" + "".join(chr(97 + (os.getpid() >> i) % 26) for i in range(0, 20, 4))
    (crash,) = triage_lines(oops_lines(token), "x").crashes
    out = []
    try:
        for i in range(oopses):
            kmsg_write(oops_lines(token, marker=i))
            t0 = time.monotonic()
            wait_for(lambda i=i: stored_count(watch.db, crash.title) == i + 1, 30)
            out.append(time.monotonic() - t0)
            time.sleep(0.2)
    finally:
        watch.stop()
    out.sort()
    p99 = out[min(len(out) - 1, round(0.99 * (len(out) - 1)))]
    print(
        f"latency oops -> stored: p50 {statistics.median(out) * 1000:.0f} ms, "
        f"p99 {p99 * 1000:.0f} ms over {len(out)} oopses (target p99 <= 1000 ms)"
    )


def idle(tmp: Path, seconds: float) -> None:
    (tmp / "idle").mkdir()
    watch = WatchProcess(tmp / "idle").start()
    assert watch.proc is not None
    time.sleep(2)
    c0, t0 = cpu_seconds(watch.proc.pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(watch.proc.pid), time.monotonic()
    watch.stop()
    print(f"idle CPU: {100 * (c1 - c0) / (t1 - t0):.2f} % of one core over {seconds:.0f} s "
          "(target <= 0.5 %)")  # fmt: skip


def _writer(url: str, host: str, n: int, token: str) -> None:
    from assistant.triage.store_pg import PgCrashStore

    crashes = []
    for i in range(n):
        (c,) = triage_lines(oops_lines(token, marker=i), "x").crashes
        crashes.append(c)
    with PgCrashStore(url) as store:
        for c in crashes:
            store.record([c], "bench", host)


def fleet(n_per_writer: int) -> None:
    with postgres() as url:
        from assistant.triage.store_pg import PgCrashStore

        PgCrashStore(url).close()  # migrate once
        procs = [
            multiprocessing.Process(target=_writer, args=(url, f"h{w}", n_per_writer, "benchfleet"))
            for w in range(8)
        ]
        start = time.monotonic()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        elapsed = time.monotonic() - start
        with PgCrashStore(url) as store:
            total = sum(r.count for r in store.signatures())
    print(
        f"fleet: 8 writers upserted {total:,} hits in {elapsed:.1f} s = {total / elapsed:,.0f}/s "
        f"(expected {8 * n_per_writer:,}; triage of the reports included)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--rate", type=int, default=10_000, help="records/s written")
    ap.add_argument("--oopses", type=int, default=20)
    ap.add_argument("--idle", type=float, default=30)
    ap.add_argument("--fleet", type=int, default=500, help="hits per writer")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="CI: --seconds 3 --rate 2000 --oopses 3 --idle 5 --fleet 50",
    )
    opts = ap.parse_args()
    if opts.quick:
        opts.seconds, opts.rate, opts.oopses, opts.idle, opts.fleet = 3, 2000, 3, 5, 50
    if os.geteuid() != 0:
        print("watch_speed: needs root (writes /dev/kmsg)", file=sys.stderr)
        return 1
    print(f"load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as d, devkmsg_on():
        tmp = Path(d)
        throughput(tmp, opts.seconds, opts.rate)
        latency(tmp, opts.oopses)
        idle(tmp, opts.idle)
    fleet(opts.fleet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
