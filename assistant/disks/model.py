"""The fail-slow model: peers, a robust latency-vs-load fit, persistence, intermittency.

Each window, for every device that did enough I/O:

1. **Peers** are the other devices of the same kind (:func:`peer_group`: rotational or
   not, driver, size class). With at least one peer, the device is compared with them;
   alone, with its own earlier windows.
2. **Fit** (Perseus, FAST '23): ``ln await = a + b ln IOPS`` by Theil-Sen over the peers'
   points of the last :attr:`DetectorConfig.fit_windows` windows — leaving the device
   itself out, so that a slow device cannot drag the fit towards it. The slope is kept in
   ``[0, 1]``: latency does not fall as load grows, and grows at most proportionally.
3. **Residual**: the device's distance above the fit at its own load, minus the peers'
   median distance *in the same window* (a machine-wide slowdown moves every device and
   cancels out). ``exp(excess)`` is the slowdown: "x times its peers at the same load".
4. **Upper band**: ``z`` robust standard deviations (MAD) of the peers' own residuals
   around their per-window median, and never less than :attr:`DetectorConfig.min_slowdown`
   (a slowdown too small to matter is not a finding whatever the noise).
5. **Persistence**: a device above the band in most of the last ``persistence`` windows
   is fail-slow. It is *steady* when its median request latency (eBPF histogram) is slow
   too, *intermittent* when only its tail is (spikes on a share of requests, p50 like its
   peers') or when its outlier windows recur without persisting.

A second detector (:func:`error_trend`) predicts failure from I/O errors and timeouts
growing in the kernel log, and SMART failure counters growing or a failed self-assessment.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from assistant.disks.evidence import Window, share_above
from assistant.disks.fit import Line, mad_sigma, median, theil_sen, upper_quantile
from probes.stats.blockdev import BlockDevice

#: Devices that cannot be slow in the way this model means (no medium behind them).
IGNORED_DRIVERS = frozenset({"zram", "device-mapper", "md", "ram", "brd"})
#: A request counts as slow when it takes this many times the peers' median latency.
SLOW_REQUEST_FACTOR = 8.0
#: A device whose median latency is below this many times its peers' is slow only in its tail.
STEADY_P50_RATIO = 1.5


@dataclass(frozen=True)
class DetectorConfig:
    """The model's knobs (windows are the monitor's sampling intervals).

    :param persistence: windows a slowdown must last to be fail-slow.
    :param persist_share: share of those windows that must be above the band.
    :param history: windows kept per device.
    :param fit_windows: windows of peer points the fit uses.
    :param min_ios: fewest requests in a window for it to be judged.
    :param z: width of the upper band in robust standard deviations.
    :param band_quantile: the band is also never below this quantile of the peers' own
        deviations (noise with heavy tails, as on a busy machine, widens it).
    :param min_slowdown: smallest slowdown (x times peers) that can be a finding.
    :param recur_min: outlier windows in the history that make recurring slowness.
    :param recur_episodes: separate runs of outlier windows recurring slowness needs (the
        onset of a steady slowdown after one noisy window is not a recurrence).
    :param recur_share: share of its judged windows a device must be above the band in for
        recurring slowness, and ``recur_over_peers`` times its peers' share at least.
    :param baseline_min: windows of its own history a lone device needs to be judged.
    :param error_min: errors + timeouts in the recent windows for an error-trend finding.
    """

    persistence: int = 5
    persist_share: float = 0.8
    history: int = 60
    fit_windows: int = 20
    min_ios: int = 20
    z: float = 3.0
    band_quantile: float = 0.95
    min_slowdown: float = 1.5
    recur_min: int = 4
    recur_share: float = 0.2
    recur_episodes: int = 3
    recur_over_peers: float = 3.0
    baseline_min: int = 6
    error_min: int = 3


@dataclass
class Judgment:
    """How one device compared with its baseline in one window.

    :param slowdown: latency / what the baseline predicts at the same load (x times).
    :param band: the slowdown the upper band allows.
    :param latency_ms: the device's mean time per request.
    :param expected_ms: the baseline's time per request at the device's load.
    :param p50_ratio: device p50 / peers' p50 (``None`` without histograms).
    :param slow_share: share of the device's requests slower than 8x the peers' p50.
    :param peer_slow_share: the same share for the peers (median).
    """

    device: str
    end: float
    seconds: float
    iops: float
    latency_ms: float
    expected_ms: float
    slowdown: float
    band: float
    outlier: bool
    p50_us: float | None = None
    peer_p50_us: float | None = None
    p99_us: float | None = None
    peer_p99_us: float | None = None
    slow_share: float | None = None
    peer_slow_share: float | None = None

    @property
    def p50_ratio(self) -> float | None:
        """Return device p50 / baseline p50, when both are known."""
        if self.p50_us is None or not self.peer_p50_us:
            return None
        return self.p50_us / self.peer_p50_us


@dataclass
class Finding:
    """A device that looks fail-slow or failing, with the figures that say so.

    :param kind: ``fail-slow`` or ``failing`` (predicted from errors or SMART).
    :param pattern: ``steady``, ``intermittent``, ``error-trend`` or ``smart``.
    :param baseline: ``peers`` or ``own history``.
    :param peer_group: the kind of device (``ssd/loop/64M``).
    :param figures: the numbers behind it (slowdown, latencies, windows, shares...).
    :param advice: what a person might do; kassist changes nothing for a finding.
    """

    device: str
    kind: str
    pattern: str
    baseline: str
    peer_group: str
    peers: list[str]
    figures: dict[str, Any]
    summary: str
    advice: str

    @property
    def key(self) -> str:
        """Return a key that stays the same while the same condition lasts (for dedup)."""
        return f"disks:{self.kind}:{self.pattern}:{self.peer_group}:{self.device}"

    def to_dict(self) -> dict[str, Any]:
        """Return the finding as JSON-ready data, with its key."""
        return {"key": self.key, **asdict(self)}


def size_class(size_bytes: int) -> str:
    """Return a device's size class: its size rounded up to a power of two (``64M``).

    >>> size_class(30 * 1024**3)
    '32G'
    """
    if size_bytes <= 0:
        return "0"
    exponent = math.ceil(math.log2(size_bytes))
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if exponent >= shift:
            return f"{1 << (exponent - shift)}{unit}"
    return f"{1 << exponent}B"


def peer_group(dev: BlockDevice) -> str:
    """Return the kind of a device; devices of one kind are each other's peers."""
    medium = "hdd" if dev.rotational else "ssd"
    return f"{medium}/{dev.driver or 'unknown'}/{size_class(dev.size_bytes)}"


