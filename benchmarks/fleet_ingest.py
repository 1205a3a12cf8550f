#!/usr/bin/env python3
"""A fleet on loopback: many hosts' kernel logs into several receivers and one PostgreSQL.

Starts a throwaway PostgreSQL server (``tests/pg_support.py``) and ``--receivers``
``kassist watch`` processes listening on one netconsole (UDP) and one syslog (UDP and TCP)
address (``SO_REUSEPORT``: the kernel spreads the senders over them), all storing into
that server and drafting into outboxes of their own. Then ``--hosts`` senders, each from
an address of its own (127.1.x.y), send their boot log: half netconsole's extended
format (the byte-exact sender of the tests: sysdata, msgids, fragments over 1000 bytes),
a quarter RFC 5424 over TCP (octet-counted), a quarter RFC 3164 over UDP. ``--crashing``
of them also send a real crash report drawn from the dev corpus. The test drops a share
of the netconsole hosts' boot records on purpose.

It prints records/s per receiver core (records over the receivers' CPU seconds) and,
as the baseline measured in the same run, the same records triaged in this process (no
network, no store) with the receivers' rate as a ratio of it; reports stored against
those sent; duplicates (hits beyond a host's reports: must be 0); lost (the receivers'
count of messages that never came, against the records the test dropped: must be
equal); p99 report closed -> stored (the receivers' own summary); and drafts made (one
per new signature across the fleet: the lease in PostgreSQL).

    PYTHONPATH=. .venv/bin/python benchmarks/fleet_ingest.py [--hosts 1000] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CORPUS = ROOT.parent / "shared" / "corpus" / "syzkaller-linux-reports.dev.jsonl"
BOOT_LINES = 20
TRAIL_LINES = 5
#: Hosts sending at the same time (each host's lines a round of them apart).
CONCURRENT = 50
#: Records sent between two short pauses (the senders are one process: pace it).
BURST = 400
#: Seconds the receivers' idle CPU use is measured before the senders start.
IDLE_S = 2.0


@dataclass
class Host:
    """One simulated host: how it sends, what it sends, what the test dropped."""

    index: int
    kind: str  # netconsole, syslog-tcp, syslog-udp
    address: str
    name: str
    lines: list[str] = field(default_factory=list)
    expected: dict[str, int] = field(default_factory=dict)  # signature -> reports
    dropped: int = 0


def corpus_reports(rng: random.Random, count: int) -> list[list[str]]:
    """Real crash reports (their lines, without stamps) from the dev corpus."""
    from assistant.triage import triage_lines
    from probes.printk_time import split_stamp

    docs = [json.loads(x) for x in CORPUS.read_text().splitlines()]
    rng.shuffle(docs)
    out: list[list[str]] = []
    for doc in docs:
        if not doc.get("expect_crash", True):
            continue
        found = triage_lines(doc["log"].split("\n"), "c").crashes
        if not found or found[0].corrupted:
            continue
        lines = [split_stamp(x)[1] for x in found[0].report.split("\n")]
        if any("\x00" in x or len(x) > 900 for x in lines):
            continue
        out.append(lines)
        if len(out) >= count:
            break
    return out


def plan(hosts: int, crashing: float, seed: int) -> list[Host]:
    """Decide who sends what, and what triage must find in it."""
    from assistant.triage import triage_lines

    rng = random.Random(seed)
    reports = corpus_reports(rng, 60)
    out = []
    for i in range(hosts):
        kind = ("netconsole", "netconsole", "syslog-tcp", "syslog-udp")[i % 4]
        address = f"127.1.{i // 250}.{i % 250 + 1}"
        h = Host(i, kind, address, f"host-{i:04d}")
        h.lines = [f"boot line {j} of {h.name}: eth0 link up" for j in range(BOOT_LINES)]
        if rng.random() < crashing:
            h.lines += rng.choice(reports)
        h.lines += [f"trailing line {j}" for j in range(TRAIL_LINES)]
        stamped = [_stamp(5_000_000 + k * 1000) + x for k, x in enumerate(h.lines)]
        for c in triage_lines(stamped, "plan").crashes:
            h.expected[c.signature] = h.expected.get(c.signature, 0) + 1
        out.append(h)
    return out


def _stamp(ts_us: int) -> str:
    from probes.printk_time import format_stamp

    return format_stamp(ts_us) + " "


def _rfc5424(h: Host, k: int, line: str) -> bytes:
    return (f"<4>1 2026-12-07T06:58:{k % 60:02d}.{k:06d}Z {h.name} kernel - - - "
            f"{_stamp(5_000_000 + k * 1000)}{line}").encode()  # fmt: skip


def _rfc3164(h: Host, k: int, line: str) -> bytes:
    stamp = _stamp(5_000_000 + k * 1000)
    return f"<4>Dec  7 06:58:{k % 60:02d} {h.name} kernel: {stamp}{line}".encode()


def _interleaved(hosts: list[Host]) -> Iterator[tuple[int, Host]]:
    # Hosts send at once by groups of CONCURRENT, one line a host in turn: the lines of a
    # host's report come a group's round apart (milliseconds, as a kernel prints an
    # oops), while the receivers see many hosts' reports interleaved.
    for g in range(0, len(hosts), CONCURRENT):
        group = hosts[g : g + CONCURRENT]
        for k in range(max(len(h.lines) for h in group)):
            yield from ((k, h) for h in group if k < len(h.lines))


def send_all(hosts: list[Host], nc_port: int, sl_port: int, drop: float, seed: int) -> int:
    """Send every host's lines, one line a host in turn; return the records sent."""
    from tests.netconsole_sender import NetconsoleSender

    rng = random.Random(seed + 1)
    senders: dict[int, NetconsoleSender | socket.socket] = {}
    for h in hosts:
        if h.kind == "netconsole":
            nc = NetconsoleSender(("127.0.0.1", nc_port), source=(h.address, 0))
            nc.ts_us = 4_999_000  # its first record is stamped 5.000000, as planned
            senders[h.index] = nc
        elif h.kind == "syslog-tcp":
            c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            c.bind((h.address, 0))
            c.connect(("127.0.0.1", sl_port))
            senders[h.index] = c
        else:
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.bind((h.address, 0))
            senders[h.index] = u
    sent = 0
    for k, h in _interleaved(hosts):
        line = h.lines[k]
        s = senders[h.index]
        if h.kind == "netconsole":
            assert isinstance(s, NetconsoleSender)
            packets = s.record(line, cpu=h.index % 4)
            if k < BOOT_LINES and rng.random() < drop:
                h.dropped += 1  # lost on the way, on purpose
            else:
                s.send(packets)
        elif h.kind == "syslog-tcp":
            assert isinstance(s, socket.socket)
            msg = _rfc5424(h, k, line)
            s.sendall(b"%d %s" % (len(msg), msg))
        else:
            assert isinstance(s, socket.socket)
            s.sendto(_rfc3164(h, k, line), ("127.0.0.1", sl_port))
        sent += 1
        if sent % BURST == 0:
            time.sleep(0.01)
    for each in senders.values():
        with contextlib.suppress(OSError):
            each.close()
    return sent


