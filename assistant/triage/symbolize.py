"""Symbolise call traces: ``func+0x1a/0x90`` → ``file:line``, inlined frames added.

Uses elfutils' ``eu-addr2line`` on a vmlinux (or module ``.ko``) with debug info,
which resolves ``symbol+offset`` itself. Return addresses point after the call,
so, as syzkaller does, a frame's offset minus one is looked up, except for the
faulting frame (the ``RIP:`` one, first in the trace). Without debug info the
frames are left as they are.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from assistant.errors import NotAvailable
from assistant.triage import parse
from assistant.triage.model import Crash, Frame

#: Top-level directories of the kernel tree: a path is cut to start at one.
_KERNEL_DIRS = re.compile(
    r"(?:^|/)((?:arch|block|certs|crypto|drivers|fs|include|init|io_uring|ipc|kernel|lib|mm|net|"
    r"rust|samples|security|sound|tools|usr|virt)/.*)$"
)
#: Seconds allowed for one eu-addr2line run.
TIMEOUT_S = 120


def _clean_path(path: str) -> str:
    m = _KERNEL_DIRS.search(path)
    return m.group(1) if m else path.lstrip("./")


def _module_file(module: str, debug_dir: Path | None) -> Path | None:
    if debug_dir is None:
        return None
    names = {module, module.replace("_", "-")}
    for name in names:
        for pattern in (f"{name}.ko.debug", f"{name}.ko"):
            found = next(debug_dir.rglob(pattern), None)
            if found is not None:
                return found
    return None


_Located = tuple[str, str | None, int | None]


def _addr2line(binary: Path, queries: list[str]) -> list[list[_Located]]:
    """Resolve ``symbol+0xoff`` queries: for each, its (function, file, line), inner first."""
    tool = shutil.which("eu-addr2line")
    if tool is None:
        raise NotAvailable("eu-addr2line is not installed", "install elfutils")
    proc = subprocess.run(
        [tool, "-e", str(binary), "-a", "-f", "-i", *queries],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    results: list[list[_Located]] = []
    lines = proc.stdout.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("0x"):
            i += 1
            continue
        i += 1
        frames: list[_Located] = []
        while i < len(lines) and not lines[i].startswith("0x"):
            func = lines[i]
            loc = lines[i + 1] if i + 1 < len(lines) else "??:0"
            i += 2
            file, _, rest = loc.partition(":")
            line_no = rest.split(":")[0]
            if file in ("??", "") or not line_no.isdigit() or int(line_no) == 0:
                frames.append((func, None, None))
            else:
                frames.append((func, _clean_path(file), int(line_no)))
        results.append(frames)
    return results


def symbolize_crash(crash: Crash, vmlinux: Path, debug_dir: Path | None = None) -> int:
    """Add file:line (and inlined frames) to a crash's unsymbolised frames.

    :return: how many frames were resolved.
    """
    todo: dict[Path, list[int]] = {}
    for idx, f in enumerate(crash.call_trace):
        if f.file is not None or f.offset is None:
            continue
        binary = vmlinux if f.module is None else _module_file(f.module, debug_dir)
        if binary is not None:
            todo.setdefault(binary, []).append(idx)
    resolved: dict[int, list[Frame]] = {}
    for binary, indices in todo.items():
        queries = []
        for idx in indices:
            f = crash.call_trace[idx]
            off = f.offset or 0
            queries.append(f"{f.function}+{hex(off if idx == 0 or off == 0 else off - 1)}")
        for idx, frames in zip(indices, _addr2line(binary, queries), strict=False):
            f = crash.call_trace[idx]
            if not frames or frames[-1][1] is None:
                continue
            out = [
                Frame(function=func, module=f.module, file=file, line=line, inline=True)
                for func, file, line in frames[:-1]
            ]
            out.append(Frame(f.function, f.offset, f.size, f.module, frames[-1][1], frames[-1][2]))
            resolved[idx] = out
    if not resolved:
        return 0
    trace: list[Frame] = []
    for idx, f in enumerate(crash.call_trace):
        trace.extend(resolved.get(idx, [f]))
    crash.call_trace = trace
    lines = [f" {f.function} {f.file}:{f.line}" for f in trace if f.file]
    crash.guilty_file = parse.guilty_file(crash.title, lines) or crash.guilty_file
    return len(resolved)
