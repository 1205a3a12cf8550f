"""Every crash with a ``Code:`` line that kassist's tests and benchmarks have.

The shared dev corpus (syzkaller's report tests), ``tests/data`` (its logs, the real
Debian kernel's consoles under ``kernel/``, the decorated ``formats/``), and the
consoles of the vmcore fixtures when they are built. Each crash is triaged first, so
the ``Code:`` line and the register dump are the ones triage extracted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from assistant.rootcause.code import code_line
from assistant.rootcause.registers import Arch, report_arch
from assistant.triage import Crash, triage_lines
from tests.conftest import ROOT

CORPUS = ROOT.parent / "shared" / "corpus"
DATA = ROOT / "tests" / "data"


@dataclass(frozen=True)
class CodeCase:
    """One distinct ``Code:`` line: where it was first seen, its arch, its tokens."""

    where: str
    arch: Arch | None
    tokens: str
    report: str

    @property
    def line(self) -> str:
        """The line as decodecode reads it (printk prefix and decorations left out)."""
        return f"Code: {self.tokens}"


def _logs() -> Iterator[tuple[str, str]]:
    for path in sorted(CORPUS.glob("*.jsonl")):
        for raw in path.read_text().splitlines():
            entry = json.loads(raw)
            yield f"{path.name}:{entry['id']}", entry["log"]
    for path in sorted(DATA.rglob("*")):
        if not path.is_file() or "golden" in path.parts:
            continue
        if path.suffix == ".jsonl":
            for n, raw in enumerate(path.read_text().splitlines()):
                entry = json.loads(raw)
                if "log" in entry:
                    yield f"{path.relative_to(ROOT)}:{n}", entry["log"]
        elif path.suffix in (".log", "") or path.parent.name != "chat":
            yield str(path.relative_to(ROOT)), path.read_text(errors="replace")


def fixture_consoles(cache: Path) -> Iterator[tuple[str, str]]:
    """The serial consoles of the built vmcore fixtures under ``cache``."""
    for path in sorted(cache.glob("*/console.log")) + sorted(cache.glob("*/kinds/*/console.log")):
        yield str(path), path.read_text(errors="replace")


def crashes(logs: Iterator[tuple[str, str]]) -> Iterator[tuple[str, Crash]]:
    """Triage each log and yield its crashes."""
    for where, text in logs:
        for crash in triage_lines(text.splitlines(), source=where).crashes:
            yield where, crash


def code_cases(extra: Iterator[tuple[str, str]] | None = None) -> list[CodeCase]:
    """Every distinct ``Code:`` line of the corpora (first place seen)."""
    seen: dict[tuple[Arch | None, str], CodeCase] = {}
    for where, crash in crashes(_chain(_logs(), extra or iter(()))):
        text = code_line(crash.report)
        if text is None:
            continue
        tokens = " ".join(text.split())
        arch = report_arch(crash.report)
        seen.setdefault((arch, tokens), CodeCase(where, arch, tokens, crash.report))
    return list(seen.values())


def _chain(*its: Iterator[tuple[str, str]]) -> Iterator[tuple[str, str]]:
    for it in its:
        yield from it
