"""Fail-slow detection on real block devices: loop devices over a latency-injecting FUSE fs.

Four loop devices (``losetup --direct-io=on``) over files on one slowfs mount, all the
same kind, driven by fio (4 KiB O_DIRECT random reads); one of them is made slow while
the monitor samples every second. Needs root, fio, FUSE and fusepy.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.disks import DetectorConfig, DiskMonitor, Finding
from tests.conftest import HANG_S, ROOT, hang_deadline, require, run_kassist
from tests.fixtures.slowfs.rig import Rig, missing_tools

#: Seconds per window: 300 requests per device (1 s windows were too noisy on a busy machine).
WINDOW_S = 2.0
#: Windows' worth of seconds a slowdown may take to be found (the model needs 4 of 5 windows);
#: counted in windows, so a loaded machine, whose windows run long, gets no fewer.
DETECT_WITHIN_S = 30.0
#: fio runs until the test leaves the workload, HANG_S at most: the devices must not go
#: idle before the last window, however long a loaded machine makes the windows, the
#: monitor's start (bpftrace compiles) or the baseline (under load an 8 s workload ended
#: before the latency stream's bpftrace attached, and the stream saw no loop I/O).
WORKLOAD_S = HANG_S


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    why = missing_tools()
    require(why is None, f"fail-slow rig: {why}")
    with Rig(4) as r:
        yield r


@pytest.fixture
def base_ms(rig: Rig) -> float:
    """The devices' time per request now (ms), measured right before a test injects its
    slowdown: measured once per module, a load that came or went since (fm3: 50 ms under
    three CIs at once) made "x10" some other factor, or too few requests to judge."""
    rig.set_delays({})
    with rig.workload(seconds=WORKLOAD_S):
        return rig.base_latency_ms(3.0)


def window_s(base_ms: float) -> float:
    """Seconds per window for a device slowed x10 from ``base_ms`` (ms per request) to
    complete twice the detector's fewest requests per window; fio reads one request at a
    time per device (psync), so a loaded machine's slower requests get longer windows."""
    return max(WINDOW_S, 2 * DetectorConfig().min_ios * 10 * base_ms / 1000)


def _watch(
    rig: Rig, seconds: float, until: str | None = None, window: float = WINDOW_S
) -> list[Finding]:
    # Sample `seconds` worth of WINDOW_S windows, counted (a loaded machine makes them no
    # fewer), each `window` s long; stop early once a finding of pattern `until` appears.
    with DiskMonitor(DetectorConfig(), only=rig.loops, smart=False) as monitor:
        findings: list[Finding] = []
        for _ in range(round(seconds / WINDOW_S)):
            time.sleep(window)
            findings = monitor.sample()
            if until and any(f.pattern == until for f in findings):
                break
        return findings


@pytest.mark.real
@pytest.mark.slow
def test_equal_devices_give_no_finding(rig: Rig) -> None:
    rig.set_delays({})
    with rig.workload(seconds=WORKLOAD_S):
        findings = _watch(rig, 44.0)
    assert findings == [], [f.summary for f in findings]


@pytest.mark.real
@pytest.mark.slow
def test_a_steadily_slow_device_is_found_with_its_figures(rig: Rig, base_ms: float) -> None:
    rig.set_delays({2: {"delay_ms": 4 * base_ms}})  # x5 its peers
    with rig.workload(seconds=WORKLOAD_S):
        findings = _watch(rig, DETECT_WITHIN_S, until="steady", window=window_s(base_ms))
    slow = rig.loops[2]
    assert [(f.device, f.kind, f.pattern) for f in findings] == [(slow, "fail-slow", "steady")]
    f = findings[0]
    assert f.baseline == "peers" and sorted(f.peers) == sorted(set(rig.loops) - {slow})
    assert f.peer_group.startswith("ssd/loop/")
    assert 2.0 < f.figures["slowdown"] < 15.0, f.figures
    assert f"{f.figures['slowdown']:.1f}x" in f.summary


