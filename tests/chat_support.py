"""What the chat's tests compare its figures with: /proc read here on its own, and the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import run_kassist


def meminfo_kib() -> dict[str, int]:
    """Return /proc/meminfo's ``Name:  123 kB`` lines, in KiB."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            out[name] = int(rest.split()[0])
    return out


def gib(kib: int) -> str:
    """Format KiB as the chat and the CLI show memory (``23.5 GiB``)."""
    return f"{kib * 1024 / (1 << 30):.1f} GiB"


def memory_total_line() -> str:
    """Return the start of the memory line with /proc's MemTotal now (a VM's balloon
    driver may change it while the machine runs)."""
    return f"memory     total {gib(meminfo_kib()['MemTotal'])}"


def cpus() -> int:
    """Return the ``cpuN`` lines of /proc/stat: the CPUs the load is compared with."""
    lines = Path("/proc/stat").read_text().splitlines()
    return sum(1 for line in lines if line.startswith("cpu") and line[3].isdigit())


def kernel_dmesg() -> str:
    """Return the kernel's own records of the ring buffer, as ``dmesg --facility kern``."""
    return subprocess.run(
        ["dmesg", "--facility", "kern"], capture_output=True, text=True, check=True
    ).stdout


def crashes_by_cli(dmesg: str) -> int:
    """Return how many crashes ``kassist triage -`` finds in a dmesg text (none in none: the
    buffer may hold no kernel record at all when user-space lines flooded it)."""
    if not dmesg.strip():
        return 0
    out = run_kassist(["triage", "--format", "json", "-"], input=dmesg)
    assert out.returncode == 0, out.stderr
    return len(json.loads(out.stdout)["crashes"])
