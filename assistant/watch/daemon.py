"""``kassist watch``: follow the kernel's logs, triage as lines arrive, store every crash once.

Sources run in reader threads that put records on one queue; the main loop feeds each
stream's incremental :class:`~assistant.triage.engine.TriageEngine` and stores a crash
(and a production event) as soon as its report closes: the next header, the end marker,
or :data:`QUIET_SECONDS` without a line. Nothing slow is on that path: bug report
drafts and hooks run in their own threads (:mod:`assistant.watch.background`).

Never missed, never twice:

- /dev/kmsg is followed from the saved sequence number of the same boot. The saved point
  is the oldest line an open report still needs, so a SIGKILL mid-report re-reads that
  report whole after the restart; records the ring buffer overwrote before they were read
  are counted (``records_lost``), never silently skipped.
- The store counts a report once per host and source (its unique key), so a report read
  again after a restart is not counted again; a crash is stored before the resume point
  moves past it.
- pstore files and kdump ``dmesg.*`` files are triaged once each (remembered in the state).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import queue
import re
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from assistant.triage.engine import TriageEngine
from assistant.triage.model import Crash, Event, KernelInfo
from assistant.triage.parse import first_oops
from assistant.triage.signature import signature_of
from assistant.triage.store import Store, open_store
from assistant.watch.background import Hooks, HookTargets, Outbox
from assistant.watch.metrics import Metrics
from assistant.watch.state import WatchState, boot_id, load_state, save_state
from probes.errors import ProbeError
from probes.logs import KmsgStats, LogRecord, iter_kmsg, iter_log_lines, iter_pstore, pstore_files
from probes.logs.files import kdump_dmesg_files
from probes.logs.journal import InvalidCursor, follow_journal, journal_available

#: Seconds without a line after which the open reports of a stream close.
QUIET_SECONDS = 0.5
#: Seconds between two writes of the resume point when nothing was stored.
STATE_INTERVAL = 1.0
#: Seconds the main loop waits for a record before it checks the quiet timers.
TICK = 0.1
#: Records waiting between the readers and the main loop at most (back-pressure).
QUEUE_RECORDS = 100_000
#: Line numbers -> kmsg sequence numbers kept for the resume point (an open report's span).
SEQ_MAP = 4096
#: Seconds between two samples of the drive detector (``--source disks``).
DISK_INTERVAL = 10.0
#: Lines of a file handed to the engine at once.
FILE_BATCH_LINES = 4096
#: Seconds between two retention passes over the store.
RETENTION_INTERVAL = 3600.0
_NUMBERS = re.compile(r"\d+")
_END = object()


@dataclass
class WatchOptions:
    """How ``kassist watch`` runs.

    :param store: the crash store: a SQLite path, a PostgreSQL URL, or ``None`` (default).
    :param state_dir: where the resume point lives.
    :param outbox: where drafts go (``None``: no drafts).
    :param sources: ``kmsg``, ``journal[:FILE]``, ``pstore``, ``kdump:DIR``, ``file:PATH``,
        ``disks[:SECONDS]`` (in order).
    :param once: read what is there and exit (no following).
    :param host: the host name recorded with each crash.
    :param retention_days: drop hits older than this (0: keep).
    :param metrics_port: serve Prometheus metrics on this loopback port (0: off).
    :param metrics_file: write them to this node_exporter textfile.
    :param debug_dir: a ``/usr/lib/debug``-style tree for the dumps drgn reads.
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


def event_crash(event: Event, where: str) -> Crash:
    """Describe a production event as a stored entry: one signature per kind of event.

    The signature comes from the event's type and its title with the numbers taken out
    (pids, sizes, sectors), so a thousand OOM kills of one service are one signature; the
    stored text names where the event was read (``where``: a kmsg sequence number or a
    line), so each occurrence counts once, also when it is read again after a restart.
    """
    title = event.title
    details = json.dumps(event.details, sort_keys=True, default=str)
    crash = Crash(
        title=title,
        type=event.type,
        report=f"{title}\n{where}\n{details}",
        start_line=event.start_line,
        end_line=event.end_line,
        kernel=KernelInfo(),
    )
    crash.signature = signature_of(_NUMBERS.sub("N", title), event.type)
    return crash


