"""Sample the evidence every interval and feed it to the detectors.

:class:`DiskMonitor` is the one entry point: :meth:`DiskMonitor.sample` reads
/proc/diskstats, the devices' kinds from sysfs, the eBPF latency histograms (when
root and bpftrace allow), the kernel log's I/O errors since the last sample and, for
real drives, SMART; it returns the findings that hold now. Each finding has a stable
:attr:`~assistant.disks.model.Finding.key`, so a watch daemon (not built yet) can call
``sample()`` on its own timer and emit an event only for keys it has not seen
(:func:`new_findings`), the way crashes are deduplicated by signature.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from assistant.disks.evidence import Bucket, Window, merge_histograms, window_from_diskstats
from assistant.disks.model import (
    Detector,
    DetectorConfig,
    ErrorHistory,
    Finding,
    error_trend,
)
from probes.errors import ProbeError
from probes.stats import read_section
from probes.stats.blockdev import BlockDevice, parent_device, read_block_devices
from probes.stats.smart import NO_SMART_DRIVERS, read_smart, smart_unavailable_reason

#: The eBPF probe that streams per-device latency histograms.
LATENCY_PROBE = "biolatency_interval"
#: Event types of the kernel log counted per device (assistant/triage/events.py).
ERROR_TYPES = {"IO-ERROR": "errors", "IO-TIMEOUT": "timeouts"}
#: Seconds between SMART readings of one drive (smartctl wakes the drive).
SMART_EVERY_S = 600.0


@dataclass
class LogErrors:
    """Reads the kernel log's I/O errors and timeouts per device since the last call.

    :param before: what the ring buffer held when monitoring began, per device (evidence,
        but not counted in any window).
    """

    last_seq: int | None = None
    notices: list[str] = field(default_factory=list)
    broken: bool = False
    before: dict[str, dict[str, int]] = field(default_factory=dict)

    def read(self, devices: Collection[str]) -> dict[str, dict[str, int]]:
        """Return ``{device: {"errors": n, "timeouts": n}}`` for records new since last time."""
        if self.broken:
            return {}
        from assistant.triage.events import EventTracker  # only when the log can be read
        from probes.logs import KmsgStats, iter_kmsg

        stats = KmsgStats()
        tracker = EventTracker()
        try:
            for lineno, record in enumerate(iter_kmsg(after_seq=self.last_seq, stats=stats), 1):
                tracker.feed(record.text, lineno)
        except ProbeError as exc:
            self.broken = True
            self.notices.append(f"kernel log not read ({exc.one_line()}); no error counts")
            return {}
        first = self.last_seq is None
        if stats.last_seq is not None:
            self.last_seq = stats.last_seq
        out: dict[str, dict[str, int]] = {}
        for event in tracker.events:
            what = ERROR_TYPES.get(event.type)
            raw = str(event.details.get("device", ""))
            if what is None or not raw:
                continue
            for device in _devices_named(raw, devices):
                counts = out.setdefault(device, {"errors": 0, "timeouts": 0})
                counts[what] += int(event.details.get("count", 1))
        if first:
            # What the ring buffer held before monitoring began is history, not this window.
            self.before = out
            return {}
        return out


def _devices_named(raw: str, devices: Collection[str]) -> list[str]:
    # The log names a disk, a partition or (NVMe timeouts) a controller, `nvme0`.
    parent = parent_device(raw)
    if parent in devices:
        return [parent]
    return [d for d in devices if d.startswith(raw) and d[len(raw) : len(raw) + 1] == "n"]


class LatencyStream:
    """The ``biolatency_interval`` probe's histograms, summed per device between reads."""

    def __init__(self) -> None:
        from probes.bpf import ProbeStream

        self._stream = ProbeStream(LATENCY_PROBE)

    def read(self) -> dict[str, list[Bucket]]:
        """Return each device's histogram (µs buckets) since the last read."""
        parts: dict[str, list[list[Bucket]]] = {}
        for result in self._stream.poll():
            for entry in result.entries:
                if entry.buckets is None or not entry.labels:
                    continue
                buckets = [(b.low, b.high, b.count) for b in entry.buckets]
                parts.setdefault(entry.labels[0], []).append(buckets)
        return {dev: merge_histograms(hists) for dev, hists in parts.items()}

    def close(self) -> None:
        """Stop tracing."""
        self._stream.close()


