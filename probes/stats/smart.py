"""Drive health counters from SMART (``smartctl --json``, Debian's smartmontools).

smartctl reads both ATA/SCSI SMART attributes and the NVMe health log, so one
tool covers both (nvme-cli's ``nvme smart-log`` reads the same NVMe log page).
Virtual devices (loop, zram, device-mapper, virtio) have no SMART; they are not asked.
Reading is kept apart from parsing: :func:`parse_smartctl_json` works on text.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

#: Drivers of devices that have no SMART data to read.
NO_SMART_DRIVERS = frozenset({"loop", "zram", "device-mapper", "virtio_blk", "md", "nbd"})
#: ATA attribute ids whose raw values count failing media (smartmontools' names).
ATA_COUNTERS: dict[int, str] = {
    5: "reallocated_sectors",
    187: "reported_uncorrectable",
    188: "command_timeouts",
    197: "pending_sectors",
    198: "offline_uncorrectable",
}
#: NVMe health log fields (NVMe base spec, SMART / Health Information log page) kept.
NVME_COUNTERS = ("media_errors", "num_err_log_entries", "critical_warning", "percentage_used")
#: Seconds smartctl may take for one device.
SMARTCTL_TIMEOUT = 20.0


@dataclass
class SmartHealth:
    """A drive's SMART verdict and failure counters.

    :param passed: the drive's overall self-assessment (``None``: it gave none).
    :param counters: counters that grow as media fails (reallocated sectors, media errors...).
    """

    device: str
    passed: bool | None
    counters: dict[str, int] = field(default_factory=dict)


def parse_smartctl_json(device: str, text: str) -> SmartHealth | None:
    """Parse ``smartctl --json -H -A`` output; ``None`` if it holds no health data."""
    try:
        data: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    status = data.get("smart_status")
    passed = status.get("passed") if isinstance(status, dict) else None
    counters: dict[str, int] = {}
    table = (data.get("ata_smart_attributes") or {}).get("table") or []
    for row in table:
        attr_id = row.get("id") if isinstance(row, dict) else None
        name = ATA_COUNTERS.get(attr_id) if isinstance(attr_id, int) else None
        raw = (row.get("raw") or {}).get("value") if name else None
        if name and isinstance(raw, int):
            counters[name] = raw
    nvme = data.get("nvme_smart_health_information_log") or {}
    for key in NVME_COUNTERS:
        if isinstance(nvme.get(key), int):
            counters[key] = nvme[key]
    if passed is None and not counters:
        return None
    return SmartHealth(device, passed if isinstance(passed, bool) else None, counters)


def smart_unavailable_reason(smartctl: str = "smartctl") -> str | None:
    """Say why SMART cannot be read here (one line), or ``None`` if it can."""
    if shutil.which(smartctl) is None:
        return "smartctl is not installed (Debian/Ubuntu: apt-get install smartmontools)"
    return None


def read_smart(device: str, smartctl: str = "smartctl") -> SmartHealth | None:
    """Run smartctl on ``/dev/<device>`` and parse it; ``None`` when the drive gives nothing."""
    try:
        proc = subprocess.run(
            [smartctl, "--json=c", "-H", "-A", f"/dev/{device}"],
            capture_output=True,
            text=True,
            timeout=SMARTCTL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    # smartctl's exit status is a bit mask of findings; the JSON is what matters.
    return parse_smartctl_json(device, proc.stdout)
