"""Find what kdump left behind: crash directories, their dmesg files and their dumps.

kdump-tools (Debian, Ubuntu) writes ``/var/crash/<YYYYMMDDHHMM>/`` with ``dump.<stamp>``
and ``dmesg.<stamp>``; RHEL's kdump writes ``/var/crash/<host>-<date>/`` with ``vmcore``
and ``vmcore-dmesg.txt``; ``makedumpfile --dump-dmesg`` output is often kept as
``dmesg.txt`` beside the dump. A *crash directory* is one that holds a dump, or a dmesg
file by a name only kdump gives; only crash directories are read, so that a directory
that merely holds a file called ``dmesg`` (``/usr/bin``) is no kdump directory.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

#: Names of the dumps kdump-tools and makedumpfile leave (``vmcore.incomplete`` is not one).
_DUMP_NAME = re.compile(r"vmcore(?:\.(?!incomplete$)\w+)?|dump\.\d[\d-]*")
#: dmesg files by a name only kdump gives.
_KDUMP_DMESG_NAME = re.compile(r"dmesg\.\d[\d-]*|vmcore-dmesg\.txt")
#: dmesg files by a generic name: read only beside a dump.
_GENERIC_DMESG_NAMES = ("dmesg.txt", "dmesg")


def _files(directory: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return sorted(p for p in directory.iterdir() if p.is_file())
    return []


def _subdirectories(directory: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return sorted(p for p in directory.iterdir() if p.is_dir() and not p.is_symlink())
    return []


def dumps_in(directory: Path) -> list[Path]:
    """Return the dumps directly in one directory (``vmcore``, ``dump.<stamp>``), by name."""
    return [p for p in _files(directory) if _DUMP_NAME.fullmatch(p.name)]


def dmesg_files_in(directory: Path) -> list[Path]:
    """Return the kdump dmesg files directly in one directory (none if it is no crash
    directory: see the module doc)."""
    files = _files(directory)
    named = [p for p in files if _KDUMP_DMESG_NAME.fullmatch(p.name)]
    if any(_DUMP_NAME.fullmatch(p.name) for p in files):
        named += [p for p in files if p.name in _GENERIC_DMESG_NAMES]
    return sorted(named)


def is_crash_directory(directory: Path) -> bool:
    """Tell whether a directory is one kdump wrote: it holds a dump or a kdump dmesg file."""
    return bool(dumps_in(directory) or dmesg_files_in(directory))


def crash_directories(top: Path) -> list[Path]:
    """Return the crash directories of a kdump directory: ``top`` itself when it is one,
    and each of its subdirectories that is one, oldest name first.

    :param top: ``/var/crash`` or one ``/var/crash/<stamp>/``; a missing one has none.
    """
    return [d for d in [top, *_subdirectories(top)] if is_crash_directory(d)]


def kdump_dmesg_files(top: Path) -> list[Path]:
    """Return the dmesg files of a kdump directory's crash directories, oldest crash first.

    :param top: ``/var/crash`` or one ``/var/crash/<stamp>/``.
    :return: the files; empty when ``top`` holds no crash directory.
    """
    return [f for d in crash_directories(top) for f in dmesg_files_in(d)]


def vmcore_files(top: Path) -> list[Path]:
    """Return the dumps of a kdump directory's crash directories, oldest crash first."""
    return [f for d in crash_directories(top) for f in dumps_in(d)]