class DiskMonitor:
    """Samples every device each interval and judges it.

    :param cfg: the model's knobs.
    :param only: judge only these devices (``None``: every block device with I/O).
    :param bpf: trace per-request latency with eBPF when this machine allows it.
    :param smart: read SMART health from real drives when smartctl exists.
    :param kernel_log: count I/O errors and timeouts from /dev/kmsg.
    """

    def __init__(
        self,
        cfg: DetectorConfig | None = None,
        *,
        only: Collection[str] | None = None,
        bpf: bool = True,
        smart: bool = True,
        kernel_log: bool = True,
    ) -> None:
        self.detector = Detector(cfg)
        self.cfg = self.detector.cfg
        self.only = set(only) if only is not None else None
        self.notices: list[str] = []
        self.windows: dict[str, Window] = {}
        self.errors: dict[str, ErrorHistory] = {}
        self.log = LogErrors(notices=self.notices) if kernel_log else None
        self._latency: LatencyStream | None = None
        if bpf:
            try:
                self._latency = LatencyStream()
            except ProbeError as exc:
                self.notices.append(f"no per-request latency ({exc.one_line()})")
        self._smart = smart and self._smart_usable()
        self._smart_at: dict[str, float] = {}
        self._prev: dict[str, dict[str, int]] = {}
        self._prev_at = 0.0
        self._devices: dict[str, BlockDevice] = {}
        self.start()

    def _smart_usable(self) -> bool:
        why = smart_unavailable_reason()
        if why is not None:
            self.notices.append(f"no SMART health ({why})")
        return why is None

    def _wanted(self, name: str) -> bool:
        return self.only is None or name in self.only

    def start(self) -> None:
        """Take the first diskstats sample (the next :meth:`sample` ends the first window)."""
        self._devices = {n: d for n, d in read_block_devices().items() if self._wanted(n)}
        self._prev = self._diskstats()
        self._prev_at = time.monotonic()
        if self.log is not None:
            self.log.read(self._devices)
        if self._latency is not None:
            self._latency.read()

    def _diskstats(self) -> dict[str, dict[str, int]]:
        stats = read_section("diskstats")
        if stats is None:
            raise ProbeError("/proc/diskstats: cannot be read", "is /proc mounted?")
        return {n: s for n, s in stats.items() if n in self._devices}

    def sample(self) -> list[Finding]:
        """End the current window, judge it, and return every finding that holds now."""
        now = time.monotonic()
        self._devices = {n: d for n, d in read_block_devices().items() if self._wanted(n)}
        current = self._diskstats()
        seconds = max(now - self._prev_at, 1e-3)
        windows = {
            name: window_from_diskstats(name, self._prev[name], stats, seconds, now)
            for name, stats in current.items()
            if name in self._prev
        }
        self._prev, self._prev_at = current, now
        histograms = self._latency.read() if self._latency is not None else {}
        logged = self.log.read(self._devices) if self.log is not None else {}
        for name, window in windows.items():
            window.histogram = histograms.get(name, [])
            counts = logged.get(name, {})
            window.errors, window.timeouts = counts.get("errors", 0), counts.get("timeouts", 0)
            history = self.errors.setdefault(name, ErrorHistory())
            history.counts.append(window.errors + window.timeouts)
        self.windows = windows
        if self._smart:
            self._read_smart(now)
        self.detector.step(windows, self._devices)
        return self.findings()

    def _read_smart(self, now: float) -> None:
        for name, dev in self._devices.items():
            if dev.driver in NO_SMART_DRIVERS or dev.size_bytes == 0:
                continue
            if now - self._smart_at.get(name, -SMART_EVERY_S) < SMART_EVERY_S:
                continue
            self._smart_at[name] = now
            health = read_smart(name)
            if health is None:
                continue
            history = self.errors.setdefault(name, ErrorHistory())
            history.smart_passed = health.passed
            for key, value in health.counters.items():
                history.smart_first.setdefault(key, value)
                history.smart_last[key] = value

    def findings(self) -> list[Finding]:
        """Return every finding that holds after the last sample, fail-slow ones first."""
        out = self.detector.slow_findings()
        for group, members in self.detector.groups().items():
            for name in members:
                history = self.errors.get(name)
                if history is not None and (f := error_trend(name, group, history, self.cfg)):
                    out.append(f)
        return out

    def close(self) -> None:
        """Stop the eBPF probe, if one runs."""
        if self._latency is not None:
            self._latency.close()
            self._latency = None

    def __enter__(self) -> DiskMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def new_findings(findings: Iterable[Finding], seen: set[str]) -> list[Finding]:
    """Return the findings whose key is not in ``seen``, and add their keys to it.

    A watch daemon keeps ``seen`` for as long as it runs (or in its state file), so one
    fail-slow device gives one event, not one per interval.
    """
    out = []
    for finding in findings:
        if finding.key not in seen:
            seen.add(finding.key)
            out.append(finding)
    return out
