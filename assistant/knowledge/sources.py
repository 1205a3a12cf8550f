"""Reading the Debian packages the knowledge base is built from.

``linux-doc-6.1`` installs ``Documentation/`` (mostly gzipped) under
``/usr/share/doc/linux-doc-6.1``; ``linux-source-6.1`` installs the whole tree as
``/usr/src/linux-source-6.1.tar.xz`` (about 140 MB), which is streamed once.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from assistant.knowledge.model import KnowledgeUnavailable

DOC_PACKAGE = "linux-doc-6.1"
SOURCE_PACKAGE = "linux-source-6.1"
DOC_ROOT = Path("/usr/share/doc/linux-doc-6.1")
SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")

#: Documentation files indexed, by suffix (after a ``.gz`` is taken off).
DOC_SUFFIXES = (".rst", ".txt")


@dataclass(frozen=True)
class Sources:
    """Where the two packages' files are, and their versions (None: not from dpkg)."""

    doc_root: Path = DOC_ROOT
    tarball: Path = SOURCE_TARBALL
    doc_version: str | None = None
    source_version: str | None = None


@functools.lru_cache(maxsize=8)
def package_version(package: str) -> str | None:
    """Return the installed version of a Debian package (``6.1.192-3``), or None."""
    if shutil.which("dpkg-query") is None:
        return None
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Version}", package],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return result.stdout.strip() or None if result.returncode == 0 else None


def installed_sources() -> Sources:
    """Return the installed packages' files and versions.

    :raises KnowledgeUnavailable: when either package's files are missing.
    """
    sources = Sources(
        doc_version=package_version(DOC_PACKAGE), source_version=package_version(SOURCE_PACKAGE)
    )
    for path, package in (
        (sources.doc_root / "Documentation", DOC_PACKAGE),
        (sources.tarball, SOURCE_PACKAGE),
    ):
        if not path.exists():
            raise KnowledgeUnavailable(
                f"{path} is missing",
                f"install the Debian package {package} (./setup.sh as root does)",
            )
    return sources


def doc_files(doc_root: Path, keep: Callable[[str], bool]) -> Iterator[tuple[str, str]]:
    """Yield ``(Documentation/relative/path.rst, text)`` for each rst or txt file, sorted.

    :param doc_root: the directory holding ``Documentation/``; ``.gz`` files are read
        through gzip and named without the suffix.
    :param keep: which of those paths to read.
    """
    base = doc_root / "Documentation"
    for path in sorted(base.rglob("*")):
        if not path.is_file():
            continue
        name = path.name[:-3] if path.name.endswith(".gz") else path.name
        relative = "Documentation/" + str(path.relative_to(base).parent / name).removeprefix("./")
        is_abi = relative.startswith("Documentation/ABI/")
        if not (name.endswith(DOC_SUFFIXES) or is_abi) or not keep(relative):
            continue
        data = (
            gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
        )
        yield relative, data.decode("utf-8", errors="replace")


class _Counting(io.RawIOBase):
    # A file wrapper that reports how many compressed bytes were read so far.
    def __init__(self, raw: BinaryIO, progress: Callable[[int], None]) -> None:
        self.raw = raw
        self.progress = progress
        self.done = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.done += len(data)
        self.progress(self.done)
        return len(data)


def tree_members(
    tarball: Path, progress: Callable[[int, int], None]
) -> Iterator[tuple[str, bytes | None]]:
    """Stream the source tarball once: yield ``(path in the tree, content)`` per member.

    Directories come with None; paths lose their ``linux-source-6.1/`` top.

    :param progress: called with (compressed bytes read, tarball size in bytes).
    """
    total = os.path.getsize(tarball)
    with open(tarball, "rb") as raw:
        counting = _Counting(raw, lambda done: progress(done, total))
        buffered = io.BufferedReader(counting, buffer_size=1 << 20)
        with tarfile.open(fileobj=buffered, mode="r|xz") as tar:
            for member in tar:
                path = member.name.split("/", 1)[1] if "/" in member.name else ""
                if not path:
                    continue
                if member.isdir():
                    yield path.rstrip("/"), None
                elif member.isfile():
                    handle = tar.extractfile(member)
                    yield path, handle.read() if handle else b""
