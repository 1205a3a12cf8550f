"""From a log alone with the kernel's debug files: the faulting PC's file:line and member.

The real console logs of the fixture's crashes (a Debian cloud kernel in QEMU), the
Debian -dbg vmlinux and the modules' .ko with DWARF; no dump is opened. Each
expectation is read from the module's source (the line that faulted, the member it read).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from assistant.errors import InputError
from assistant.rootcause.debuginfo import explain_log, open_log_debug
from assistant.rootcause.fault import analyse_report
from assistant.triage import triage_path
from assistant.triage.model import Crash
from tests.conftest import ROOT
from tests.vmcore_fixture import (
    KindsFixture,
    VmcoreFixture,
    line_of,
    source_line,
    vmcore_fixture,
    vmcore_kinds,
)

__all__ = ["vmcore_fixture", "vmcore_kinds"]


def _crash(log: Path) -> Crash:
    result = triage_path(str(log))
    assert result.crashes, f"no crash in {log}"
    return result.crashes[0]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assistant", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_uaf_log_names_the_member_from_the_registers(vmcore_kinds: KindsFixture) -> None:
    crash = _crash(vmcore_kinds.kinds["kassist-uaf"] / "console.log")
    debug = open_log_debug([crash], str(vmcore_kinds.base.vmlinux), str(vmcore_kinds.dir))
    found = explain_log(crash, analyse_report(crash.report), debug)
    src = vmcore_kinds.module_source
    assert found.location == f"{src}:{line_of(src, 'READ_ONCE(conn->item->id)')}"
    assert found.member is not None, found.notes
    assert (found.member.pointer, found.member.member) == ("conn->item", "id")
    assert found.member.type == "struct kassist_item *"
    assert found.debug_file is not None and found.debug_file.endswith("kassist_crash.ko")


@pytest.mark.parametrize(
    ("kind", "file", "needle"),
    [
        ("ACCESS_NULL", "perms.c", "tmp = *ptr;"),
        ("EXCEPTION", "bugs.c", "*((volatile int *) 0) = 0;"),
        ("BUG", "bugs.c", "BUG();"),
    ],
)
def test_lkdtm_logs_fault_where_the_source_says(
    vmcore_kinds: KindsFixture, kind: str, file: str, needle: str
) -> None:
    crash = _crash(vmcore_kinds.kinds[kind] / "console.log")
    debug = open_log_debug([crash], str(vmcore_kinds.base.vmlinux), str(vmcore_kinds.dir))
    found = explain_log(crash, analyse_report(crash.report), debug)
    src = vmcore_kinds.lkdtm_source / file
    assert found.location == f"{src}:{line_of(src, needle, after=f'lkdtm_{kind}(void)')}"
    assert found.chain and found.chain[0].startswith(f"lkdtm_{kind} ")


def test_triage_json_with_a_debug_dir_alone(vmcore_fixture: VmcoreFixture) -> None:
    # The vmlinux of the log's release and the module's .ko are found in the tree.
    proc = _cli(
        "triage", "--format", "json", "--debug-dir", str(vmcore_fixture.debug_dir),
        str(vmcore_fixture.console_log),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    dwarf = json.loads(proc.stdout)["crashes"][0]["fault"]["dwarf"]
    assert dwarf["location"].endswith(f"kassist_crash.c:{source_line('READ_ONCE(item->id)')}")
    assert (dwarf["member"]["pointer"], dwarf["member"]["member"]) == ("item", "id")
    assert dwarf["member"]["text"] == "member at offset 0x8 of struct kassist_item: id"


def test_report_shows_the_source_and_member(vmcore_kinds: KindsFixture) -> None:
    proc = _cli(
        "report", str(vmcore_kinds.kinds["kassist-uaf"] / "console.log"), "--no-llm",
        "--vmlinux", str(vmcore_kinds.base.vmlinux), "--debug-dir", str(vmcore_kinds.dir),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("## Faulting instruction", 1)[1].split("\n## ", 1)[0]
    line = line_of(vmcore_kinds.module_source, "READ_ONCE(conn->item->id)")
    assert f"kassist_crash.c:{line}` in `kassist_conn_item_id+0x9/0x20" in section
    assert "`conn->item`: member at offset 0x8 of struct kassist_item: id" in section


def _grow_functions(ko: Path, by: int) -> None:
    """Make ``ko`` another build of itself: every function symbol ``by`` bytes larger.

    ELF64 little-endian: the section headers (``e_shoff`` at 0x28, ``e_shentsize``,
    ``e_shnum`` at 0x3a), the SHT_SYMTAB section's Elf64_Sym entries (24 bytes; st_info
    at +4, st_size at +16), STT_FUNC = 2.
    """
    data = bytearray(ko.read_bytes())
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    grown = 0
    for i in range(shnum):
        header = shoff + i * shentsize
        (sh_type,) = struct.unpack_from("<I", data, header + 4)
        if sh_type != 2:  # SHT_SYMTAB
            continue
        offset, size = struct.unpack_from("<QQ", data, header + 24)
        for sym in range(offset, offset + size, 24):
            (st_size,) = struct.unpack_from("<Q", data, sym + 16)
            if data[sym + 4] & 0xF == 2 and st_size > 0:
                struct.pack_into("<Q", data, sym + 16, st_size + by)
                grown += 1
    assert grown > 0, f"no function symbol in {ko}"
    ko.write_bytes(bytes(data))


def test_a_module_of_another_build_is_not_read(vmcore_kinds: KindsFixture, tmp_path: Path) -> None:
    # The right build of the module is read; the same file with every function 0x100
    # bytes larger (another build, as far as the log's func+off/size can tell) is not:
    # the log's function is not where that file has it, so nothing is named from it.
    crash = _crash(vmcore_kinds.kinds["kassist-uaf"] / "console.log")
    vmlinux = str(vmcore_kinds.base.vmlinux)
    ko = next(vmcore_kinds.dir.rglob("kassist_crash.ko"))
    right, other = tmp_path / "right", tmp_path / "other"
    for where in (right, other):
        where.mkdir()
        shutil.copy(ko, where / ko.name)
    _grow_functions(other / ko.name, 0x100)
    found = explain_log(
        crash, analyse_report(crash.report), open_log_debug([crash], vmlinux, str(right))
    )
    assert found.location is not None, found.notes
    found = explain_log(
        crash, analyse_report(crash.report), open_log_debug([crash], vmlinux, str(other))
    )
    assert found.location is None and found.member is None
    assert len(found.notes) == 1 and "another build" in found.notes[0]


def test_a_log_of_another_kernel_is_one_line(vmcore_kinds: KindsFixture, tmp_path: Path) -> None:
    abi = vmcore_kinds.base.abi
    log = tmp_path / "console.log"
    text = vmcore_kinds.console("kassist-uaf").replace(abi, "6.1.0-99-cloud-amd64")
    log.write_text(text)
    crash = _crash(log)
    with pytest.raises(InputError, match="does not match the log"):
        open_log_debug([crash], str(vmcore_kinds.base.vmlinux), None)
    proc = _cli("triage", "--format", "json", "--vmlinux", str(vmcore_kinds.base.vmlinux), str(log))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 2 and "does not match" in proc.stderr


def test_no_vmlinux_in_the_debug_dir_is_one_line(
    vmcore_fixture: VmcoreFixture, tmp_path: Path
) -> None:
    proc = _cli("triage", "--format", "json", "--debug-dir", str(tmp_path),
                str(vmcore_fixture.console_log))  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert f"no vmlinux of kernel {vmcore_fixture.abi}" in proc.stderr
