"""The real vmcore fixture: built once by tests/fixtures/vmcore/build.sh, cached per kernel ABI.

Test modules import :func:`vmcore_fixture` (a session-scoped pytest fixture).
When the cache is missing, the build runs (about 70 s plus downloads); when it
cannot run here, the tests skip, or fail under ``KASSIST_REQUIRE_REAL=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, require

BUILD_SCRIPT = ROOT / "tests" / "fixtures" / "vmcore" / "build.sh"
MODULE_SOURCE = ROOT / "tests" / "fixtures" / "vmcore" / "module" / "kassist_crash.c"


@dataclass(frozen=True)
class VmcoreFixture:
    """The files of one built fixture (see build.sh for what each is)."""

    dir: Path
    abi: str
    vmcore: Path
    vmlinux: Path
    debug_dir: Path
    module_ko: Path
    console_log: Path
    vmlinuz: Path
    initrd: Path
    build_seconds: int


def _cache_root() -> Path:
    base = os.environ.get("KASSIST_FIXTURE_CACHE")
    return Path(base) if base else Path.home() / ".cache" / "kassist" / "fixtures"


def _load(build_json: Path) -> VmcoreFixture:
    meta = json.loads(build_json.read_text())
    d = build_json.parent
    return VmcoreFixture(
        dir=d,
        abi=meta["abi"],
        vmcore=d / meta["vmcore"],
        vmlinux=d / meta["vmlinux"],
        debug_dir=d / meta["debug_dir"],
        module_ko=d / meta["module"],
        console_log=d / meta["console_log"],
        vmlinuz=d / meta["vmlinuz"],
        initrd=d / meta["initrd"],
        build_seconds=int(meta["build_seconds"]),
    )


def _current_abi() -> str | None:
    if os.environ.get("KASSIST_KERNEL_ABI"):
        return os.environ["KASSIST_KERNEL_ABI"]
    if not shutil.which("apt-cache"):
        return None
    out = subprocess.run(
        ["apt-cache", "depends", "linux-image-cloud-amd64"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for raw in out.splitlines():
        line = raw.strip()
        if line.startswith("Depends: linux-image-"):
            return line.removeprefix("Depends: linux-image-")
    return None


def find_or_build() -> VmcoreFixture:
    """Return the cached fixture, building it first when it is missing."""
    abi = _current_abi()
    cached = sorted(_cache_root().glob("*/build.json"))
    if abi is not None and (_cache_root() / abi / "build.json").exists():
        return _load(_cache_root() / abi / "build.json")
    if abi is None and cached:
        return _load(cached[-1])
    require(os.geteuid() == 0, "building the vmcore fixture needs root (apt-get, headers)")
    require(
        shutil.which("qemu-system-x86_64") is not None,
        "qemu-system-x86_64 is not installed (./setup.sh installs it)",
    )
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"building the vmcore fixture failed:\n{proc.stderr[-3000:]}")
    built = sorted(_cache_root().glob("*/build.json"))
    require(bool(built), "the vmcore fixture build left no build.json")
    return _load(
        _cache_root() / abi / "build.json" if abi else max(built, key=lambda p: p.stat().st_mtime)
    )


@pytest.fixture(scope="session")
def vmcore_fixture() -> VmcoreFixture:
    """The real vmcore of a Debian cloud kernel that crashed in kassist_crash.ko."""
    return find_or_build()


def source_line(needle: str) -> int:
    """Return the 1-based line of the module source that contains ``needle``."""
    for number, line in enumerate(MODULE_SOURCE.read_text().splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {MODULE_SOURCE}")


def reassemble_flattened(src: Path, dst: Path) -> None:
    """Turn a makedumpfile-flattened dump into the kdump-compressed file it describes.

    What ``makedumpfile -R dst < src`` does, so the tests can open the same
    crash as a plain kdump-compressed file.
    """
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        if not fin.read(4096).startswith(b"makedumpfile"):
            raise ValueError(f"{src} is not a flattened dump")
        while True:
            header = fin.read(16)
            if len(header) < 16:
                raise ValueError(f"{src} ends without the end record")
            offset, size = struct.unpack(">qq", header)
            if offset == -1:
                return
            data = fin.read(size)
            if len(data) < size:
                raise ValueError(f"{src} is truncated")
            fout.seek(offset)
            fout.write(data)


@dataclass(frozen=True)
class KindsFixture:
    """The per-kind dumps of build.sh's KINDS table (same kernel as the single dump)."""

    base: VmcoreFixture
    dir: Path
    kinds: dict[str, Path]
    modules: tuple[Path, ...]
    lkdtm_source: Path
    module_source: Path

    def vmcore(self, kind: str) -> Path:
        """Return the dump of one kind."""
        return self.kinds[kind] / "vmcore"

    def console(self, kind: str) -> str:
        """Return the serial console of that kind's boot."""
        return (self.kinds[kind] / "console.log").read_text(errors="replace")


def find_or_build_kinds() -> KindsFixture:
    """Return the crash kinds' dumps, running build.sh first when they are missing."""
    base = find_or_build()
    meta_path = base.dir / "kinds" / "kinds.json"
    if not meta_path.exists():
        require(os.geteuid() == 0, "building the crash kinds needs root (apt-get, headers)")
        proc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=3600, check=False
        )
        if proc.returncode != 0:
            pytest.fail(f"building the crash kinds failed:\n{proc.stderr[-3000:]}")
    meta = json.loads(meta_path.read_text())
    d = meta_path.parent
    return KindsFixture(
        base=base,
        dir=d,
        kinds={k: d / k for k in meta["kinds"]},
        modules=tuple(d / m for m in meta["modules"].values()),
        lkdtm_source=d / "src" / "lkdtm",
        module_source=d / "src" / "kassist_crash" / "kassist_crash.c",
    )


@pytest.fixture(scope="session")
def vmcore_kinds() -> KindsFixture:
    """One real vmcore per crash kind: LKDTM's and kassist_crash's (see build.sh)."""
    return find_or_build_kinds()


def line_of(path: Path, needle: str, after: str = "") -> int:
    """Return the 1-based line of ``path`` that contains ``needle`` (the first one after
    the line containing ``after``, e.g. the function's own definition)."""
    started = not after
    for number, line in enumerate(path.read_text().splitlines(), 1):
        started = started or after in line
        if started and needle in line:
            return number
    raise AssertionError(f"{needle!r} not in {path}")
