"""eBPF probes: a library of bpftrace programs (``*.bt`` here) and the runner that reads them.

Each program is a small self-describing file in the bcc/bpftrace tradition; its
``*_example.txt`` shows real output, annotated.
"""

from probes.bpf.library import ProbeSpec, find_probe, list_probes, unavailable_reason
from probes.bpf.render import render_result
from probes.bpf.runner import (
    MapResult,
    ProbeResult,
    ProbeStream,
    programs_of,
    programs_still_loaded,
    run_probe,
)

__all__ = [
    "MapResult",
    "ProbeResult",
    "ProbeSpec",
    "ProbeStream",
    "find_probe",
    "list_probes",
    "programs_of",
    "programs_still_loaded",
    "render_result",
    "run_probe",
    "unavailable_reason",
]