class _Stream:
    """One log stream (kmsg, the journal, a pstore file, a kdump file) and its engine.

    A followed stream marks each line with where it is (``seq N`` for /dev/kmsg, ``ts
    T`` for the journal: names that survive a re-read) and with the token a reader
    resumes *after* to read that line again (the sequence number before it, the
    journal cursor before it).
    """

    def __init__(self, name: str, quiet: float) -> None:
        self.name = name
        self.engine = TriageEngine(name, retain=False, quiet_seconds=quiet)
        self.marks: deque[tuple[int, str, object]] = deque(maxlen=SEQ_MAP)
        self.last: object = None  # the token that resumes after the last line

    def mark(self, where: str, before: object, after: object) -> None:
        """Mark the next line: where it is, the token before it and the one after it."""
        self.marks.append((self.engine.lines, where, before))
        self.last = after

    def where(self, line: int) -> str:
        """Name a 1-based line of the stream by its mark, else by its number."""
        for number, where, _ in reversed(self.marks):
            if number == line - 1:
                return where
        return f"line {line}"

    def resume(self) -> object:
        """Return the token to resume after: the oldest line an open report still needs
        is read again (see the module doc); the last line's when no report is open."""
        oldest = self.engine.oldest_needed()
        if oldest is None:
            return self.last
        for line, _, before in self.marks:
            if line >= oldest:
                return before
        return self.last


