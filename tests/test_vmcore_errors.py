"""Bad input to the vmcore analyses: each gives one clear line and a non-zero exit."""

from __future__ import annotations

import os
import re
import shutil
import struct
from pathlib import Path

import pytest

from probes.drgn import DebugSources, DumpFormat, dump_format, open_live, open_vmcore
from probes.drgn.elf import build_id
from probes.drgn.kdump import FLAT_HEADER_SIZE, flattened_shortfall
from probes.drgn.program import check_elf_core
from probes.errors import ProbeError
from tests.conftest import require, run_kassist
from tests.vmcore_fixture import VmcoreFixture, reassemble_flattened, vmcore_fixture

__all__ = ["vmcore_fixture"]


def _one_line_error(proc_stderr: str) -> str:
    lines = [line for line in proc_stderr.splitlines() if line.startswith("kassist: ")]
    errors = [line for line in lines if "loading debug info" not in line]
    assert len(errors) == 1, proc_stderr
    assert "Traceback" not in proc_stderr
    return errors[0]


def _elf_core(segments: list[tuple[int, int]], size: int) -> bytes:
    # A minimal ELF64 core header with PT_LOAD segments (offset, filesz).
    phoff = 64
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, phoff, 0, 0, 64, 56, len(segments), 0, 0, 0)
    phdrs = b"".join(struct.pack("<IIQQQQQQ", 1, 4, off, 0, 0, sz, sz, 0) for off, sz in segments)
    data = ehdr + phdrs
    return data + bytes(size - len(data))


def test_dump_format_by_signature(tmp_path: Path) -> None:
    for head, fmt in (
        (b"\x7fELF\x02\x01", DumpFormat.ELF),
        (b"KDUMP   \x06", DumpFormat.KDUMP),
        (b"makedumpfile\0\0", DumpFormat.FLATTENED),
    ):
        (tmp_path / "f").write_bytes(head + bytes(64))
        assert dump_format(str(tmp_path / "f")) is fmt
    (tmp_path / "f").write_bytes(b"hello, world\n")
    with pytest.raises(ProbeError, match="is not a vmcore"):
        dump_format(str(tmp_path / "f"))
    with pytest.raises(ProbeError, match="no such file"):
        dump_format(str(tmp_path / "missing"))
    with pytest.raises(ProbeError, match="is a directory"):
        dump_format(str(tmp_path))


def test_truncated_elf_core_is_caught_before_drgn(tmp_path: Path) -> None:
    core = tmp_path / "vmcore"
    core.write_bytes(_elf_core([(4096, 8192), (12288, 1 << 20)], 16384))
    with pytest.raises(ProbeError, match=r"truncated: 16384 bytes, its segments need 1060864"):
        check_elf_core(str(core))
    core.write_bytes(_elf_core([(4096, 8192)], 12288))
    check_elf_core(str(core))  # complete: no error


def test_build_id_of_non_elf_is_none(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(os.urandom(256))
    assert build_id(str(tmp_path / "x")) is None


def test_truncated_vmcore(vmcore_fixture: VmcoreFixture, tmp_path: Path) -> None:
    cut = tmp_path / "vmcore"
    with open(vmcore_fixture.vmcore, "rb") as src:
        cut.write_bytes(src.read(vmcore_fixture.vmcore.stat().st_size // 2))
    proc = run_kassist(["vmcore", "info", str(cut), "--debug-dir", str(vmcore_fixture.debug_dir)])
    assert proc.returncode == 1
    line = _one_line_error(proc.stderr)
    assert f"{cut} is truncated: the flattened dump stops at byte" in line


def test_truncated_kdump_compressed(vmcore_fixture: VmcoreFixture, tmp_path: Path) -> None:
    whole, cut = tmp_path / "vmcore.kdump", tmp_path / "cut.kdump"
    reassemble_flattened(vmcore_fixture.vmcore, whole)
    with open(whole, "rb") as src:
        cut.write_bytes(src.read(whole.stat().st_size - 4096))
    assert dump_format(str(cut)) is DumpFormat.KDUMP
    with pytest.raises(
        ProbeError, match=rf"truncated: \d+ bytes, its pages need {whole.stat().st_size}$"
    ):
        open_vmcore(str(cut), DebugSources(debug_dir=str(vmcore_fixture.debug_dir)))


def test_flattened_records_are_walked(tmp_path: Path) -> None:
    header = b"makedumpfile".ljust(FLAT_HEADER_SIZE, b"\0")
    record = struct.pack(">qq", 8192, 5) + b"hello"
    end = struct.pack(">qq", -1, -1)
    (tmp_path / "ok").write_bytes(header + record + end)
    assert flattened_shortfall(str(tmp_path / "ok")) is None
    (tmp_path / "cut").write_bytes(header + record[:-2])
    assert flattened_shortfall(str(tmp_path / "cut")) == len(header) + len(record) - 2
    (tmp_path / "noend").write_bytes(header + record)
    assert flattened_shortfall(str(tmp_path / "noend")) == len(header) + len(record)


def test_wrong_vmlinux(vmcore_fixture: VmcoreFixture) -> None:
    # Another ELF with a build ID, as a mistaken --vmlinux would be.
    proc = run_kassist(
        ["vmcore", "bt", str(vmcore_fixture.vmcore), "--vmlinux", str(vmcore_fixture.module_ko)]
    )
    assert proc.returncode == 1
    line = _one_line_error(proc.stderr)
    assert "does not match the dump: build ID" in line
    assert f"linux-image-{vmcore_fixture.abi}-dbg" in line


def test_random_file(tmp_path: Path) -> None:
    junk = tmp_path / "vmcore"
    junk.write_bytes(os.urandom(1 << 16))
    proc = run_kassist(["triage", "--vmcore", str(junk)])
    assert proc.returncode == 1
    assert "is not a vmcore" in _one_line_error(proc.stderr)


def test_no_debug_info(vmcore_fixture: VmcoreFixture, tmp_path: Path) -> None:
    with pytest.raises(ProbeError, match="no debug info found for kernel"):
        open_vmcore(str(vmcore_fixture.vmcore), DebugSources(debug_dir=str(tmp_path)))


def test_live_kernel_without_kcore(tmp_path: Path) -> None:
    missing = tmp_path / "kcore"
    with pytest.raises(ProbeError, match=rf"^not available here: no {re.escape(str(missing))}$"):
        open_live(kcore=str(missing))


def test_cli_without_kcore_says_so_in_one_line() -> None:
    # /proc/kcore hidden on any machine: an empty /proc in a private mount namespace (inside a
    # user namespace, so that it needs no root)
    require(shutil.which("unshare") is not None, "needs unshare (util-linux)")
    hide_proc = ("unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
                 'mount -t tmpfs none /proc && exec "$0" "$@"')  # fmt: skip
    proc = run_kassist(["vmcore", "info", "/proc/kcore"], prefix=hide_proc)
    assert proc.returncode == 2, proc.stderr
    assert _one_line_error(proc.stderr).startswith("kassist: not available here: no /proc/kcore")
