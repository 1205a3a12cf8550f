"""The fail-slow model on synthetic windows, and the parsers behind its evidence (no root)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from assistant.disks.evidence import Window, merge_histograms, quantile, window_from_diskstats
from assistant.disks.fit import mad_sigma, median, theil_sen
from assistant.disks.model import Detector, DetectorConfig, ErrorHistory, error_trend, size_class
from assistant.disks.monitor import new_findings
from probes.stats.blockdev import BlockDevice, parse_proc_devices, read_block_devices
from probes.stats.smart import parse_smartctl_json
from tests.conftest import run_kassist

MiB = 1 << 20


def _dev(name: str, size: int = 64 * MiB, driver: str = "loop") -> BlockDevice:
    return BlockDevice(name, 7, int(name[-1]), False, size, driver)


def _hist(
    p50_us: float, tail_share: float = 0.0, tail_us: float = 50_000
) -> list[tuple[int, int, int]]:
    # A power-of-two histogram of 1000 requests around p50_us, with a tail share at tail_us.
    def bucket(v: float) -> tuple[int, int]:
        low = 1 << max(int(v).bit_length() - 1, 0)
        return low, 2 * low - 1

    tail = int(1000 * tail_share)
    low, high = bucket(p50_us)
    out = [(low, high, 1000 - tail)]
    if tail:
        tlow, thigh = bucket(tail_us)
        out.append((tlow, thigh, tail))
    return out


def _window(device: str, t: float, await_ms: float, iops: float = 150.0, hist=None) -> Window:
    return Window(
        device, t, 1.0, int(iops), iops, iops * 4096, await_ms, 0.1, 0.1, histogram=hist or []
    )


def _run(
    n_samples: int,
    slow: dict[str, float] | None = None,
    devices: int = 4,
    seed: int = 1,
    tail: dict[str, float] | None = None,
    every: int = 1,
) -> Detector:
    # Devices with a common load-dependent latency, machine-wide drift and 10 % noise.
    rng = random.Random(seed)
    det = Detector(DetectorConfig())
    devs = {f"loop{i}": _dev(f"loop{i}") for i in range(devices)}
    for t in range(n_samples):
        drift = 0.3 * (1.5 + rng.random())
        windows = {}
        for name in devs:
            iops = 150 * (0.8 + 0.4 * rng.random())
            base = drift * (iops / 150) ** 0.3 * (0.9 + 0.2 * rng.random())
            factor = (slow or {}).get(name, 1.0) if t % every == 0 else 1.0
            share = (tail or {}).get(name, 0.0)
            await_ms = base * factor + share * 50.0
            windows[name] = _window(
                name, float(t), await_ms, iops, _hist(base * factor * 1000, share)
            )
        det.step(windows, devs)
    return det


def test_theil_sen_ignores_outliers_and_clamps_the_slope() -> None:
    xs = [float(i) for i in range(20)]
    ys = [2.0 + 0.5 * x for x in xs]
    ys[3] = ys[7] = 100.0  # two wild points
    line = theil_sen(xs, ys)
    assert line.slope == pytest.approx(0.5)
    assert line.intercept == pytest.approx(2.0)
    falling = theil_sen(xs, [10.0 - x for x in xs])
    assert falling.slope == 0.0  # latency does not fall with load
    flat = theil_sen([1.0, 1.01, 1.02], [1.0, 5.0, 9.0])
    assert flat.slope == 0.0 and flat.intercept == 5.0  # no spread in x: a constant
    assert median([3.0, 1.0, 2.0, 10.0]) == 2.5
    assert mad_sigma([1.0, 1.0, 1.0, 50.0]) == 0.0


def test_quantiles_from_power_of_two_buckets() -> None:
    hist = [(0, 0, 0), (64, 127, 900), (128, 255, 90), (32768, 65535, 10)]
    assert 64 <= (quantile(hist, 0.5) or 0) <= 127
    assert (quantile(hist, 0.999) or 0) >= 32768
    assert quantile([], 0.5) is None
    merged = merge_histograms([[(64, 127, 2)], [(64, 127, 3), (128, 255, 1)]])
    assert merged == [(64, 127, 5), (128, 255, 1)]


def test_window_from_diskstats_counts_the_kernels_fields() -> None:
    prev = {"reads_completed": 100, "writes_completed": 50, "read_ms": 200, "write_ms": 100}
    prev |= {"sectors_read": 800, "sectors_written": 400, "io_ms": 100, "weighted_io_ms": 300}
    cur = {"reads_completed": 300, "writes_completed": 50, "read_ms": 600, "write_ms": 100}
    cur |= {"sectors_read": 2400, "sectors_written": 400, "io_ms": 600, "weighted_io_ms": 1300}
    w = window_from_diskstats("sda", prev, cur, 2.0, 10.0)
    assert w.ios == 200 and w.iops == 100.0
    assert w.await_ms == 2.0  # 400 ms over 200 requests
    assert w.bytes_per_s == 1600 * 512 / 2.0
    assert w.util == 0.25 and w.queue_depth == 0.5
    idle = window_from_diskstats("sda", cur, cur, 2.0, 12.0)
    assert idle.await_ms is None and idle.iops == 0


def test_peer_groups_by_medium_driver_and_size_class() -> None:
    assert size_class(30 * 1024**3) == "32G"
    assert size_class(48 * MiB) == "64M"
    det = Detector()
    det.devices = {
        "sda": BlockDevice("sda", 8, 0, True, 4 * 1024**4, "sd"),
        "sdb": BlockDevice("sdb", 8, 16, True, 4 * 1024**4 - MiB, "sd"),
        "nvme0n1": BlockDevice("nvme0n1", 259, 0, False, 1024**4, "nvme"),
        "loop9": BlockDevice("loop9", 7, 9, False, 0, "loop"),
        "zram0": BlockDevice("zram0", 253, 0, False, 1024**3, "zram"),
    }
    assert det.groups() == {"hdd/sd/4T": ["sda", "sdb"], "ssd/nvme/1T": ["nvme0n1"]}
    majors = parse_proc_devices(
        "Character devices:\n  1 mem\n\nBlock devices:\n  7 loop\n259 blkext\n"
    )
    assert majors == {7: "loop", 259: "blkext"}


def test_real_sysfs_devices_have_a_kind() -> None:
    devices = read_block_devices()
    assert devices, "no block devices in /sys/block"
    for dev in devices.values():
        assert dev.major > 0 and dev.driver, dev


@pytest.mark.parametrize("factor", [2.0, 5.0, 20.0])
def test_a_steadily_slow_device_is_found_against_its_peers(factor: float) -> None:
    det = _run(20, slow={"loop2": factor})
    findings = det.slow_findings()
    assert [(f.device, f.pattern, f.baseline) for f in findings] == [("loop2", "steady", "peers")]
    f = findings[0]
    assert f.figures["slowdown"] == pytest.approx(factor, rel=0.3)
    assert f.figures["outlier_windows"] >= 15
    assert f"{f.figures['slowdown']:.1f}x" in f.summary and "loop2" in f.summary
    assert f.key == "disks:fail-slow:steady:ssd/loop/64M:loop2"


def test_spikes_on_a_share_of_requests_are_intermittent() -> None:
    findings = _run(20, tail={"loop1": 0.10}).slow_findings()
    assert [(f.device, f.pattern) for f in findings] == [("loop1", "intermittent")]
    assert findings[0].figures["tail_only"] is True
    assert findings[0].figures["slow_request_share"] >= 0.09


def test_recurring_slow_windows_are_intermittent() -> None:
    # Slow one window in four: above the band in 25 % of its windows, never 4 of 5 in a row.
    findings = _run(40, slow={"loop3": 5.0}, every=4).slow_findings()
    assert [(f.device, f.pattern) for f in findings] == [("loop3", "intermittent")]
    assert findings[0].figures["persistent"] is False


@pytest.mark.parametrize("seed", range(5))
def test_equal_devices_give_no_finding(seed: int) -> None:
    det = _run(60, seed=seed)
    assert det.slow_findings() == []
    assert sum(len(q) for q in det.judgments.values()) > 200  # they were judged, not skipped


def test_a_lone_device_is_compared_with_its_own_history() -> None:
    det = Detector(DetectorConfig())
    devs = {"vda": BlockDevice("vda", 254, 0, False, 32 << 30, "virtio_blk")}
    rng = random.Random(3)
    for t in range(30):
        slow = 6.0 if t >= 20 else 1.0
        det.step({"vda": _window("vda", float(t), 0.2 * slow * (0.9 + 0.2 * rng.random()))}, devs)
    findings = det.slow_findings()
    assert [(f.device, f.pattern, f.baseline) for f in findings] == [
        ("vda", "steady", "own history")
    ]
    assert "its own history" in findings[0].summary


def test_error_trend_and_smart_predict_failure() -> None:
    cfg = DetectorConfig()
    history = ErrorHistory()
    history.counts.extend([0] * 20 + [0, 2, 3, 1, 4])
    f = error_trend("sdb", "hdd/sd/4T", history, cfg)
    assert f is not None and (f.kind, f.pattern) == ("failing", "error-trend")
    assert f.figures["recent_errors"] == 10 and "10 I/O errors" in f.summary
    steady = ErrorHistory()
    steady.counts.extend([1] * 25)  # the same rate all along: no trend
    assert error_trend("sdb", "hdd/sd/4T", steady, cfg) is None
    smart = ErrorHistory(
        smart_first={"reallocated_sectors": 8}, smart_last={"reallocated_sectors": 24}
    )
    f = error_trend("sda", "hdd/sd/4T", smart, cfg)
    assert f is not None and f.pattern == "smart" and "8 -> 24" in f.summary


def test_findings_are_deduplicated_by_key() -> None:
    findings = _run(20, slow={"loop0": 5.0}).slow_findings()
    seen: set[str] = set()
    assert len(new_findings(findings, seen)) == 1
    again = _run(21, slow={"loop0": 5.0}).slow_findings()
    assert new_findings(again, seen) == []


def test_smartctl_json_parsing() -> None:
    ata = {
        "smart_status": {"passed": False},
        "ata_smart_attributes": {
            "table": [
                {"id": 5, "raw": {"value": 24}},
                {"id": 9, "raw": {"value": 1000}},
                {"id": 197, "raw": {"value": 3}},
            ]
        },
    }
    health = parse_smartctl_json("sda", json.dumps(ata))
    assert health is not None and health.passed is False
    assert health.counters == {"reallocated_sectors": 24, "pending_sectors": 3}
    nvme = {
        "smart_status": {"passed": True},
        "nvme_smart_health_information_log": {"media_errors": 2},
    }
    parsed = parse_smartctl_json("nvme0n1", json.dumps(nvme))
    assert parsed is not None and parsed.counters == {"media_errors": 2}
    assert parse_smartctl_json("loop0", '{"smartctl": {"exit_status": 2}}') is None
    assert parse_smartctl_json("loop0", "not json") is None


def test_cli_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    done = run_kassist(["disks", "--device", "nosuch-kassist-disk", "--no-bpf"])
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "kassist: disks: no block device called 'nosuch-kassist-disk': see `lsblk -d`"
    ]
    done = run_kassist(["disks", "--interval", "0"])
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_cli_json_contract_on_this_machine() -> None:
    done = run_kassist(
        ["disks", "--interval", "0.3", "--count", "2", "--no-bpf", "--no-smart", "--format", "json"]
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["schema"] == "kassist.disks/1" and doc["windows"] == 2
    assert set(doc) >= {"groups", "devices", "findings", "notices", "persistence_windows"}
    for row in doc["devices"]:
        assert row["peer_group"].count("/") == 2 and row["iops"] >= 0


def test_the_onset_of_a_steady_slowdown_is_never_called_intermittent() -> None:
    # A short healthy history with one noisy window, then a steady x5 from window 8: at
    # every step the device is either not (yet) a finding or a steady one.
    rng = random.Random(7)
    det = Detector(DetectorConfig())
    devs = {f"loop{i}": _dev(f"loop{i}") for i in range(4)}
    patterns = []
    for t in range(20):
        windows = {}
        for name in devs:
            factor = 1.0
            if name == "loop2" and (t == 3 or t >= 8):
                factor = 5.0
            base = 0.3 * (0.9 + 0.2 * rng.random())
            windows[name] = _window(name, float(t), base * factor, hist=_hist(base * factor * 1e3))
        det.step(windows, devs)
        patterns += [f.pattern for f in det.slow_findings() if f.device == "loop2"]
    assert patterns and set(patterns) == {"steady"}


def test_log_devices_map_to_whole_disks() -> None:
    from assistant.disks.monitor import _devices_named

    disks = ["nvme0n1", "nvme0n2", "nvme1n1", "sda", "loop3"]
    assert _devices_named("nvme0", disks) == ["nvme0n1", "nvme0n2"]  # a controller's timeout
    assert _devices_named("loop3", disks) == ["loop3"]
    assert _devices_named("sdz", disks) == []