def _point(w: Window) -> tuple[float, float] | None:
    if w.await_ms is None or w.await_ms <= 0 or w.iops <= 0:
        return None
    return math.log(w.iops), math.log(w.await_ms)


def _usable(w: Window | None, cfg: DetectorConfig) -> bool:
    return w is not None and w.ios >= cfg.min_ios and _point(w) is not None


def _histogram_figures(
    judgment: Judgment, own: Window, others: Iterable[Window], p50s: Sequence[float]
) -> None:
    if not own.histogram or not p50s:
        return
    base_p50 = median(p50s)
    judgment.p50_us, judgment.peer_p50_us = own.p50_us, base_p50
    judgment.p99_us = own.p99_us
    limit = SLOW_REQUEST_FACTOR * base_p50
    judgment.slow_share = share_above(own.histogram, limit)
    shares = [share_above(w.histogram, limit) for w in others if w.histogram]
    p99s = [p for w in others if (p := w.p99_us) is not None]
    judgment.peer_slow_share = median(shares) if shares else None
    judgment.peer_p99_us = median(p99s) if p99s else None


class Detector:
    """Keeps each device's recent windows and judges them against their peers.

    Feed it one sample of windows (every device, one interval) with :meth:`step`;
    :meth:`slow_findings` then returns the fail-slow findings that hold after it.
    """

    def __init__(self, cfg: DetectorConfig | None = None) -> None:
        self.cfg = cfg or DetectorConfig()
        self.samples: deque[dict[str, Window]] = deque(maxlen=self.cfg.history)
        self.judgments: dict[str, deque[Judgment]] = {}
        self.devices: dict[str, BlockDevice] = {}

    def groups(self) -> dict[str, list[str]]:
        """Return the devices seen, by peer group."""
        out: dict[str, list[str]] = {}
        for name, dev in sorted(self.devices.items()):
            if dev.size_bytes > 0 and dev.driver not in IGNORED_DRIVERS:
                out.setdefault(peer_group(dev), []).append(name)
        return out

    def step(self, windows: Mapping[str, Window], devices: Mapping[str, BlockDevice]) -> None:
        """Add one sample and judge every device that did enough I/O in it."""
        self.devices.update(devices)
        self.samples.append(dict(windows))
        for members in self.groups().values():
            active = [d for d in members if _usable(windows.get(d), self.cfg)]
            for device in active:
                peers = [p for p in members if p != device]
                seen_peers = [
                    p for p in peers if any(_usable(s.get(p), self.cfg) for s in self.samples)
                ]
                judged = (
                    self._against_peers(device, seen_peers)
                    if seen_peers
                    else self._against_history(device)
                )
                if judged is not None:
                    history = self.judgments.setdefault(device, deque(maxlen=self.cfg.history))
                    history.append(judged)

    def _against_peers(self, device: str, peers: list[str]) -> Judgment | None:
        cfg = self.cfg
        recent = list(self.samples)[-cfg.fit_windows :]
        points = [
            p
            for s in recent
            for name in peers
            if _usable(s.get(name), cfg) and (p := _point(s[name]))
        ]
        if len(points) < 3:
            return None
        line = theil_sen([x for x, _ in points], [y for _, y in points])
        deviations: list[float] = []
        for sample in recent:
            residuals = [
                self._residual(line, sample[p]) for p in peers if _usable(sample.get(p), cfg)
            ]
            if len(peers) > 1 and len(residuals) > 1:
                centre = median(residuals)
                deviations.extend(r - centre for r in residuals)
            elif len(peers) == 1:
                deviations.extend(residuals)
        now = self.samples[-1]
        current = [self._residual(line, now[p]) for p in peers if _usable(now.get(p), cfg)]
        all_residuals = [y - line.at(x) for x, y in points]
        offset = median(current) if current else median(all_residuals)
        others = [now[p] for p in peers if _usable(now.get(p), cfg)]
        p50s = [v for w in others if (v := w.p50_us) is not None]
        return self._judge(device, line, offset, deviations, others, p50s)

    def _against_history(self, device: str) -> Judgment | None:
        cfg = self.cfg
        past = list(self.samples)[: -cfg.persistence]
        earlier = {j.end for j in self.judgments.get(device, ()) if j.outlier}
        baseline = [
            s[device] for s in past if _usable(s.get(device), cfg) and s[device].end not in earlier
        ]
        if len(baseline) < cfg.baseline_min:
            return None
        points = [p for w in baseline if (p := _point(w))]
        line = theil_sen([x for x, _ in points], [y for _, y in points])
        residuals = [y - line.at(x) for x, y in points]
        p50s = [v for w in baseline if (v := w.p50_us) is not None]
        centre = median(residuals)
        deviations = [r - centre for r in residuals]
        return self._judge(device, line, centre, deviations, baseline, p50s)

    @staticmethod
    def _residual(line: Line, w: Window) -> float:
        point = _point(w)
        assert point is not None
        return point[1] - line.at(point[0])

    def _judge(
        self,
        device: str,
        line: Line,
        offset: float,
        deviations: Sequence[float],
        others: Sequence[Window],
        p50s: Sequence[float],
    ) -> Judgment:
        own = self.samples[-1][device]
        x, y = _point(own) or (0.0, 0.0)
        excess = y - line.at(x) - offset
        band = max(
            self.cfg.z * mad_sigma(deviations),
            upper_quantile(deviations, self.cfg.band_quantile),
            math.log(self.cfg.min_slowdown),
        )
        judgment = Judgment(
            device=device,
            end=own.end,
            seconds=own.seconds,
            iops=own.iops,
            latency_ms=own.await_ms or 0.0,
            expected_ms=math.exp(line.at(x) + offset),
            slowdown=math.exp(excess),
            band=math.exp(band),
            outlier=excess > band,
        )
        _histogram_figures(judgment, own, others, p50s)
        return judgment

    def slow_findings(self) -> list[Finding]:
        """Return the fail-slow findings that hold after the last sample."""
        out = []
        groups = self.groups()
        for group, members in groups.items():
            for device in members:
                finding = self._classify(device, group, [m for m in members if m != device])
                if finding is not None:
                    out.append(finding)
        return out

    def _classify(self, device: str, group: str, peers: list[str]) -> Finding | None:
        cfg = self.cfg
        history = list(self.judgments.get(device, ()))
        if not history:
            return None
        latest_end = self.samples[-1][device].end if device in self.samples[-1] else None
        recent = [j for j in history if j.end >= self._recent_start()]
        outliers = [j for j in history if j.outlier]
        recent_out = [j for j in recent if j.outlier]
        persistent = len(recent) >= cfg.persistence and len(recent_out) >= math.ceil(
            cfg.persist_share * cfg.persistence
        )
        recurring = (
            _episodes(history) >= cfg.recur_episodes
            and len(outliers) >= cfg.recur_min
            and len(outliers) >= cfg.recur_share * len(history)
            and len(outliers) / len(history) >= cfg.recur_over_peers * self._peer_share(peers)
        )
        if not (persistent or recurring) or (latest_end is None and not persistent):
            return None
        basis = recent_out if persistent else outliers
        ratios = [r for j in basis if (r := j.p50_ratio) is not None]
        tail_only = bool(ratios) and median(ratios) < STEADY_P50_RATIO
        pattern = "steady" if persistent and not tail_only else "intermittent"
        figures = _slow_figures(history, basis, outliers, persistent, tail_only)
        baseline = "peers" if peers and self._has_peer_judgment(device) else "own history"
        return Finding(
            device=device,
            kind="fail-slow",
            pattern=pattern,
            baseline=baseline,
            peer_group=group,
            peers=peers if baseline == "peers" else [],
            figures=figures,
            summary=slow_summary(device, pattern, baseline, group, figures, len(peers)),
            advice=SLOW_ADVICE[pattern],
        )

    def _peer_share(self, peers: list[str]) -> float:
        # The median share of windows the peers themselves were above the band in: noise
        # that makes every device an outlier now and then is not recurring slowness.
        shares = [sum(j.outlier for j in q) / len(q) for p in peers if (q := self.judgments.get(p))]
        return median(shares) if shares else 0.0

    def _recent_start(self) -> float:
        ends = [w.end for s in list(self.samples)[-self.cfg.persistence :] for w in s.values()]
        return min(ends) if ends else 0.0

    def _has_peer_judgment(self, device: str) -> bool:
        members = next((m for m in self.groups().values() if device in m), [])
        return len(members) > 1 and any(
            _usable(s.get(p), self.cfg) for s in self.samples for p in members if p != device
        )


