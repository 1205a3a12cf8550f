"""Fail-slow and failing drives (``kassist disks``): evidence, peers, a robust model.

:class:`~assistant.disks.monitor.DiskMonitor` samples every device each interval and
returns :class:`~assistant.disks.model.Finding` objects, each with the figures behind
it and a stable ``key`` (a watch daemon feeds on :func:`~assistant.disks.monitor.new_findings`).
The model is described in :mod:`assistant.disks.model`; findings are advice, and
nothing here writes to the kernel.
"""

from assistant.disks.model import Detector, DetectorConfig, Finding
from assistant.disks.monitor import DiskMonitor, new_findings

__all__ = ["Detector", "DetectorConfig", "DiskMonitor", "Finding", "new_findings"]