class _Inotify:
    """New ``dmesg.*`` files under a kdump directory, from inotify (polling without it)."""

    _MASK = 0x00000008 | 0x00000080 | 0x00000100  # IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE

    def __init__(self, top: Path) -> None:
        self.top = top
        self.fd = -1
        lib = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(lib, use_errno=True) if lib else None
        if self._libc is not None:
            self.fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        self._watched: set[str] = set()
        self.rewatch()

    def rewatch(self) -> None:
        """Watch the top directory and each crash directory in it."""
        if self.fd < 0 or self._libc is None:
            return
        dirs = [self.top]
        with contextlib.suppress(OSError):
            dirs += [Path(e.path) for e in os.scandir(self.top) if e.is_dir(follow_symlinks=False)]
        for d in dirs:
            if str(d) not in self._watched:
                wd = self._libc.inotify_add_watch(self.fd, str(d).encode(), self._MASK)
                if wd >= 0:
                    self._watched.add(str(d))

    def wait(self, timeout: float) -> bool:
        """Wait for a change (or ``timeout`` seconds); tell whether one came."""
        import select

        if self.fd < 0:
            time.sleep(timeout)
            return True
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                pass
        self.rewatch()
        return True

    def close(self) -> None:
        """Close the inotify descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


#: Names kdump-tools and makedumpfile give a dump in a crash directory.
VMCORE_GLOBS = ("vmcore", "vmcore.*", "dump.*")


def vmcore_files(top: Path) -> list[Path]:
    """Return the dumps under a kdump directory (``top`` and its crash directories)."""
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for d in [top, *sorted(p for p in top.iterdir() if p.is_dir())]:
            for pattern in VMCORE_GLOBS:
                found += sorted(
                    p for p in d.glob(pattern) if p.is_file() and not p.name.endswith(".incomplete")
                )
    return list(dict.fromkeys(found))


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
    """

    def __init__(
        self,
        opts: WatchOptions,
        draft: Callable[[Crash], str] | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.opts = opts
        self.log = log or (lambda _m: None)
        self.metrics = Metrics()
        self.store: Store = open_store(opts.store)
        opts.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = opts.state_dir / "watch.json"
        self.state = load_state(self.state_path)
        self.boot = boot_id()
        if self.state.boot != self.boot:
            self.state = WatchState(boot=self.boot, pstore_done=self.state.pstore_done,
                                    kdump_done=self.state.kdump_done)  # fmt: skip
        self.known = {s.signature for s in self.store.signatures()}
        self.outbox = (
            Outbox(opts.outbox, draft, self.metrics, opts.drafts_per_hour)
            if opts.outbox is not None and draft is not None
            else None
        )
        self.hooks = Hooks(opts.hooks, self.metrics)
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue(QUEUE_RECORDS)
        self.stop_event = threading.Event()
        self.kmsg_stats = KmsgStats()
        self._lost_reported = 0
        self._streams: dict[str, _Stream] = {}
        self._threads: list[threading.Thread] = []
        self._saved_at = 0.0
        self._pruned_at = 0.0
        self.stored = 0
        self._saved_stored = 0  # ``stored`` when the resume point was last saved
        if opts.metrics_port:
            self._server = self.metrics.serve(opts.metrics_port)

    # -- storing ---------------------------------------------------------------------

    def _store(self, stream: _Stream, crashes: list[Crash]) -> None:
        events = [event_crash(e, stream.where(e.start_line)) for e in stream.engine.take_events()]
        if not crashes and not events:
            return
        source = stream.name
        if stream.marks:
            crashes = [_by_sequence(c, stream.where(c.start_line)) for c in crashes]
        self._keep(crashes, events, source)

    def _keep(self, crashes: list[Crash], events: list[Crash], source: str) -> None:
        # Store crashes and events, count them, and announce each new signature: a draft
        # for a new crash (never for an event) and the hooks for both.
        self.store.record(crashes + events, source, self.opts.host)
        self.stored += len(crashes) + len(events)
        for c in crashes:
            self.metrics.add("kassist_watch_crashes_total", kind=c.type)
        for c in events:
            self.metrics.add("kassist_watch_events_total", kind=c.type)
        for c, is_event in [*((c, False) for c in crashes), *((c, True) for c in events)]:
            if c.signature in self.known:
                continue
            self.known.add(c.signature)
            self.metrics.add("kassist_watch_new_signatures_total")
            self.log(f"new signature {c.signature}: {c.title}")
            if self.outbox is not None and not is_event:
                self.outbox.submit(c)
            if self.hooks.enabled:
                self.hooks.submit({"schema": "kassist.watch/1", "source": source,
                                   "host": self.opts.host or socket.gethostname(),
                                   "crash": c.to_dict()})  # fmt: skip

    def _feed(self, stream: _Stream, text: str, now: float) -> None:
        self._store(stream, stream.engine.feed_line(text, now))

    # -- sources -------------------------------------------------------------------------

    def _reader(self, name: str, records: Callable[[], Iterator[Any]]) -> None:
        try:
            for rec in records():
                self.queue.put((name, rec))
                if self.stop_event.is_set():
                    break
        except ProbeError as exc:
            self.log(f"{name}: {exc.one_line()}")
        finally:
            self.queue.put((name, _END))

    def _start_kmsg(self) -> None:
        after = self.state.kmsg_seq if self.state.boot == self.boot else None

        def records() -> Iterator[LogRecord]:
            return iter_kmsg(
                follow=not self.opts.once,
                after_seq=after,
                stats=self.kmsg_stats,
                stop=self.stop_event.is_set,
                poll_interval=TICK,
            )

        self._streams["kmsg"] = _Stream(self._kernel_source(), self.opts.quiet_seconds)
        self._spawn("kmsg", records)

    def _kernel_source(self) -> str:
        # /dev/kmsg and the journal hold the same kernel messages: one source name for
        # both (and reports named by the kernel's own timestamp), so that a report read
        # from each is counted once.
        return f"kernel:{self.boot[:8]}"

    def _start_journal(self, file: str | None) -> None:
        saved = self.state.journal_cursor if self.state.boot == self.boot else None

        def records() -> Iterator[tuple[LogRecord, str | None, str]]:
            before = saved
            try:
                for rec, cursor in self._journal(saved, file):
                    yield rec, before, cursor
                    before = cursor
            except InvalidCursor as exc:
                # ABRT jumped to the end here and lost oopses; read the boot again instead
                # and let the store count each report once.
                self.log(f"{exc.message}: reading this boot's kernel messages again")
                for rec, cursor in self._journal(None, file):
                    yield rec, before, cursor
                    before = cursor

        self._streams["journal"] = _Stream(self._kernel_source(), self.opts.quiet_seconds)
        self._spawn("journal", records)

    def _journal(self, cursor: str | None, file: str | None) -> Iterator[tuple[LogRecord, str]]:
        return follow_journal(
            after_cursor=cursor,
            file=file,
            follow=not self.opts.once,
            stop=self.stop_event.is_set,
            poll_interval=TICK,
        )

    def _spawn(self, name: str, records: Callable[[], Iterator[Any]]) -> None:
        t = threading.Thread(target=self._reader, args=(name, records), daemon=True, name=name)
        self._threads.append(t)
        t.start()

    def _triage_file(self, path: Path, source: str) -> None:
        # A whole file at once: the engine takes it in blocks (its fast path), and a crash
        # is stored as soon as the block that closes it is read.
        stream = _Stream(source, self.opts.quiet_seconds)
        batch: list[str] = []
        for line in iter_log_lines(str(path)):
            batch.append(line)
            if len(batch) >= FILE_BATCH_LINES:
                self._store(stream, stream.engine.feed_lines(batch))
                batch = []
        self._store(stream, stream.engine.feed_lines(batch) + stream.engine.flush())

    def _pstore(self) -> None:
        files = pstore_files()
        todo = [f for f in files if f not in self.state.pstore_done]
        if not todo:
            return
        stream = _Stream("pstore", self.opts.quiet_seconds)
        now = time.monotonic()
        with contextlib.suppress(ProbeError):
            for rec in iter_pstore():
                self._feed(stream, rec.text, now)
        self._store(stream, stream.engine.flush())
        self.state.pstore_done = (self.state.pstore_done + todo)[-1000:]
        self._save(force=True)

    def _kdump_pass(self, top: Path) -> None:
        try:
            files = kdump_dmesg_files(top) if top.is_dir() else []
        except OSError:
            files = []
        for path in files:
            if str(path) in self.state.kdump_done:
                continue
            try:
                self._triage_file(path, f"kdump:{path}")
            except ProbeError as exc:
                self.log(f"{path}: {exc.one_line()}")
            self._done(path)
        with_dmesg = {p.parent for p in files}
        for dump in vmcore_files(top):
            if str(dump) not in self.state.kdump_done and dump.parent not in with_dmesg:
                self._triage_vmcore(dump)
                self._done(dump)

    def _done(self, path: Path) -> None:
        self.state.kdump_done = [*self.state.kdump_done, str(path)][-1000:]
        self._save(force=True)

    def _triage_vmcore(self, dump: Path) -> None:
        # A crash directory with a dump and no dmesg file: drgn reads the dump's printk
        # buffer (the same triage as a console log), when the debug info is there.
        from assistant.errors import KassistError
        from assistant.vmcore import triage_vmcore

        try:
            result = triage_vmcore(str(dump), debug_dir=self.opts.debug_dir)
        except KassistError as exc:
            self.log(f"{dump}: {exc.one_line()}")
            return
        stream = _Stream(f"vmcore:{dump}", self.opts.quiet_seconds)
        self._store(stream, result.crashes)

    def _kdump_thread(self, top: Path) -> None:
        watch = _Inotify(top)
        try:
            while not self.stop_event.is_set():
                if watch.wait(1.0):
                    self.queue.put(("kdump", top))
        finally:
            watch.close()

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
        crashes = []
        for f in findings:
            crash = Crash(
                title=f"{f.kind} drive {f.device}: {f.pattern}",
                type="DISK-FAILING" if f.kind == "failing" else "DISK-FAIL-SLOW",
                report=f"{f.summary}\n{f.advice}\n{json.dumps(f.figures, sort_keys=True)}",
                start_line=0,
                end_line=0,
                kernel=KernelInfo(),
            )
            crash.signature = signature_of(f.key, crash.type)
            crashes.append(crash)
        self._keep([], crashes, "disks")

    # -- state -------------------------------------------------------------------------

    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._saved_at < STATE_INTERVAL:
            return
        kmsg = self._streams.get("kmsg")
        if kmsg is not None:
            seq = kmsg.resume()
            self.state.kmsg_seq = seq if isinstance(seq, int) else self.state.kmsg_seq
        journal = self._streams.get("journal")
        if journal is not None:
            cursor = journal.resume()
            self.state.journal_cursor = cursor if isinstance(cursor, str) else None
        self.state.boot = self.boot
        save_state(self.state_path, self.state)
        self._saved_at = now

    def _prune(self) -> None:
        now = time.time()
        if self.opts.retention_days <= 0 or now - self._pruned_at < RETENTION_INTERVAL:
            return
        self._pruned_at = now
        prune = getattr(self.store, "prune", None)
        if callable(prune):
            prune(now - self.opts.retention_days * 86400)

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped (or, with ``once``, until every source is drained).

        :return: how many crashes and events were stored.
        """
        open_readers = 0
        for source in self.opts.sources:
            if source == "kmsg":
                self._start_kmsg()
                open_readers += 1
            elif source == "journal" or source.startswith("journal:"):
                why = None if source[8:] else journal_available()
                if why is not None:
                    self.log(f"journal: not followed: {why}")
                    continue
                self._start_journal(source[8:] or None)
                open_readers += 1
            elif source == "pstore":
                self._pstore()
            elif source.startswith("kdump:"):
                top = Path(source[6:])
                self._kdump_pass(top)
                if not self.opts.once and top.is_dir():
                    t = threading.Thread(target=self._kdump_thread, args=(top,), daemon=True)
                    t.start()
            elif source.startswith("file:"):
                self._triage_file(Path(source[5:]), source)
            elif source == "disks" or source.startswith("disks:"):
                interval = float(source[6:] or DISK_INTERVAL)
                t = threading.Thread(target=self._disks_thread, args=(interval,), daemon=True)
                t.start()
        sd_notify("READY=1")
        watchdog = _watchdog_interval()
        last_ping = 0.0
        try:
            while not self.stop_event.is_set() and (open_readers or not self.opts.once):
                try:
                    name, item = self.queue.get(timeout=TICK)
                except queue.Empty:
                    name, item = "", None
                now = time.monotonic()
                if item is _END:
                    open_readers -= 1
                elif name == "kdump":
                    self._kdump_pass(item)
                elif name == "disks":
                    self._store_disk_findings(item)
                elif item is not None:
                    self._record(name, item, now)
                for stream in self._streams.values():
                    self._store(stream, stream.engine.poll(now))
                self._report_lost()
                self._save()
                self._prune()
                if watchdog and now - last_ping >= watchdog:
                    sd_notify("WATCHDOG=1")
                    last_ping = now
            if self.opts.once:
                for stream in self._streams.values():
                    self._store(stream, stream.engine.flush())
        finally:
            self._save(force=True)
            self._finish()
        return self.stored

    def _record(self, name: str, item: Any, now: float) -> None:
        stream = self._streams[name]
        self.metrics.add("kassist_watch_records_read_total")
        if name == "journal":
            rec, before, cursor = item
            stream.mark(f"ts {rec.ts_us}", before, cursor)
        else:
            rec = item
            if rec.seq is not None:
                stream.mark(f"ts {rec.ts_us}", rec.seq - 1, rec.seq)
        self._feed(stream, rec.text, now)
        if self.stored != self._saved_stored:
            self._saved_stored = self.stored
            self._save(force=True)  # a stored crash moves the resume point at once

    def _report_lost(self) -> None:
        lost = self.kmsg_stats.lost
        if lost > self._lost_reported:
            self.metrics.add("kassist_watch_records_lost_total", lost - self._lost_reported)
            self.log(f"kmsg: {lost - self._lost_reported} record(s) overwritten before reading")
            self._lost_reported = lost

    def _finish(self) -> None:
        self.stop_event.set()
        if self.outbox is not None:
            if self.opts.once:
                self.outbox.drain()
            self.outbox.stop()
        if self.opts.once:
            self.hooks.drain()
        self.hooks.stop()
        if self.opts.metrics_file is not None:
            self.metrics.write_textfile(self.opts.metrics_file)
        with contextlib.suppress(Exception):
            self.store.close()

    def stop(self) -> None:
        """Ask the loop to stop (from a signal handler or another thread)."""
        self.stop_event.set()


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


def _watchdog_interval() -> float:
    usec = os.environ.get("WATCHDOG_USEC", "")
    return int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else 0.0


def install_signals(watcher: Watcher) -> None:
    """Stop cleanly on SIGTERM and SIGINT (the resume point is saved on the way out)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: watcher.stop())


__all__ = ["QUIET_SECONDS", "WatchOptions", "Watcher", "event_crash", "install_signals"]
