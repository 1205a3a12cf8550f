"""The kernel's own scripts, run on the same source tree, to check the knowledge base against.

``scripts/get_maintainer.pl`` needs a directory that looks like the top of a
kernel tree; :func:`extract_tree` makes one from the tarball with every
directory (the script tests ``-d`` on ``F:`` patterns), the top-level files it
checks for, MAINTAINERS, ``.mailmap``, the scripts, and the files asked for.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterable
from pathlib import Path

from assistant.knowledge.model import KnowledgeUnavailable

#: What get_maintainer.pl's top_of_kernel_tree() and its configuration read.
TOP_FILES = frozenset(
    {
        "COPYING",
        "CREDITS",
        "Kbuild",
        "MAINTAINERS",
        "Makefile",
        "README",
        ".mailmap",
        ".get_maintainer.ignore",
    }
)
SCRIPTS = frozenset({"scripts/get_maintainer.pl", "scripts/check-sysctl-docs"})


def extract_tree(
    tarball: Path,
    dest: Path,
    wanted: Callable[[str], bool],
    wanted_text: Callable[[str, bytes], bool] | None = None,
) -> set[str]:
    """Extract every directory, the script's top files and the wanted files into ``dest``.

    :param wanted: which other tree paths (``net/ipv4/tcp.c``) to extract.
    :param wanted_text: which others to extract, judged by path and content.
    :return: the tree paths of the files extracted.
    """
    extracted: set[str] = set()
    with tarfile.open(tarball, mode="r|xz") as tar:
        for member in tar:
            path = member.name.split("/", 1)[1] if "/" in member.name else ""
            if not path:
                continue
            target = dest / path
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                take = path in TOP_FILES or path in SCRIPTS or wanted(path)
                if not take and wanted_text is None:
                    continue
                handle = tar.extractfile(member)
                data = handle.read() if handle else b""
                if take or (wanted_text is not None and wanted_text(path, data)):
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
                    extracted.add(path)
    return extracted


def get_maintainer(tree: Path, path: str) -> list[str]:
    """Run ``scripts/get_maintainer.pl --no-git --no-rolestats -f PATH`` in ``tree``; its lines.

    A file the tree lacks is created empty first (the script refuses missing files;
    an empty file matches by path only, as the knowledge base does for it).

    :raises KnowledgeUnavailable: without perl.
    """
    perl = shutil.which("perl")
    if perl is None:
        raise KnowledgeUnavailable("perl is not installed", "install perl to run get_maintainer.pl")
    target = tree / path
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.touch()
    result = subprocess.run(
        [perl, "scripts/get_maintainer.pl", "--no-git", "--no-rolestats", "-f", path],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tree), "LC_ALL": "C"},
    )
    return [line for line in result.stdout.splitlines() if line.strip()]


def agreement(
    tree: Path, paths: Iterable[str], ours: Callable[[str], list[str]]
) -> tuple[int, int, list[tuple[str, list[str], list[str]]]]:
    """Compare our lines with the script's for each path, as sets (the script's order is random).

    :return: (paths that agree, paths compared, the disagreements as (path, script, ours)).
    """
    same = 0
    total = 0
    differ = []
    for path in paths:
        script = get_maintainer(tree, path)
        mine = ours(path)
        total += 1
        if set(script) == set(mine):
            same += 1
        else:
            differ.append((path, script, mine))
    return same, total, differ


def corpus_guilty_files(guilty_jsonl: Path, reports_jsonl: Path | None) -> list[str]:
    """Return the guilty files of a crash corpus, as the crash reports name them, sorted.

    :param guilty_jsonl: rows with a ``guilty_file`` (syzkaller's guilty test data).
    :param reports_jsonl: rows with a console ``log``; the guilty files kassist's
        triage finds in them are added (paths as the logs give them: ``./x``,
        absolute build paths).
    """
    import json

    from assistant.triage.engine import triage_lines

    found: set[str] = set()
    with guilty_jsonl.open(encoding="utf-8") as rows:
        for line in rows:
            if guilty := json.loads(line).get("guilty_file"):
                found.add(guilty)
    if reports_jsonl is not None:
        with reports_jsonl.open(encoding="utf-8") as rows:
            for line in rows:
                row = json.loads(line)
                result = triage_lines(row["log"].splitlines(), f"corpus:{row['id']}")
                found.update(c.guilty_file for c in result.crashes if c.guilty_file)
    return sorted(found)


_CSD_ENTRY = re.compile(r"^\* (\S+) from (\S+)( \(documented\))?$")
_CSD_MISSING = re.compile(r"^No implementation for (\S+)$")


def check_sysctl_docs(
    tree: Path, table: str, doc: Path, sources: Iterable[str]
) -> tuple[dict[str, bool], set[str]]:
    """Run the kernel's ``scripts/check-sysctl-docs -vtable=TABLE DOC SOURCES...`` in ``tree``.

    :param doc: the table's documentation file (``kernel.rst``), plain text.
    :param sources: C files of the tree (the script's example: every file that
        calls a ``register_sysctl_`` function).
    :return: (the entries it lists → whether it calls them documented, the
        documented names it finds no implementation for).
    :raises KnowledgeUnavailable: without gawk.
    """
    gawk = shutil.which("gawk")
    if gawk is None:
        raise KnowledgeUnavailable(
            "gawk is not installed", "install gawk (./setup.sh as root does)"
        )
    result = subprocess.run(
        [gawk, "-f", "scripts/check-sysctl-docs", f"-vtable={table}", str(doc), *sources],
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    entries: dict[str, bool] = {}
    missing: set[str] = set()
    for line in result.stdout.splitlines():
        if m := _CSD_ENTRY.match(line):
            entries[m.group(1)] = entries.get(m.group(1), False) or bool(m.group(3))
        elif m := _CSD_MISSING.match(line):
            missing.add(m.group(1))
    return entries, missing
