"""The golden triage corpus: one file per log, the expected answer above the raw log.

Syzkaller's style: ``TITLE:``, ``ALT:``, ``TYPE:``, ``FRAME:``, ``CORRUPTED:`` headers
(plus kassist's ``SPAN:``, ``GUILTY:`` and ``CRASHES:``) describe the first crash, a
blank line, then the log as it came. ``tests/test_triage_golden.py`` checks every file;
``KASSIST_UPDATE_GOLDEN=1`` rewrites the headers, to be used only after the diff of a
run without it was reviewed. ``tests/data/golden/make_golden.py`` writes the files.
"""

from __future__ import annotations

from pathlib import Path

from assistant.triage import triage_lines

ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}


def headers(log: str) -> list[str]:
    """Describe the triage of a log as golden headers."""
    crashes = triage_lines(log.split("\n"), source="golden").crashes
    out = []
    if crashes:
        c = crashes[0]
        out.append(f"TITLE: {c.title}")
        out += [f"ALT: {alt}" for alt in c.alt_titles]
        out.append(f"TYPE: {c.type}")
        if c.frame:
            out.append(f"FRAME: {c.frame}")
        out.append(f"CORRUPTED: {'Y' if c.corrupted else 'N'}")
        out.append(f"SPAN: {c.start_line}-{c.end_line}")
        if c.guilty_file:
            out.append(f"GUILTY: {c.guilty_file}")
    out.append(f"CRASHES: {len(crashes)}")
    return out


def split(text: str) -> tuple[list[str], str]:
    """Split a golden file into its header lines and its log."""
    head, _, log = text.partition("\n\n")
    return head.split("\n"), log


def write(path: Path, log: str) -> None:
    """Write a golden file for ``log``."""
    path.write_text("\n".join(headers(log)) + "\n\n" + log, **ENCODING)


def read(path: Path) -> tuple[list[str], str]:
    """Read a golden file."""
    return split(path.read_text(**ENCODING))