@dataclass
class Receiver:
    proc: subprocess.Popen[bytes]
    log: Path
    metrics: Path
    outbox: Path


def start_receivers(n: int, url: str, work: Path) -> tuple[list[Receiver], int, int]:
    """Start ``n`` receivers on one address; return them and the two ports."""
    out: list[Receiver] = []
    nc_port = sl_port = 0
    for i in range(n):
        d = work / f"r{i}"
        d.mkdir()
        log = d / "watch.log"
        argv = [sys.executable, "-m", "assistant", "watch", "--no-llm", "--store", url,
                "--state-dir", str(d), "--outbox", str(d / "outbox"),
                "--drafts-per-hour", "100000", "--metrics-file", str(d / "metrics.prom"),
                "--source", f"netconsole:127.0.0.1:{nc_port}",
                "--source", f"syslog:127.0.0.1:{sl_port}"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT), "KASSIST_BACKEND": "none"}
        with log.open("wb") as fh:
            proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=fh, stderr=fh)
        r = Receiver(proc, log, d / "metrics.prom", d / "outbox")
        out.append(r)
        nc = _port(r, "netconsole")
        sl = _port(r, "syslog")
        nc_port, sl_port = nc_port or nc, sl_port or sl
    return out, nc_port, sl_port


def _port(r: Receiver, kind: str) -> int:
    pattern = re.compile(kind + r":127\.0\.0\.1:\d+: listening on \S+:(\d+)")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = pattern.search(r.log.read_text(errors="replace"))
        if m:
            return int(m.group(1))
        if r.proc.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit(f"fleet_ingest: a receiver did not start: {r.log.read_text()[-2000:]}")


def cpu_seconds(pid: int) -> float:
    """Return a process's user+system CPU seconds so far."""
    from probes.stats.tasks import parse_pid_stat

    parsed = parse_pid_stat(Path(f"/proc/{pid}/stat").read_text())
    return parsed[2] / os.sysconf("SC_CLK_TCK") if parsed else 0.0


