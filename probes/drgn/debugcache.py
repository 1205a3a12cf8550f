"""A cache of debug files with their DWARF uncompressed, keyed by build ID.

drgn indexes a vmlinux's DWARF every time it opens it. When the ``.debug_*`` sections
are compressed (``SHF_COMPRESSED``: ``objcopy --compress-debug-sections``, as
tests/fixtures/vmcore/build.sh and some distributions ship them), libelf inflates each
of them first, single-threaded: for a 6.1 vmlinux (~100 MB of compressed
``.debug_info``) that was most of the 5 s ``vmcore explain`` took. The first use
writes an uncompressed copy (``objcopy --decompress-debug-sections``) named by the
file's GNU build ID; later ones hand drgn that copy.

The cache is ``$KASSIST_DEBUG_CACHE`` or ``$XDG_CACHE_HOME/kassist/debuginfo``
(default ``~/.cache/kassist/debuginfo``), at most :data:`KEEP` files (the least
recently used go). It is only a speed-up: when it cannot be written (no ``objcopy``,
a full disk) the original file is used and the caller gets one line saying why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from probes.drgn.elf import SHF_COMPRESSED, build_id, elf_header

#: Uncompressed debug files kept (a 6.1 vmlinux's is ~280 MB).
KEEP = 3
#: Seconds allowed for one ``objcopy`` run.
OBJCOPY_TIMEOUT_S = 300


def cache_dir() -> Path:
    """Return the cache directory (see the module's docstring)."""
    env = os.environ.get("KASSIST_DEBUG_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kassist" / "debuginfo"


def compressed_debug(path: str) -> bool:
    """Tell whether an ELF file's ``.debug_info`` is compressed (``SHF_COMPRESSED``).

    :raises OSError: the file cannot be read.
    """
    header = elf_header(path)
    if header is None:
        return False
    return any(s.name == ".debug_info" and s.flags & SHF_COMPRESSED for s in header.sections)


def cached(build: bytes) -> str | None:
    """Return the cached uncompressed debug file of a build ID, if there is one."""
    path = cache_dir() / f"{build.hex()}.debug"
    if not path.is_file():
        return None
    os.utime(path)  # most recently used
    return str(path)


def _evict(directory: Path, keep: int) -> None:
    files = sorted(directory.glob("*.debug"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


def uncompressed(path: str) -> tuple[str, str | None]:
    """Return a file with the same DWARF as ``path``, uncompressed, and a warning or ``None``.

    ``path`` itself when its DWARF is not compressed or it has no build ID; the cached
    copy when there is one; otherwise the copy is written now (seconds, once).

    :return: (the file to give drgn, a line saying why the cache was not used, or ``None``).
    """
    try:
        if not compressed_debug(path):
            return path, None
        build = build_id(path)
    except OSError:
        return path, None  # the caller reports an unreadable file itself
    if build is None:
        return path, None
    hit = cached(build)
    if hit is not None:
        return hit, None
    return _write_uncompressed(path, build)


def _write_uncompressed(path: str, build: bytes) -> tuple[str, str | None]:
    # objcopy the file into the cache under its build ID; (path, why) when it cannot.
    tool = shutil.which("objcopy")
    if tool is None:
        return path, "objcopy not found (binutils): the compressed DWARF is inflated on every run"
    directory = cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{build.hex()}.", suffix=".tmp", dir=directory)
        os.close(fd)
    except OSError as exc:
        return path, f"cannot write the debug cache {directory}: {exc.strerror}"
    try:
        proc = subprocess.run(
            [tool, "--decompress-debug-sections", path, tmp],
            capture_output=True,
            text=True,
            timeout=OBJCOPY_TIMEOUT_S,
            check=False,
        )
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            return path, f"objcopy could not uncompress {path} into the debug cache: {why}"
        final = directory / f"{build.hex()}.debug"
        os.replace(tmp, final)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return path, f"cannot write the debug cache {directory}: {exc}"
    finally:
        Path(tmp).unlink(missing_ok=True)
    _evict(directory, KEEP)
    return str(final), None