@pytest.mark.real
@pytest.mark.slow
def test_spikes_on_ten_percent_of_requests_are_intermittent(rig: Rig, base_ms: float) -> None:
    # Spikes of 100 times a request's time now (30 ms at least): a loaded machine's
    # requests take tens of ms, and a spike shorter than them is no spike.
    spike_ms = max(30.0, 100 * base_ms)
    rig.set_delays({1: {"spike_p": 0.10, "spike_ms": spike_ms}})
    with rig.workload(seconds=WORKLOAD_S):
        findings = _watch(rig, DETECT_WITHIN_S, until="intermittent", window=window_s(base_ms))
    assert [(f.device, f.pattern) for f in findings] == [(rig.loops[1], "intermittent")]
    f = findings[0]
    if "p50_us" in f.figures:  # with the eBPF histograms: the median is like the peers'
        assert f.figures["tail_only"] is True
        assert f.figures["slow_request_share"] > 0.05


@pytest.mark.real
@pytest.mark.slow
def test_growing_io_errors_predict_failure(rig: Rig) -> None:
    # slowfs returns EIO: the kernel itself logs "I/O error, dev loopN, sector ..." lines.
    with DiskMonitor(DetectorConfig(), only=rig.loops, smart=False, bpf=False) as monitor:
        rig.set_delays({})
        with rig.workload(seconds=WORKLOAD_S):
            for _ in range(4):
                time.sleep(WINDOW_S)
                monitor.sample()
            rig.set_delays({3: {"error_p": 0.02}})
            findings: list[Finding] = []
            for _ in range(8):
                time.sleep(WINDOW_S)
                findings = [f for f in monitor.sample() if f.kind == "failing"]
                if findings:
                    break
    rig.set_delays({})
    assert [(f.device, f.pattern) for f in findings] == [(rig.loops[3], "error-trend")]
    assert findings[0].figures["recent_errors"] >= 3


@pytest.mark.real
@pytest.mark.slow
def test_cli_names_the_slow_device_in_json(rig: Rig, base_ms: float) -> None:
    rig.set_delays({0: {"delay_ms": 9 * base_ms}})  # x10
    interval = f"{window_s(base_ms):.1f}"
    args = ["disks", "--interval", interval, "--count", "8", "--format", "json", "--no-smart"]
    for loop in rig.loops:
        args += ["--device", loop]
    with rig.workload(seconds=WORKLOAD_S):
        done = run_kassist(args, timeout=HANG_S + 8 * float(interval))  # 8 windows, then a hang
    rig.set_delays({})
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["schema"] == "kassist.disks/1"
    assert [(f["device"], f["pattern"]) for f in doc["findings"]] == [(rig.loops[0], "steady")]
    assert doc["findings"][0]["key"].endswith(f":{rig.loops[0]}")
    assert {row["device"] for row in doc["devices"]} == set(rig.loops)


@pytest.mark.real
def test_the_rigs_devices_are_read_as_one_kind(rig: Rig) -> None:
    from assistant.disks.model import peer_group
    from probes.stats.blockdev import read_block_devices

    devices = read_block_devices()
    kinds = {peer_group(devices[loop]) for loop in rig.loops}
    assert kinds == {"ssd/loop/64M"}
    for loop in rig.loops:
        dev = devices[loop]
        assert dev.major == 7 and dev.direct_io and dev.size_bytes == 48 << 20
        assert dev.backing_file.startswith(str(rig.mount))


@pytest.mark.real
def test_the_latency_stream_hands_over_histograms_and_detaches(rig: Rig) -> None:
    from probes.bpf import ProbeStream, programs_still_loaded, unavailable_reason
    from probes.bpf.library import find_probe

    why = unavailable_reason(find_probe("biolatency_interval"))
    require(why is None, f"biolatency_interval: {why}")
    rig.set_delays({})
    with rig.workload(seconds=WORKLOAD_S):
        before = rig.reads()
        with ProbeStream("biolatency_interval") as stream:
            time.sleep(3.5)
            maps = stream.poll()
            prog_ids = list(stream.result.prog_ids)
        after = rig.reads()
    assert len(maps) >= 8  # four prints a second
    seen: dict[str, int] = {}
    for m in maps:
        for e in m.entries:
            seen[e.labels[0]] = seen.get(e.labels[0], 0) + e.total
    assert set(rig.loops) <= set(seen)
    # fio keeps every device busy: each histogram counts requests, never more than the
    # kernel completed meanwhile (a loaded machine's requests are slower: no rate is asserted)
    done = {loop: after[loop][0] - before[loop][0] for loop in rig.loops}
    assert all(20 <= seen[loop] <= done[loop] for loop in rig.loops), (seen, done)
    assert not stream.running
    assert prog_ids and programs_still_loaded(prog_ids) in ([], None)