def _slow_figures(
    history: list[Judgment],
    basis: list[Judgment],
    outliers: list[Judgment],
    persistent: bool,
    tail_only: bool,
) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "slowdown": round(median([j.slowdown for j in basis]), 2),
        "band": round(median([j.band for j in basis]), 2),
        "latency_ms": round(median([j.latency_ms for j in basis]), 3),
        "expected_ms": round(median([j.expected_ms for j in basis]), 3),
        "iops": round(median([j.iops for j in basis]), 1),
        "outlier_windows": len(outliers),
        "judged_windows": len(history),
        "window_s": round(history[-1].seconds, 1),
        "slow_for_s": round(_current_run(history), 1),
        "persistent": persistent,
    }
    p50 = [j.p50_us for j in basis if j.p50_us is not None]
    peer_p50 = [j.peer_p50_us for j in basis if j.peer_p50_us is not None]
    if p50 and peer_p50:
        figures["p50_us"], figures["peer_p50_us"] = round(median(p50)), round(median(peer_p50))
    p99 = [j.p99_us for j in basis if j.p99_us is not None]
    peer_p99 = [j.peer_p99_us for j in basis if j.peer_p99_us is not None]
    if p99 and peer_p99:
        figures["p99_us"], figures["peer_p99_us"] = round(median(p99)), round(median(peer_p99))
    shares = [j.slow_share for j in basis if j.slow_share is not None]
    peer_shares = [j.peer_slow_share for j in basis if j.peer_slow_share is not None]
    if shares:
        figures["slow_request_share"] = round(median(shares), 4)
        figures["peer_slow_request_share"] = round(median(peer_shares), 4) if peer_shares else None
    figures["tail_only"] = tail_only
    return figures


