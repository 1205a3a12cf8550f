"""The library of bpftrace probes shipped here: their headers and whether they can run here.

Each ``*.bt`` file starts with a comment header of ``key: value`` lines (name,
summary, usage, needs, overhead, caveats, default) and one ``map @name [key ...]: what``
line per map it prints, or ``event NAME [field ...]: what`` per printf event;
the key names pick decoders (see decode.py) and label the output columns.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from probes.bpf.decode import tracefs_dir
from probes.errors import ProbeError

BPF_DIR = Path(__file__).resolve().parent
_FIELD = re.compile(r"^(name|summary|usage|needs|overhead|caveats|default):\s*(.*)$")
_MAP = re.compile(r"^map\s+(@\w+)\s*(?:\[([^\]]*)\])?\s*:\s*(.*)$")
_EVENT = re.compile(r"^event\s+(\w+)\s*\[([^\]]*)\]\s*:\s*(.*)$")
_BEGIN_PRINTF = re.compile(r"^\s*BEGIN\s*\{[^}]*\bprintf\(", re.MULTILINE)
_TRACEPOINT = re.compile(r"\btracepoint:(\w+):(\w+)")


@dataclass
class MapSpec:
    """A map a probe prints: its key names (empty for a single value) and what it holds."""

    name: str
    keys: list[str]
    description: str


@dataclass
class EventSpec:
    """A tab-separated printf event a probe prints: its first word names it, then the fields."""

    name: str
    fields: list[str]
    description: str


@dataclass
class ProbeSpec:
    """One bpftrace probe of the library, as its header describes it.

    :param path: the ``.bt`` file.
    :param default: ``yes`` if the probe is cheap enough to run routinely (its overhead is
        within the 5 % target of benchmarks/probe_overhead.py), ``no`` if only on demand.
    :param tracepoints: ``(category, name)`` of every tracepoint the program attaches to.
    :param has_begin: the program prints from a BEGIN probe (BEGIN runs once every probe is
        attached, so the runner takes that first printf as the sign that tracing has begun).
    """

    name: str
    path: Path
    summary: str = ""
    usage: str = ""
    needs: str = ""
    overhead: str = ""
    caveats: str = ""
    default: str = "yes"
    maps: dict[str, MapSpec] = field(default_factory=dict)
    events: dict[str, EventSpec] = field(default_factory=dict)
    tracepoints: list[tuple[str, str]] = field(default_factory=list)
    has_begin: bool = False


def parse_header(source: str, path: Path) -> ProbeSpec:
    """Read a probe's header comment and its tracepoints from the program text.

    :param source: the ``.bt`` text.
    :param path: where it came from (its stem is the default name).
    """
    spec = ProbeSpec(name=path.stem, path=path)
    header = source.split("*/", 1)[0] if "/*" in source else ""
    last: str | None = None
    for raw in header.splitlines():
        line = raw.strip().lstrip("/*").strip()
        if m := _FIELD.match(line):
            last = m.group(1)
            setattr(spec, last, m.group(2).strip())
        elif m := _MAP.match(line):
            spec.maps[m.group(1)] = MapSpec(m.group(1), (m.group(2) or "").split(), m.group(3))
            last = None
        elif m := _EVENT.match(line):
            spec.events[m.group(1)] = EventSpec(m.group(1), m.group(2).split(), m.group(3))
            last = None
        elif line and last is not None and raw.lstrip().startswith("*   "):
            setattr(spec, last, f"{getattr(spec, last)} {line}")
        else:
            last = None
    spec.tracepoints = list(dict.fromkeys(_TRACEPOINT.findall(source)))
    spec.has_begin = _BEGIN_PRINTF.search(source) is not None
    return spec


def list_probes(directory: Path = BPF_DIR) -> list[ProbeSpec]:
    """Return every probe of the library, by name."""
    return [parse_header(p.read_text(encoding="utf-8"), p) for p in sorted(directory.glob("*.bt"))]


def find_probe(name: str, directory: Path = BPF_DIR) -> ProbeSpec:
    """Return the probe called ``name`` (or at the path ``name`` if it is a ``.bt`` file).

    :raises ProbeError: there is no such probe.
    """
    path = Path(name)
    if path.suffix == ".bt" and path.is_file():
        return parse_header(path.read_text(encoding="utf-8", errors="replace"), path)
    for spec in list_probes(directory):
        if spec.name == name:
            return spec
    known = ", ".join(s.name for s in list_probes(directory))
    raise ProbeError(f"no probe called {name!r}", f"choose one of: {known}")


def unavailable_reason(spec: ProbeSpec, bpftrace: str = "bpftrace") -> str | None:
    """Say in one line why a probe cannot run here, or return ``None`` if it can.

    Checked before running, in this order: root, bpftrace, tracefs, each tracepoint.

    :param bpftrace: the bpftrace executable (name on PATH or path).
    """
    if os.geteuid() != 0:
        return "needs root (bpftrace loads BPF programs: CAP_BPF and CAP_PERFMON)"
    if shutil.which(bpftrace) is None:
        return f"{bpftrace} is not installed (Debian/Ubuntu: apt-get install bpftrace)"
    if not spec.tracepoints:
        return None
    base = tracefs_dir()
    if base is None:
        return "tracefs is not mounted (kassist probe run and kassist doctor --fix mount it)"
    for category, name in spec.tracepoints:
        if not os.path.exists(f"{base}/events/{category}/{name}/id"):
            return f"this kernel has no tracepoint {category}:{name}"
    return None
