"""Evidence per device over one window: load, latency, its distribution, errors.

From two /proc/diskstats samples (Documentation/admin-guide/iostats.rst):

- ``iops``: reads + writes completed per second (fields 1 and 5);
- ``bytes_per_s``: sectors read + written (fields 3 and 7, 512 bytes each) per second;
- ``await_ms``: (``read_ms`` + ``write_ms``) / requests completed — the kernel's own time
  per request from its start to its completion, so it *includes* the time spent queued in
  the block layer (blk-mq does not count device time apart); this is iostat's ``r_await``
  / ``w_await`` taken together, and what the model fits;
- ``util``: ``io_ms`` (field 10, the kernel's ``io_ticks``) / the window: the share of it
  the device had a request in flight;
- ``queue_depth``: ``weighted_io_ms`` (field 11, ``time_in_queue``) / the window: the mean
  number of requests in flight (iostat's ``aqu-sz``).

From the ``biolatency_interval`` eBPF probe, when it runs, the per-request latency
distribution (``p50_us``, ``p99_us``; issue to completion, so *without* block-layer queue
time) and ``slow_share``, filled in by the detector once it knows the peers' median. From
the kernel log, I/O errors and timeouts per device (triage's event rules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Bytes per diskstats sector (always 512, whatever the device's block size).
SECTOR_BYTES = 512

#: One histogram bucket: lowest and highest value in µs (``None``: unbounded) and count.
Bucket = tuple[int | None, int | None, int]


@dataclass
class Window:
    """What one device did over one window.

    :param device: the kernel's device name.
    :param end: when the window ended (``time.monotonic()`` seconds).
    :param seconds: the window's length in seconds.
    :param ios: requests completed (reads + writes; discards and flushes are not counted).
    :param errors: I/O errors the kernel logged for the device in the window.
    :param timeouts: I/O timeouts and resets the kernel logged for it.
    :param histogram: request latency buckets in µs (empty without the eBPF probe).
    """

    device: str
    end: float
    seconds: float
    ios: int
    iops: float
    bytes_per_s: float
    await_ms: float | None
    util: float
    queue_depth: float
    errors: int = 0
    timeouts: int = 0
    histogram: list[Bucket] = field(default_factory=list)

    @property
    def p50_us(self) -> float | None:
        """Return the median request latency in µs, from the histogram."""
        return quantile(self.histogram, 0.50)

    @property
    def p99_us(self) -> float | None:
        """Return the 99th percentile of request latency in µs, from the histogram."""
        return quantile(self.histogram, 0.99)


def _delta(cur: Mapping[str, int], prev: Mapping[str, int], key: str) -> int:
    # Counters are unsigned longs that only wrap on 32-bit kernels; a negative step
    # means the device went away and came back: start again from zero.
    step = cur.get(key, 0) - prev.get(key, 0)
    return step if step >= 0 else cur.get(key, 0)


def window_from_diskstats(
    device: str, prev: Mapping[str, int], cur: Mapping[str, int], seconds: float, end: float
) -> Window:
    """Turn two /proc/diskstats samples of one device into a window.

    :param prev: the earlier sample (``probes.stats.parse.parse_diskstats`` row).
    :param cur: the later sample.
    :param seconds: time between them, seconds (> 0).
    :param end: when the later sample was taken (monotonic seconds).
    """
    reads, writes = _delta(cur, prev, "reads_completed"), _delta(cur, prev, "writes_completed")
    ios = reads + writes
    ms = _delta(cur, prev, "read_ms") + _delta(cur, prev, "write_ms")
    sectors = _delta(cur, prev, "sectors_read") + _delta(cur, prev, "sectors_written")
    span_ms = seconds * 1000.0
    return Window(
        device=device,
        end=end,
        seconds=seconds,
        ios=ios,
        iops=ios / seconds,
        bytes_per_s=sectors * SECTOR_BYTES / seconds,
        await_ms=ms / ios if ios else None,
        util=min(1.0, _delta(cur, prev, "io_ms") / span_ms),
        queue_depth=_delta(cur, prev, "weighted_io_ms") / span_ms,
    )


def merge_histograms(histograms: Sequence[Sequence[Bucket]]) -> list[Bucket]:
    """Add histograms bucket by bucket (bpftrace's power-of-two buckets line up)."""
    counts: dict[tuple[int | None, int | None], int] = {}
    for hist in histograms:
        for low, high, count in hist:
            counts[(low, high)] = counts.get((low, high), 0) + count
    return sorted(
        ((low, high, n) for (low, high), n in counts.items()),
        key=lambda b: -1 if b[0] is None else b[0],
    )


def quantile(histogram: Sequence[Bucket], q: float) -> float | None:
    """Return the ``q`` quantile (0..1) of a histogram in its unit, interpolated in its bucket.

    >>> quantile([(0, 0, 1), (1, 1, 1), (2, 3, 2)], 0.5)
    1.0
    """
    total = sum(b[2] for b in histogram)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for low, high, count in histogram:
        if count and seen + count >= rank:
            lo = float(low or 0)
            hi = float(high if high is not None else max(lo * 2, 1.0))
            return lo + (hi - lo) * max(0.0, rank - seen) / count
        seen += count
    last = histogram[-1]
    return float(last[1] if last[1] is not None else last[0] or 0)


def share_above(histogram: Sequence[Bucket], limit_us: float) -> float:
    """Return the share of requests in buckets that start at or above ``limit_us``."""
    total = sum(b[2] for b in histogram)
    if total == 0:
        return 0.0
    return sum(c for low, _, c in histogram if low is not None and low >= limit_us) / total