def _episodes(history: list[Judgment]) -> int:
    # Runs of consecutive outlier windows.
    return sum(
        1 for i, j in enumerate(history) if j.outlier and (i == 0 or not history[i - 1].outlier)
    )


def _current_run(history: list[Judgment]) -> float:
    # Seconds since the current run of outlier windows began (allowing one miss in it).
    total, misses = 0.0, 0
    for j in reversed(history):
        if j.outlier:
            total += j.seconds
            misses = 0
        else:
            misses += 1
            if misses > 1:
                break
    return total


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


def slow_summary(
    device: str, pattern: str, baseline: str, group: str, f: Mapping[str, Any], n_peers: int
) -> str:
    """Say in one paragraph why a device is fail-slow, with its figures."""
    against = f"its {n_peers} peer(s) ({group})" if baseline == "peers" else "its own history"
    text = (
        f"{device} is fail-slow ({pattern}): {f['latency_ms']:.3g} ms per request, "
        f"{f['slowdown']:.1f}x what {against} take at the same load "
        f"({f['expected_ms']:.3g} ms at {f['iops']:.0f} IO/s; the band allows "
        f"{f['band']:.2f}x), above the band in {f['outlier_windows']} of "
        f"{f['judged_windows']} windows of {f['window_s']:g} s"
    )
    if f["slow_for_s"]:
        text += f", the last {f['slow_for_s']:g} s without a break"
    text += "."
    if "p50_us" in f:
        text += f" Median request {f['p50_us']} µs vs {f['peer_p50_us']} µs"
        if "p99_us" in f:
            text += f", p99 {f['p99_us']} µs vs {f['peer_p99_us']} µs"
        text += "."
    if f.get("slow_request_share") is not None:
        peer = f.get("peer_slow_request_share")
        text += (
            f" {_pct(f['slow_request_share'])} of its requests took over "
            f"{SLOW_REQUEST_FACTOR:g}x the baseline median"
            + (f" ({_pct(peer)} for the peers)." if peer is not None else ".")
        )
    return text


