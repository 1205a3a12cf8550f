"""``kassist watch``: follow the kernel's logs, triage as lines arrive, store every crash once.

Each stream source (:mod:`assistant.watch.sources`: /dev/kmsg, the journal, a followed
file or pipe) is read in a thread of its own that hands its records to one queue; the
main loop feeds each stream's incremental :class:`~assistant.triage.engine.TriageEngine`
and stores a crash (and a production event) as soon as its report closes: the next
header, the end marker, or :data:`QUIET_SECONDS` without a line. Nothing slow is on that
path: bug report drafts and hooks run in their own threads
(:mod:`assistant.watch.background`).

Never missed, never twice:

- /dev/kmsg is followed from the saved sequence number of the same boot (the journal from
  its saved cursor). The saved point is the oldest line an open report still needs, so a
  SIGKILL mid-report re-reads that report whole after the restart; records the ring
  buffer overwrote before they were read are counted (``records_lost``), never silently
  skipped.
- The store counts a report once per host and source (its unique key), so a report read
  again after a restart is not counted again; a crash is stored before the resume point
  moves past it. A store that cannot write (a full disk) keeps the crashes in memory and
  is tried again, and meanwhile the resume point does not move.
- pstore files and kdump ``dmesg.*`` files are triaged once each (remembered in the
  state, once their crashes are stored).
- Only what the kernel logged feeds the crash store: records user space wrote to
  /dev/kmsg (another facility than the kernel's) are counted and left out.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

from assistant.errors import KassistError
from assistant.triage.engine import TriageEngine
from assistant.triage.model import Crash, CrashTime, Event, KernelInfo, SameAs
from assistant.triage.parse import first_oops
from assistant.triage.signature import signature_of
from assistant.triage.store_model import Store
from assistant.triage.stores import open_store, same_as_of
from assistant.watch.background import DraftLease, Hooks, HookTargets, Outbox
from assistant.watch.metrics import Metrics
from assistant.watch.sources import parse_source, stream_builder
from assistant.watch.spool import Spool
from assistant.watch.state import boot_id, load_state, save_state
from assistant.watch.stream import (
    NETWORK_KINDS,
    SourceSpec,
    StreamBuilder,
    StreamContext,
    StreamSource,
    Token,
    token_of,
)
from probes.errors import ProbeError
from probes.logs import KmsgStats, LogRecord, iter_log_lines, iter_pstore, pstore_files
from probes.logs.inotify import DirectoryWatch
from probes.logs.kdump import kdump_dmesg_files, vmcore_files

#: Seconds without a line after which the open reports of a stream close.
QUIET_SECONDS = 0.5
#: Seconds between two writes of the resume point when nothing was stored.
STATE_INTERVAL = 1.0
#: Seconds the main loop waits for a record before it checks the quiet timers.
TICK = 0.1
#: Batches waiting between the readers and the main loop at most (back-pressure: with
#: :data:`BATCH_RECORDS`, about 260,000 records).
QUEUE_BATCHES = 64
#: Records handed from a reader to the main loop at once at most.
BATCH_RECORDS = 4096
#: Line numbers -> kmsg sequence numbers kept for the resume point (an open report's span).
SEQ_MAP = 4096
#: Seconds between two looks at a kdump directory when inotify said nothing.
KDUMP_RESCAN = 10.0
#: Seconds between two samples of the drive detector (``--source disks``).
DISK_INTERVAL = 10.0
#: Lines of a kdump or pstore file handed to the engine at once.
FILE_BATCH_LINES = 4096
#: Seconds between two retention passes over the store.
RETENTION_INTERVAL = 3600.0
#: Seconds before a store that failed is tried again: the first wait, and the longest.
STORE_RETRY = (1.0, 30.0)
#: Crashes and events kept in memory at most while the store cannot write.
MAX_PENDING = 10_000
#: Streams of network hosts (a host and lane each: :attr:`StreamSource.split`) at most.
MAX_LANES = 8192
#: Seconds of quiet after which a host's reports close even while others' records wait.
LANE_PATIENCE = 10.0
#: Seconds without a line after which a network host's report whose end the kernel has
#: not printed (no end marker) closes anyway: the wall-clock fallback. Its lines may come
#: seconds apart (a slow link, a thousand hosts sending in turn); the kernel's evidence
#: closes it first: its end marker, the next report, a new boot, a record
#: :data:`STAMP_GAP_US` later on the sender's kernel clock.
LANE_FALLBACK = 10.0
#: A network host's record this many microseconds after the last one on its kernel clock
#: (printk stamps) belongs to no report still open: they close before it.
STAMP_GAP_US = 10_000_000
#: Seconds a stopping daemon waits for its readers' last records.
READER_JOIN = 3.0
#: The syslog facilities whose records feed the crash store: the kernel's (0). User space
#: can write /dev/kmsg only with another (``LOG_USER`` at least): such a record is counted
#: and left out, or any local root could forge crashes. (The tests of the /dev/kmsg
#: machinery, which cannot make the kernel oops, add ``LOG_USER`` from their own entry
#: point, ``tests/watch_entry.py``.)
STORED_FACILITIES: frozenset[int] = frozenset({0})
_END = object()


@dataclass
class WatchOptions:
    """How ``kassist watch`` runs.

    :param store: the crash store: a SQLite path, a PostgreSQL URL, or ``None`` (default).
    :param state_dir: where the resume point lives.
    :param outbox: where drafts go (``None``: no drafts).
    :param sources: the ``--source`` forms (:mod:`assistant.watch.sources`), in order.
    :param once: read what is there and exit (no following).
    :param host: the host name recorded with each crash.
    :param retention_days: drop hits older than this (0: keep).
    :param metrics_port: serve Prometheus metrics on this loopback port (0: off).
    :param metrics_file: write them to this node_exporter textfile.
    :param debug_dir: a ``/usr/lib/debug``-style tree for the dumps drgn reads.
    :param allow_from: the sender networks (CIDR) the network sources accept; without
        them, those sources may listen on loopback only.
    """

    store: str | None = None
    state_dir: Path = Path("/var/lib/kassist")
    outbox: Path | None = None
    sources: tuple[str, ...] = ("kmsg", "journal", "pstore", "kdump:/var/crash")
    once: bool = False
    host: str | None = None
    drafts_per_hour: int = 12
    hooks: HookTargets = field(default_factory=HookTargets)
    retention_days: float = 90.0
    metrics_port: int = 0
    metrics_file: Path | None = None
    quiet_seconds: float = QUIET_SECONDS
    debug_dir: str | None = None
    allow_from: tuple[str, ...] = ()


def event_crash(event: Event, where: str, when: CrashTime | None = None) -> Crash:
    """Describe a production event as a stored entry, under the event's signature (one per
    kind of event: :func:`assistant.triage.events.event_signature`).

    The stored text names where the event was read (``where``: a kmsg timestamp or a
    line), so each occurrence counts once, also when it is read again after a restart.
    """
    details = json.dumps(event.details, sort_keys=True, default=str)
    crash = Crash(
        title=event.title,
        type=event.type,
        report=f"{event.title}\n{where}\n{details}",
        start_line=event.start_line,
        end_line=event.end_line,
        kernel=KernelInfo(),
        time=when or CrashTime(),
    )
    crash.signature = event.signature
    return crash


@dataclass
class _Mark:
    line: int  # the engine's 0-based number of the record's line
    where: str  # the record's name in a stored report ("ts 12345")
    before: Token | None  # the token a reader resumes after to read this record again
    ts_us: int | None
    realtime_us: int | None
    level: int | None = None
    sender: str | None = None  # the network address it came from


def _where(rec: LogRecord) -> str:
    # A record's name in a stored report: its printk stamp, else its sender's clock.
    return f"ts {rec.ts_us}" if rec.ts_us is not None else f"at {rec.realtime_us}"


class _Stream:
    """One stream of records (a source, a pstore or kdump file) and its triage engine.

    A resumable stream marks each line with where it is (``ts T``: a name that survives a
    re-read, the same in /dev/kmsg and the journal) and with the token a reader resumes
    *after* to read that line again.
    """

    def __init__(self, stream: str, quiet: float, source: StreamSource | None = None,
                 last: Token | None = None, host: str | None = None) -> None:  # fmt: skip
        self.stream = stream
        self.source = source
        self.host = host  # the host its crashes are stored under (None: this one)
        self.heard = 0.0  # when it was last fed (monotonic seconds)
        fallback = None if host is None else LANE_FALLBACK
        self.engine = TriageEngine(
            stream, retain=False, quiet_seconds=quiet, open_quiet_seconds=fallback
        )
        self.stamp: int | None = None  # the last record's printk stamp (a network host's)
        self.marks: deque[_Mark] = deque(maxlen=SEQ_MAP)
        self.last = last  # the token that resumes after the last record read

    def feed(
        self,
        records: list[LogRecord],
        now: float,
        skipped: Callable[[], None],
        facilities: frozenset[int] = STORED_FACILITIES,
    ) -> list[Crash]:
        """Feed the records of ``facilities`` (or of no known facility) to the engine,
        ``skipped`` counting each other one; return the crashes they completed."""

        def kept(rec: LogRecord) -> bool:
            return rec.facility is None or rec.facility in facilities

        self.heard = now
        if not self.named():
            kernel = [r.as_dmesg_line() for r in records if kept(r)]
            for _ in range(len(records) - len(kernel)):
                skipped()
            return self.engine.feed_lines(kernel, now)
        out: list[Crash] = []
        for rec in records:
            # a network host's: the spool position to read its message again from
            token = token_of(rec) if self.host is None else rec.spool
            if kept(rec):
                out += self._gap(rec.ts_us)
                where = _where(rec)
                before = self.last if self.host is None or rec.spool is None else rec.spool
                for line in (
                    rec.as_dmesg_lines() if self.host is not None else [rec.as_dmesg_line()]
                ):
                    self.marks.append(_Mark(self.engine.lines, where, before, rec.ts_us,
                                            rec.realtime_us, rec.level, rec.sender))  # fmt: skip
                    out += self.engine.feed_line(line, now)
            else:
                skipped()
            self.last = token if token is not None else self.last
        return out

    def _gap(self, ts_us: int | None) -> list[Crash]:
        # A network host's record long after the last one on its kernel clock: what is
        # open ended before it (the kernel's evidence, not the wall clock's).
        if self.host is None or ts_us is None:
            return []
        last, self.stamp = self.stamp, ts_us
        if last is not None and ts_us - last >= STAMP_GAP_US:
            return self.engine.flush()
        return []

    def named(self) -> bool:
        """Tell whether its reports are named by their records (``ts T``), so that one
        read twice (a restart, another receiver) is stored once."""
        return self.source is not None and (self.source.resumable or self.host is not None)

    def mark(self, line: int) -> _Mark | None:
        """Return the mark of a 1-based line of the stream, if it has one."""
        for m in reversed(self.marks):
            if m.line == line - 1:
                return m
        return None

    def sender(self, line: int) -> str | None:
        """Return the network address a 1-based line came from, if known."""
        m = self.mark(line)
        return None if m is None else m.sender

    def where(self, line: int) -> str:
        """Name a 1-based line of the stream by its mark, else by its number."""
        m = self.mark(line)
        return m.where if m is not None else f"line {line}"

    def when(self, line: int, uptime: float | None = None) -> CrashTime:
        """Return when the kernel wrote a 1-based line: its printk stamp and, where the
        source has a clock, its wall time."""
        m = self.mark(line)
        if m is None:
            return CrashTime(uptime=uptime)
        clock = self.source.clock if self.source is not None else None
        return CrashTime(
            uptime=uptime if uptime is not None else (None if m.ts_us is None else m.ts_us / 1e6),
            wall=None if m.realtime_us is None or clock is None else m.realtime_us / 1e6,
            clock=clock if m.realtime_us is not None else None,
        )

    def resume(self) -> Token | None:
        """Return the token to resume after: the oldest line an open report still needs
        is read again (see the module doc); the last record's when no report is open."""
        oldest = self.engine.oldest_needed()
        if oldest is None:
            return self.last
        for m in self.marks:
            if m.line >= oldest:
                return m.before
        return self.last