@pytest.mark.real
@pytest.mark.slow
def test_a_lone_device_is_judged_against_its_own_history(rig: Rig, base_ms: float) -> None:
    # The monitor sees one device only: no peers, so its own earlier windows are the baseline.
    lone = rig.loops[3]
    rig.set_delays({})
    # The workload first, then the monitor: its own history must not begin with fio's
    # start (a first window of a few ms on a 0.2 ms device widens the band past x10).
    with (
        rig.workload(seconds=WORKLOAD_S),
        DiskMonitor(DetectorConfig(), only=[lone], smart=False) as monitor,
    ):
        # The baseline: 6 windows older than the persistence window. No finding is asserted
        # here: without peers, a machine-wide slowdown (other tests' load) is not cancelled
        # out, which the equal-peers test covers for the peer model.
        window = window_s(base_ms)
        for _ in range(12):
            time.sleep(window)
            monitor.sample()
        rig.set_delays({3: {"delay_ms": 9 * base_ms}})  # x10 its own past
        findings: list[Finding] = []
        for _ in range(int(DETECT_WITHIN_S / WINDOW_S)):
            time.sleep(window)
            findings = monitor.sample()
            if any(f.pattern == "steady" for f in findings):
                break
    rig.set_delays({})
    assert [(f.device, f.pattern, f.baseline) for f in findings] == [
        (lone, "steady", "own history")
    ]
    assert findings[0].peers == [] and "its own history" in findings[0].summary


@pytest.mark.real
@pytest.mark.slow
def test_watch_stores_a_new_finding_once(rig: Rig, base_ms: float, tmp_path: Path) -> None:
    import sqlite3
    import subprocess
    import sys

    from tests.conftest import ROOT

    rig.set_delays({1: {"delay_ms": 9 * base_ms}})  # x10
    db = tmp_path / "c.db"
    window = window_s(base_ms)
    cmd = [sys.executable, "-m", "assistant", "watch", "--source", f"disks:{window:.1f}",
           "--db", str(db), "--state-dir", str(tmp_path / "s")]  # fmt: skip
    with rig.workload(seconds=WORKLOAD_S):
        proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE)
        try:
            deadline = hang_deadline()  # its start (bpftrace compiles) may be slow
            rows: list[tuple[str, str, int]] = []
            while time.monotonic() < deadline and not rows:
                time.sleep(1.0)
                if db.exists():
                    # the schema may not be made yet
                    with contextlib.suppress(sqlite3.OperationalError), sqlite3.connect(db) as c:
                        rows = c.execute(
                            "SELECT title, type, count FROM crashes WHERE type LIKE 'DISK-%'"
                        ).fetchall()
            time.sleep(3 * window)  # the finding lasts: it is not stored again
        finally:
            proc.terminate()
            proc.wait(HANG_S)
    rig.set_delays({})
    with sqlite3.connect(db) as c:
        rows = c.execute(
            "SELECT title, type, count FROM crashes WHERE type LIKE 'DISK-%'"
        ).fetchall()
    assert rows == [(f"fail-slow drive {rig.loops[1]}: steady", "DISK-FAIL-SLOW", 1)]


def test_the_cli_shows_progress_before_its_first_window_ends() -> None:
    # Windows of 30 s: the lines must come while the first one is still running.
    argv = [sys.executable, "-m", "assistant", "disks", "--interval", "30", "--count", "5",
            "--no-bpf", "--no-smart"]  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline()]
        while "watching" not in lines[-1] and lines[-1] and len(lines) < 8:
            lines.append(proc.stderr.readline())
        assert proc.poll() is None, lines  # still in its first window
        assert lines[0] == "kassist: disks: starting the kernel's counters\n"
        assert lines[-1] == (
            "kassist: disks: watching 5 window(s) of 30 s (about 150 s);"
            " findings are shown as they hold\n"
        )
    finally:
        proc.terminate()
        proc.communicate(timeout=HANG_S)