SLOW_ADVICE = {
    "steady": "Drain the device from RAID sets or replicas and replace it; check its cabling "
    "and firmware first. kassist changes nothing.",
    "intermittent": "Watch the device's tail latency; check cabling, firmware and the "
    "controller's error counters, and plan to replace it if the spikes persist. kassist "
    "changes nothing.",
    "error-trend": "Back up what the device holds and plan to replace it; check its "
    "cabling and the controller. kassist changes nothing.",
    "smart": "The drive's own health counters say it is failing: back up its data and "
    "replace it. kassist changes nothing.",
}


@dataclass
class ErrorHistory:
    """Errors and timeouts per window of one device, and SMART readings over time."""

    counts: deque[int] = field(default_factory=lambda: deque(maxlen=DetectorConfig().history))
    smart_first: dict[str, int] = field(default_factory=dict)
    smart_last: dict[str, int] = field(default_factory=dict)
    smart_passed: bool | None = None


def error_trend(
    device: str, group: str, errors: ErrorHistory, cfg: DetectorConfig
) -> Finding | None:
    """Predict failure from growing kernel-logged errors or SMART counters (or ``None``)."""
    counts = list(errors.counts)
    recent, earlier = counts[-cfg.persistence :], counts[: -cfg.persistence]
    n_recent, n_earlier = sum(recent), sum(earlier)
    rate_recent = n_recent / max(len(recent), 1)
    rate_earlier = n_earlier / max(len(earlier), 1)
    grown = {
        k: (errors.smart_first.get(k, 0), v)
        for k, v in errors.smart_last.items()
        if v > errors.smart_first.get(k, v)
    }
    if errors.smart_passed is False or grown:
        figures: dict[str, Any] = {
            "smart_passed": errors.smart_passed,
            "grown": {k: {"from": a, "to": b} for k, (a, b) in grown.items()},
        }
        change = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in grown.items())
        verdict = "failed its SMART self-assessment" if errors.smart_passed is False else ""
        summary = f"{device} is failing: " + "; ".join(p for p in (verdict, change) if p) + "."
        return Finding(
            device,
            "failing",
            "smart",
            "own history",
            group,
            [],
            figures,
            summary,
            SLOW_ADVICE["smart"],
        )
    if n_recent < cfg.error_min or rate_recent <= 2 * rate_earlier:
        return None
    nonzero = sum(1 for c in recent if c)
    figures = {
        "recent_errors": n_recent,
        "recent_windows": len(recent),
        "windows_with_errors": nonzero,
        "earlier_errors": n_earlier,
        "earlier_windows": len(earlier),
    }
    summary = (
        f"{device} may be failing: the kernel logged {n_recent} I/O errors or timeouts in "
        f"its last {len(recent)} windows ({nonzero} of them with errors), against "
        f"{n_earlier} in the {len(earlier)} windows before."
    )
    return Finding(
        device,
        "failing",
        "error-trend",
        "own history",
        group,
        [],
        figures,
        summary,
        SLOW_ADVICE["error-trend"],
    )