@dataclass
class _Batch:
    """Crashes and events of one source waiting to be stored, and what to remember once
    they are (the kdump or pstore files they came from)."""

    crashes: list[Crash]
    events: list[Crash]
    source: str
    host: str | None = None  # the host that sent them (None: this one)
    sender: str | None = None  # the network address they came from
    done_kdump: list[str] = field(default_factory=list)
    done_pstore: list[str] = field(default_factory=list)
    closed: float = field(default_factory=time.monotonic, init=False)  # reports closed
    levels: dict[str, int] = field(default_factory=dict, init=False)  # header levels

    def size(self) -> int:
        return len(self.crashes) + len(self.events)


def _store_errors() -> tuple[type[BaseException], ...]:
    # What a store raises when it cannot write now (a full disk, a lost server).
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, OSError, KassistError)
    with contextlib.suppress(ImportError):
        import psycopg

        errors += (psycopg.Error,)
    return errors


def sd_notify(message: str) -> None:
    """Tell systemd (``Type=notify``) something, when it runs us; otherwise do nothing."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(address)
        s.sendall(message.encode())


class Watcher:
    """The daemon: readers, engines, the store, the outbox, hooks and metrics.

    :param draft: turns a crash into a bug report's Markdown (run in the outbox thread).
    :raises InputError: a ``--source`` is no known form.
    """

    def __init__(
        self,
        opts: WatchOptions,
        draft: Callable[[Crash], str] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.opts = opts
        self.specs = [parse_source(s) for s in opts.sources]
        self.allow = self._allowlist()
        self.log = log or (lambda _m: None)
        self.metrics = Metrics()
        self.store: Store = open_store(opts.store)
        opts.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = opts.state_dir / "watch.json"
        self.state = load_state(self.state_path)
        self.boot = boot_id()
        if self.state.boot != self.boot:  # sequence numbers and cursors are per boot
            self.state = replace(self.state, boot=self.boot, resume={})
        self.known = {s.signature for s in self.store.signatures()}
        self.outbox = (
            Outbox(opts.outbox, draft, self.metrics, opts.drafts_per_hour, DraftLease(opts.store))
            if opts.outbox is not None and draft is not None
            else None
        )
        self.hooks = Hooks(opts.hooks, self.metrics)
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue(QUEUE_BATCHES)
        self.stop_event = threading.Event()
        self.kmsg_stats = KmsgStats()
        self.stored = 0
        self._lost_reported = 0
        self._streams: dict[str, _Stream] = {}
        self._lanes: OrderedDict[tuple[str, str, str, str], _Stream] = OrderedDict()
        self._open_lanes: set[tuple[str, str, str, str]] = set()  # fed since they closed
        self._readers = 0  # reader threads still running
        self._scanners: list[threading.Thread] = []
        self._reader_threads: list[threading.Thread] = []
        self._pending: deque[_Batch] = deque()
        self._retry_at = 0.0
        self._retry_wait = STORE_RETRY[0]
        self._saved_at = 0.0
        self._pruned_at = 0.0
        self._save_failed = False
        self._save_now = False  # a stored crash moves the resume point at once
        self._last_ping = 0.0
        self._watchdog = _watchdog_interval()
        if opts.metrics_port:
            self._server = self.metrics.serve(opts.metrics_port)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (or until every source has ended: with ``once``, every source
        drained).

        :return: how many crashes and events were stored.
        """
        try:
            for spec in self.specs:
                self._start(spec)
            sd_notify("READY=1")
            while self._running():
                self._step()
        finally:
            self._finish()
        return self.stored

    def _running(self) -> bool:
        if self.stop_event.is_set():
            return False
        return self._readers > 0 or any(t.is_alive() for t in self._scanners)

    def _step(self) -> None:
        try:
            name, item = self.queue.get(timeout=TICK)
        except queue.Empty:
            name, item = "", None
        now = time.monotonic()
        if item is _END:
            self._ended(name)
        elif name == "kdump":
            self._kdump_pass(item)
        elif name == "disks":
            self._store_disk_findings(item)
        elif item is not None:
            self._records(name, item, now)
        self._tick(now)

    def _tick(self, now: float) -> None:
        for stream in self._streams.values():
            self._closed(stream, stream.engine.poll(now))
        # A host's report closes on quiet once every record received is read (a backlog,
        # a flood from others, is no quiet), or, once its end marker came, after
        # LANE_PATIENCE quiet seconds anyway; one without its end marker waits for the
        # fallback (LANE_FALLBACK) only while nothing is behind.
        caught_up = self.queue.empty() and not any(
            s.source.backlog() for s in self._streams.values()
            if s.source is not None and s.source.backlog is not None
        )  # fmt: skip
        for key in list(self._open_lanes):
            lane = self._lanes.get(key)
            if lane is None:
                self._open_lanes.discard(key)
            elif caught_up or now - lane.heard >= LANE_PATIENCE:
                self._closed(lane, lane.engine.poll(now, fallback=caught_up))
                if lane.engine.oldest_needed() is None:
                    self._open_lanes.discard(key)
        self._source_counters()
        self._flush_pending(now)
        self._report_lost()
        self._save()
        self._prune()
        if self._watchdog and now - self._last_ping >= self._watchdog:
            sd_notify("WATCHDOG=1")
            self._last_ping = now

    def stop(self) -> None:
        """Ask the loop to stop (from a signal handler or another thread)."""
        self.stop_event.set()

    # -- sources ----------------------------------------------------------------------------

    def _start(self, spec: SourceSpec) -> None:
        build = stream_builder(spec)
        if build is not None:
            self._start_stream(spec, build)
        elif spec.kind == "pstore":
            self._pstore()
        elif spec.kind == "kdump":
            self._start_kdump(Path(spec.arg))
        elif spec.kind == "disks":
            self._scanner(self._disks_thread, float(spec.arg or DISK_INTERVAL))

    def _allowlist(self) -> tuple[IPv4Network | IPv6Network, ...]:
        # Before anything starts: a receiver open to any host stops the daemon (fail closed).
        if not self.opts.allow_from and not any(s.kind in NETWORK_KINDS for s in self.specs):
            return ()
        from assistant.watch.network import allowlist

        return allowlist(self.specs, self.opts.allow_from)

    def _start_stream(self, spec: SourceSpec, build: StreamBuilder) -> None:
        ctx = StreamContext(
            boot=self.boot,
            follow=not self.opts.once,
            resume=dict(self.state.resume),
            kmsg_stats=self.kmsg_stats,
            log=self.log,
            poll_interval=TICK,
            allow=self.allow,
            spool_dir=self.opts.state_dir / "spool",
        )
        try:
            source = build(spec, ctx)
        except ProbeError as exc:
            self.log(exc.one_line())
            return
        saved = self.state.resume.get(source.name) if source.resumable else None
        self._streams[source.name] = _Stream(source.stream, self.opts.quiet_seconds, source, saved)
        self._readers += 1
        reader = threading.Thread(target=self._reader, args=(source,), daemon=True,
                                  name=source.name)  # fmt: skip
        self._reader_threads.append(reader)
        reader.start()

    def _reader(self, source: StreamSource) -> None:
        batch: list[LogRecord] = []

        def hand_on() -> None:
            if batch:
                self.queue.put((source.name, batch.copy()))
                batch.clear()

        try:
            for rec in source.records(self.stop_event.is_set, hand_on):
                batch.append(rec)
                if not source.batched or len(batch) >= BATCH_RECORDS:
                    hand_on()
                if self.stop_event.is_set() and source.split is None:
                    break  # (a network source hands on what it received, then ends)
        except ProbeError as exc:
            self.log(f"{source.name}: {exc.one_line()}")
        finally:
            hand_on()
            self.queue.put((source.name, _END))

    def _records(self, name: str, records: list[LogRecord], now: float) -> None:
        stream = self._streams[name]
        self.metrics.add("kassist_watch_records_read_total", len(records))
        split = stream.source.split if stream.source is not None else None
        if split is None:
            self._closed(stream, stream.feed(records, now, self._skipped, STORED_FACILITIES))
            return
        # Many hosts on one source: each host and lane (CPU) has a triage engine of its own.
        lanes: dict[tuple[str, str, str], list[LogRecord]] = {}
        for rec in records:
            lanes.setdefault(split(rec), []).append(rec)
        positions = [r.spool for r in records if r.spool is not None]
        if positions:  # read up to here (the spool's position saved when nothing is open)
            stream.last = max(positions)
        for key, recs in lanes.items():
            lane = self._lane(name, key)
            self._closed(lane, lane.feed(recs, now, self._skipped, STORED_FACILITIES))
            self._open_lanes.add((name, *key))

    def _lane(self, name: str, key: tuple[str, str, str]) -> _Stream:
        # The stream of one host and lane of a network source, made when first heard; past
        # MAX_LANES the least recently heard one's open reports are closed and it goes.
        host, store_name, _cpu = key
        lane = self._lanes.get((name, *key))
        if lane is not None:
            self._lanes.move_to_end((name, *key))
            return lane
        source = self._streams[name].source
        lane = _Stream(store_name, self.opts.quiet_seconds, source, host=host)
        self._lanes[(name, *key)] = lane
        while len(self._lanes) > MAX_LANES:
            _, old = self._lanes.popitem(last=False)
            self._closed(old, old.engine.flush())
        return lane

    def _skipped(self) -> None:
        self.metrics.add("kassist_watch_records_not_kernel_total")

    def _ended(self, name: str) -> None:
        # A stream that ended (stdin at its end, --once at the end of the buffer): its open
        # reports close now.
        self._readers -= 1
        stream = self._streams.get(name)
        if stream is not None:
            self._closed(stream, stream.engine.flush())

    def _scanner(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._scanners.append(t)
        t.start()

    # -- storing ----------------------------------------------------------------------------

    def _closed(self, stream: _Stream, crashes: list[Crash], **done: list[str]) -> None:
        # The crashes a stream completed and its events so far, named and timed as their
        # stream knows them, to the store.
        events = [
            event_crash(e, stream.where(e.start_line), stream.when(e.start_line))
            for e in stream.engine.take_events()
        ]
        if not crashes and not events and not done:
            return
        if stream.named():
            crashes = [_by_sequence(c, stream.where(c.start_line)) for c in crashes]
        crashes = [replace(c, time=stream.when(c.start_line, c.time.uptime)) for c in crashes]
        # One batch per network address the reports came from (a header line's), the
        # events and the files done with the first.
        by_sender: dict[str | None, list[Crash]] = {}
        for c in crashes:
            by_sender.setdefault(stream.sender(c.start_line), []).append(c)
        if not by_sender:
            by_sender[stream.sender(events[0].start_line) if events else None] = []
        for sender, mine in by_sender.items():
            batch = _Batch(mine, events, stream.stream, host=stream.host, sender=sender, **done)
            events, done = [], {}
            for c in mine:  # the kernel's level of the header line, for the OTLP export
                mark = stream.mark(c.start_line)
                if mark is not None and mark.level is not None:
                    batch.levels[c.signature] = mark.level
            self._keep(batch)

    def _keep(self, batch: _Batch) -> None:
        self._pending.append(batch)
        held = sum(b.size() for b in self._pending)
        while held > MAX_PENDING and len(self._pending) > 1:
            dropped = self._pending.popleft()
            held -= dropped.size()
            self.metrics.add("kassist_watch_store_dropped_total", dropped.size())
            self.log(f"store: {dropped.size()} crash(es) and event(s) dropped: too many waiting")
        self._flush_pending(time.monotonic(), retry=False)

    def _flush_pending(self, now: float, retry: bool = True) -> None:
        # Store what waits, oldest first; a failure keeps it for a later try (backing off).
        if not self._pending or (retry and now < self._retry_at):
            return
        while self._pending:
            batch = self._pending[0]
            try:
                self.store.record(batch.crashes + batch.events, batch.source,
                                  batch.host or self.opts.host, sender=batch.sender)  # fmt: skip
            except _store_errors() as exc:
                self.metrics.add("kassist_watch_store_failures_total")
                if self._retry_wait == STORE_RETRY[0]:
                    held = sum(b.size() for b in self._pending)
                    self.log(f"store: {exc}: {held} crash(es) and event(s) wait; retrying")
                self._retry_at = now + self._retry_wait
                self._retry_wait = min(self._retry_wait * 2, STORE_RETRY[1])
                return
            self._pending.popleft()
            if self._retry_wait != STORE_RETRY[0]:
                self.log("store: writing again")
            self._retry_wait = STORE_RETRY[0]
            self._stored(batch)

    def _stored(self, batch: _Batch) -> None:
        # Count, remember the files done, and announce each new signature: a draft for a new
        # crash (never for an event) and the hooks for both.
        self.stored += batch.size()
        self._save_now = True
        for _ in batch.crashes:
            self.metrics.observe("kassist_watch_store_latency_seconds",
                                 time.monotonic() - batch.closed)  # fmt: skip
        self.state.kdump_done = [*self.state.kdump_done, *batch.done_kdump][-1000:]
        self.state.pstore_done = [*self.state.pstore_done, *batch.done_pstore][-1000:]
        for c in batch.crashes:
            self.metrics.add("kassist_watch_crashes_total", kind=c.type)
        for c in batch.events:
            self.metrics.add("kassist_watch_events_total", kind=c.type)
        for c, is_event in [
            *((c, False) for c in batch.crashes),
            *((c, True) for c in batch.events),
        ]:
            if c.signature in self.known:
                continue
            self.known.add(c.signature)
            self.metrics.add("kassist_watch_new_signatures_total")
            self.log(f"new signature {c.signature}: {c.title}")
            if self.outbox is not None and not is_event:
                self.outbox.submit(c)
            if self.hooks.enabled:
                c.same_as = self._same_as(c.signature)
                self.hooks.submit({"schema": "kassist.watch/1", "source": batch.source,
                                   "host": batch.host or self.opts.host or socket.gethostname(),
                                   "level": batch.levels.get(c.signature),
                                   "crash": c.to_dict()})  # fmt: skip

    def _same_as(self, signature: str) -> SameAs | None:
        # The link the store made for a new signature (probably the same bug as...).
        try:
            return same_as_of(self.store, self.store.get(signature)[0])
        except _store_errors():  # KassistError among them
            return None

    # -- files: pstore, kdump ---------------------------------------------------------------

    def _triage_file(self, path: Path, source: str, **done: list[str]) -> None:
        # A whole file at once: the engine takes it in blocks (its fast path), and a crash
        # is stored as soon as the block that closes it is read; the file is remembered as
        # done once the last of its crashes is stored.
        stream = _Stream(source, self.opts.quiet_seconds)
        batch: list[str] = []
        for line in iter_log_lines(str(path)):
            batch.append(line)
            if len(batch) >= FILE_BATCH_LINES:
                self._closed(stream, stream.engine.feed_lines(batch))
                batch = []
        self._closed(stream, stream.engine.feed_lines(batch) + stream.engine.flush(), **done)

    def _pstore(self) -> None:
        files = pstore_files()
        todo = [f for f in files if f not in self.state.pstore_done]
        if not todo:
            return
        stream = _Stream("pstore", self.opts.quiet_seconds)
        with contextlib.suppress(ProbeError):
            for rec in iter_pstore():
                self._closed(stream, stream.engine.feed_line(rec.as_dmesg_line()))
        self._closed(stream, stream.engine.flush(), done_pstore=todo)

    def _start_kdump(self, top: Path) -> None:
        self._kdump_pass(top)
        if not self.opts.once:  # also for a directory that does not exist yet
            self._scanner(self._kdump_thread, top)

    def _kdump_thread(self, top: Path) -> None:
        # A pass on each change, and every KDUMP_RESCAN seconds whatever inotify said (a
        # file finished between two looks sends its event to no watch).
        last = time.monotonic()
        with DirectoryWatch(top) as watch:
            while not self.stop_event.is_set():
                changed = watch.wait(1.0)
                if changed or time.monotonic() - last >= KDUMP_RESCAN:
                    last = time.monotonic()
                    self.queue.put(("kdump", top))

    def _kdump_pass(self, top: Path) -> None:
        files = kdump_dmesg_files(top)
        waiting = {p for b in self._pending for p in b.done_kdump}
        for path in files:
            if str(path) in self.state.kdump_done or str(path) in waiting:
                continue
            if _being_written(path):
                continue  # kdump is still writing it: the next pass reads it whole
            try:
                self._triage_file(path, f"kdump:{path}", done_kdump=[str(path)])
            except ProbeError as exc:
                self.log(f"{path}: {exc.one_line()}")
                self._keep(_Batch([], [], f"kdump:{path}", done_kdump=[str(path)]))
        with_dmesg = {p.parent for p in files}
        for dump in vmcore_files(top):
            if str(dump) in self.state.kdump_done or str(dump) in waiting:
                continue
            if dump.parent not in with_dmesg:
                self._triage_vmcore(dump)

    def _triage_vmcore(self, dump: Path) -> None:
        # A crash directory with a dump and no dmesg file: drgn reads the dump's printk
        # buffer (the same triage as a console log), when the debug info is there.
        from assistant.vmcore import triage_vmcore

        stream = _Stream(f"vmcore:{dump}", self.opts.quiet_seconds)
        try:
            result = triage_vmcore(str(dump), debug_dir=self.opts.debug_dir)
        except KassistError as exc:
            self.log(f"{dump}: {exc.one_line()}")
            self._keep(_Batch([], [], stream.stream, done_kdump=[str(dump)]))
            return
        self._closed(stream, result.crashes, done_kdump=[str(dump)])

    # -- drives -----------------------------------------------------------------------------

    def _disks_thread(self, interval: float) -> None:
        # The fail-slow and failing-drive detector (assistant.disks) samples every device
        # each window; new findings go to the main loop, which stores them as events.
        from assistant.disks.monitor import DiskMonitor, new_findings

        monitor = DiskMonitor(bpf=False)
        seen: set[str] = set()
        try:
            while not self.stop_event.wait(interval):
                fresh = new_findings(monitor.sample(), seen)
                if fresh:
                    self.queue.put(("disks", fresh))
        finally:
            monitor.close()

    def _store_disk_findings(self, findings: list[Any]) -> None:
        # One signature per device and kind of finding (its dedup key), like crashes.
        events = []
        for f in findings:
            crash = Crash(
                title=f"{f.kind} drive {f.device}: {f.pattern}",
                type="DISK-FAILING" if f.kind == "failing" else "DISK-FAIL-SLOW",
                report=f"{f.summary}\n{f.advice}\n{json.dumps(f.figures, sort_keys=True)}",
                start_line=0,
                end_line=0,
                kernel=KernelInfo(),
                time=CrashTime(wall=time.time(), clock="disks"),
            )
            crash.signature = signature_of(f.key, crash.type)
            events.append(crash)
        self._keep(_Batch([], events, "disks"))

    # -- state -----------------------------------------------------------------------------

    def _save(self, force: bool = False) -> None:
        # The resume points, at most every STATE_INTERVAL unless a crash was just stored;
        # never while crashes wait for the store (a restart reads them again instead).
        now = time.monotonic()
        if not (force or self._save_now) and now - self._saved_at < STATE_INTERVAL:
            return
        if self._pending:
            return
        for name, stream in self._streams.items():
            token = stream.resume()
            if stream.source is not None and stream.source.resumable and token is not None:
                self.state.resume[name] = token
            if stream.source is not None and stream.source.spool is not None:
                self._save_spooled(name, stream, stream.source.spool)
        self.state.boot = self.boot
        try:
            save_state(self.state_path, self.state)
        except OSError as exc:
            if not self._save_failed:
                self.log(f"state: cannot write {self.state_path}: {exc.strerror}; retrying")
            self._save_failed = True
        else:
            self._save_failed = False
        self._saved_at = now
        self._save_now = False

    def _save_spooled(self, name: str, stream: _Stream, spool: Spool) -> None:
        # A network source's spool position: the first message an open report of its
        # hosts needs, else the last one read; the spool before it is let go.
        needed = [
            token for key, lane in self._lanes.items()
            if key[0] == name and lane.engine.oldest_needed() is not None
            and isinstance(token := lane.resume(), int)
        ]  # fmt: skip
        position = min(needed) if needed else stream.last
        if isinstance(position, int):
            self.state.resume[name] = position
            spool.release(position)

    def _prune(self) -> None:
        now = time.time()
        if self.opts.retention_days <= 0 or now - self._pruned_at < RETENTION_INTERVAL:
            return
        self._pruned_at = now
        with contextlib.suppress(*_store_errors()):
            self.store.prune(now - self.opts.retention_days * 86400)

    def _source_counters(self) -> None:
        # What the network sources counted (lost, malformed, dropped...), as metrics.
        for name, stream in self._streams.items():
            counters = stream.source.counters if stream.source is not None else None
            if counters is None:
                continue
            kind = stream.source.stream if stream.source is not None else name
            for what, value in counters().items():
                self.metrics.set("kassist_watch_network_total", value, f"{kind}:{what}")

    def _drain_network(self) -> None:
        # Stopping: the records the network readers handed on, and every open report of a
        # network host (no one can read them again), go to the store now.
        if not self._lanes and not any(
            s.source is not None and s.source.split is not None for s in self._streams.values()
        ):
            return
        deadline = time.monotonic() + READER_JOIN
        while time.monotonic() < deadline:
            try:
                name, item = self.queue.get(timeout=TICK)
            except queue.Empty:
                if not any(t.is_alive() for t in self._reader_threads):
                    break
                continue
            if isinstance(item, list) and name in self._streams:
                self._records(name, item, time.monotonic())
        for lane in self._lanes.values():
            self._closed(lane, lane.engine.flush())
        self._source_counters()

    def _report_lost(self) -> None:
        lost = self.kmsg_stats.lost
        if lost > self._lost_reported:
            self.metrics.add("kassist_watch_records_lost_total", lost - self._lost_reported)
            self.log(f"kmsg: {lost - self._lost_reported} record(s) overwritten before reading")
            self._lost_reported = lost

    def _finish(self) -> None:
        self.stop_event.set()
        self._drain_network()
        self._flush_pending(time.monotonic(), retry=False)
        if self._pending:
            held = sum(b.size() for b in self._pending)
            self.log(f"store: {held} crash(es) and event(s) not stored; the next run reads them")
        self._save(force=True)
        if self.outbox is not None:
            if self.opts.once:
                self.outbox.drain()
            self.outbox.stop()
        if self.opts.once:
            self.hooks.drain()
        self.hooks.stop()
        if self.opts.metrics_file is not None:
            with contextlib.suppress(OSError):
                self.metrics.write_textfile(self.opts.metrics_file)
        with contextlib.suppress(Exception):
            self.store.close()


def _by_sequence(crash: Crash, where: str) -> Crash:
    """Return the crash as stored from /dev/kmsg or the journal: its report from the header
    on, named by the header's kernel timestamp.

    The lines before the header are context the engine kept from what it had read, which
    after a restart (resumed later in the buffer) can be fewer: without them, a report read
    again is the same text, and the store counts it once.
    """
    lines = crash.report.split("\n")
    header = next((i for i, x in enumerate(lines) if first_oops(x) is not None), 0)
    return replace(crash, report=f"kernel {where}\n" + "\n".join(lines[header:]))


def _being_written(path: Path) -> bool:
    # An empty dmesg file is one kdump has only just created.
    try:
        return path.stat().st_size == 0
    except OSError:
        return True


def _watchdog_interval() -> float:
    usec = os.environ.get("WATCHDOG_USEC", "")
    return int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else 0.0


def install_signals(watcher: Watcher) -> None:
    """Stop cleanly on SIGTERM and SIGINT (the resume point is saved on the way out)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: watcher.stop())


__all__ = ["QUIET_SECONDS", "WatchOptions", "Watcher", "event_crash", "install_signals"]
