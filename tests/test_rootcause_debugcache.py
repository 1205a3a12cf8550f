"""The debug cache: a debug file with compressed DWARF is uncompressed once, by build ID.

A real module of the vmcore fixture, its DWARF compressed with objcopy as some
distributions ship it (and as the fixture's vmlinux is).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from probes.drgn.debugcache import cached, compressed_debug, uncompressed
from probes.drgn.elf import build_id
from tests.conftest import require
from tests.vmcore_fixture import VmcoreFixture, vmcore_fixture

__all__ = ["vmcore_fixture"]


def _compressed_copy(vmcore_fixture: VmcoreFixture, tmp_path: Path) -> Path:
    require(shutil.which("objcopy") is not None, "objcopy is not installed (binutils)")
    out = tmp_path / "kassist_crash.ko"
    subprocess.run(
        ["objcopy", "--compress-debug-sections=zlib", str(vmcore_fixture.module_ko), str(out)],
        check=True,
    )
    return out


def test_compressed_dwarf_is_uncompressed_once_by_build_id(
    vmcore_fixture: VmcoreFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KASSIST_DEBUG_CACHE", str(tmp_path / "cache"))
    ko = _compressed_copy(vmcore_fixture, tmp_path)
    assert compressed_debug(str(ko))
    build = build_id(str(ko))
    assert build is not None and cached(build) is None
    first, why = uncompressed(str(ko))
    assert why is None and first != str(ko)
    assert not compressed_debug(first) and build_id(first) == build
    stamp = Path(first).stat().st_ino
    again, _ = uncompressed(str(ko))
    assert again == first and Path(again).stat().st_ino == stamp  # reused, not rewritten
    # A file whose DWARF is not compressed is used as it is.
    assert uncompressed(str(vmcore_fixture.module_ko)) == (str(vmcore_fixture.module_ko), None)


def test_an_unwritable_cache_falls_back_to_the_file_with_one_line(
    vmcore_fixture: VmcoreFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ko = _compressed_copy(vmcore_fixture, tmp_path)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("KASSIST_DEBUG_CACHE", str(blocker / "cache"))
    path, why = uncompressed(str(ko))
    assert path == str(ko)
    assert why is not None and "cannot write the debug cache" in why and "\n" not in why