def baseline(hosts: list[Host]) -> tuple[int, float]:
    """Triage every host's stamped lines in this process, no network and no store: the
    records and the CPU seconds it took (the floor the receivers' path is measured against)."""
    from assistant.triage import triage_lines

    logs = [[_stamp(5_000_000 + k * 1000) + x for k, x in enumerate(h.lines)] for h in hosts]
    t0 = time.process_time()
    for i, lines in enumerate(logs):
        triage_lines(lines, f"baseline-{i}")
    return sum(len(x) for x in logs), time.process_time() - t0


def metrics(path: Path) -> dict[str, float]:
    """Read a receiver's metrics textfile into ``{name{labels}: value}``."""
    out: dict[str, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
    return out


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--receivers", type=int, default=4)
    ap.add_argument("--crashing", type=float, default=0.2)
    ap.add_argument("--drop", type=float, default=0.02, help="netconsole boot records dropped")
    ap.add_argument("--seed", type=int, default=26)
    ap.add_argument("--quick", action="store_true", help="CI: 100 hosts, 2 receivers")
    args = ap.parse_args()
    if args.quick:
        args.hosts, args.receivers = 100, 2
    return args


@dataclass
class Run:
    """What the receivers did while the hosts sent.

    :param sent: records sent.
    :param send_s: seconds the sending took.
    :param stored: reports stored when the store settled.
    :param cpu: the receivers' CPU seconds from the start of sending until it settled.
    :param busy: the same without what they use idle.
    :param idle: CPU seconds a second the receivers use doing nothing.
    """

    sent: int
    send_s: float
    stored: int
    cpu: float
    busy: float
    idle: float


def run(
    receivers: list[Receiver],
    hosts: list[Host],
    ports: tuple[int, int],
    args: argparse.Namespace,
    url: str,
) -> Run:
    """Measure the receivers idle, then send every host's log and wait until it is stored."""
    expected = sum(sum(h.expected.values()) for h in hosts)
    idle0 = sum(cpu_seconds(r.proc.pid) for r in receivers)
    time.sleep(IDLE_S)
    cpu0 = sum(cpu_seconds(r.proc.pid) for r in receivers)
    idle = (cpu0 - idle0) / IDLE_S
    t0 = time.monotonic()
    sent = send_all(hosts, *ports, args.drop, args.seed)
    send_s = time.monotonic() - t0
    stored = _wait_stored(url, expected)
    cpu = sum(cpu_seconds(r.proc.pid) for r in receivers) - cpu0
    busy = max(cpu - idle * (time.monotonic() - t0), 1e-9)
    return Run(sent, send_s, stored, cpu, busy, idle)


def stop(receivers: list[Receiver]) -> None:
    """Stop the receivers: SIGTERM, then SIGKILL for one that takes over a minute."""
    for r in receivers:
        r.proc.send_signal(signal.SIGTERM)
    for r in receivers:
        try:
            r.proc.wait(60)
        except subprocess.TimeoutExpired:
            r.proc.kill()


@dataclass
class Tally:
    """The store against what was sent.

    :param want: reports sent, by (host as stored, signature).
    :param got: reports stored, by the same.
    :param signatures: signatures with a report.
    :param drafts: drafts written.
    """

    want: dict[tuple[str, str], int]
    got: dict[tuple[str, str], int]
    signatures: int
    drafts: int

    def duplicates(self) -> int:
        """Return the reports stored beyond what a host sent (must be 0)."""
        return sum(max(0, n - self.want.get(k, 0)) for k, n in self.got.items())

    def missing(self) -> int:
        """Return the reports sent and not stored."""
        return sum(max(0, n - self.got.get(k, 0)) for k, n in self.want.items())


def tally(url: str, hosts: list[Host]) -> Tally:
    """Read what the store holds and what was sent (a netconsole host is known by its address)."""
    import psycopg

    with psycopg.connect(url) as db:
        rows = db.execute("SELECT host, signature, count(*) FROM hits GROUP BY 1, 2").fetchall()
        signatures = db.execute("SELECT count(*) FROM crashes WHERE count > 0").fetchone()
        drafts = db.execute("SELECT count(*) FROM drafts WHERE done_at IS NOT NULL").fetchone()
    want = {(h.name if not h.kind.startswith("netconsole") else h.address, sig): n
            for h in hosts for sig, n in h.expected.items()}  # fmt: skip
    got = {(str(host), str(sig)): int(n) for host, sig, n in rows}
    return Tally(want, got, signatures[0] if signatures else 0, drafts[0] if drafts else 0)


def print_figures(r: Run, t: Tally, receivers: list[Receiver], hosts: list[Host]) -> None:
    """Print the run's figures against the baseline measured now, in this process."""
    expected = sum(sum(h.expected.values()) for h in hosts)
    m = [metrics(x.metrics) for x in receivers]
    lost = sum(x.get('kassist_watch_network_total{type="netconsole:lost"}', 0) for x in m)
    kernel_drops = sum(
        x.get(f'kassist_watch_network_total{{type="{k}:dropped_kernel"}}', 0)
        for x in m
        for k in ("netconsole", "syslog")
    )
    p99 = max(x.get('kassist_watch_store_latency_seconds{quantile="0.99"}', 0) for x in m)
    files = sum(len(list(x.outbox.glob("*.md"))) for x in receivers)
    dropped = sum(h.dropped for h in hosts)
    rate = r.sent / max(r.cpu, 1e-9)
    base_n, base_cpu = baseline(hosts)
    base_rate = base_n / max(base_cpu, 1e-9)
    print(f"sent {r.sent} records in {r.send_s:.1f} s; receivers used {r.cpu:.1f} CPU s: "
          f"{rate:.0f} records/s per core ({r.sent / r.busy:.0f} without their idle "
          f"{r.idle:.3f} CPU s/s)")  # fmt: skip
    print(f"baseline: triage_lines over the same {base_n} records in this process "
          f"(no network, no store): {base_rate:.0f} records/s per core; "
          f"receivers into PostgreSQL: {rate / base_rate:.2f}x the baseline")  # fmt: skip
    print(f"reports stored {r.stored} of {expected} sent; missing {t.missing()}")
    print(f"duplicates {t.duplicates()} (must be 0)")
    if t.duplicates() or t.missing():  # which (host, signature): the first few each way
        extra = sorted(k for k, n in t.got.items() if n > t.want.get(k, 0))[:3]
        absent = sorted(k for k, n in t.want.items() if n > t.got.get(k, 0))[:3]
        print(f"  stored beyond what was sent: {extra}; sent, not stored: {absent}")
    print(f"lost {lost:.0f}, dropped by the test {dropped} (must be equal);"
          f" dropped by the kernel {kernel_drops:.0f}")  # fmt: skip
    print(f"p99 report closed -> stored {p99 * 1000:.0f} ms")
    print(f"drafts made {t.drafts} ({files} files) for {t.signatures} signatures "
          "(one per new signature)")  # fmt: skip


def main() -> None:
    """Run the simulation and print its figures."""
    args = _args()
    from tests.pg_support import postgres

    hosts = plan(args.hosts, args.crashing, args.seed)
    expected = sum(sum(h.expected.values()) for h in hosts)
    print(f"fleet: {args.hosts} hosts ({sum(1 for h in hosts if h.expected)} crashing, "
          f"{expected} reports), {args.receivers} receivers, one PostgreSQL; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    with postgres() as url, tempfile.TemporaryDirectory(prefix="kassist-fleet-") as tmp:
        receivers, nc_port, sl_port = start_receivers(args.receivers, url, Path(tmp))
        try:
            measured = run(receivers, hosts, (nc_port, sl_port), args, url)
        finally:
            stop(receivers)
        print_figures(measured, tally(url, hosts), receivers, hosts)


def _wait_stored(url: str, expected: int, limit: float = 600.0) -> int:
    # Wait until every report is stored and every new signature's draft is written, or
    # until nothing new came for longer than a report without its end marker waits for
    # the wall-clock fallback; return the reports stored.
    import psycopg

    from assistant.watch.daemon import LANE_FALLBACK

    quiet = LANE_FALLBACK + 3.0

    start = last_change = time.monotonic()
    last: tuple[int, int, int] = (-1, -1, -1)
    while time.monotonic() - start < limit:
        with psycopg.connect(url) as db:
            hits = db.execute("SELECT count(*) FROM hits").fetchone()
            sigs = db.execute("SELECT count(*) FROM crashes WHERE count > 0").fetchone()
            done = db.execute("SELECT count(*) FROM drafts WHERE done_at IS NOT NULL").fetchone()
        now = (
            int(hits[0]) if hits else 0,
            int(sigs[0]) if sigs else 0,
            int(done[0]) if done else 0,
        )
        if now != last:
            last, last_change = now, time.monotonic()
        settled = time.monotonic() - last_change
        if now[0] >= expected and now[2] >= now[1] and settled > 1.0:
            return now[0]
        if settled > quiet:
            return now[0]
        time.sleep(0.5)
    return last[0]


if __name__ == "__main__":
    main()
