"""``vmcore explain`` on a dump with pages excluded: it says what it could not read.

makedumpfile's dump levels (``-d 31``) leave pages out of a kdump-compressed dump: the
page is absent from the second (dumpable) bitmap and has no page descriptor. makedumpfile
re-filters only an ELF core (``/proc/vmcore``), and the fixture's dumps come from QEMU in
the kdump format, so the test leaves a page out the same way, in a copy of the real
kassist-uaf dump: the page of the faulting code. The explanation must then decode
nothing from the dump and say so, never a guess.
"""

from __future__ import annotations

import struct
from pathlib import Path

from drgn.helpers.linux.mm import follow_phys

from assistant.rootcause.dump import explain_vmcore
from assistant.rootcause.explain import explanation_markdown
from assistant.rootcause.registers import pc_frame
from assistant.triage import triage_lines
from assistant.vmcore import open_target
from probes.drgn import Target
from tests.vmcore_fixture import KindsFixture, reassemble_flattened, vmcore_kinds

__all__ = ["vmcore_kinds"]

#: ``struct disk_dump_header``: block_size, sub_hdr_size, bitmap_blocks (after the
#: signature, version, utsname and timestamp).
_HEADER = struct.Struct("<iiI")
_HEADER_AT = 428
#: ``struct page_desc``: offset, size, flags, page_flags.
_DESC = 24


def exclude_page(dump: Path, pfn: int) -> None:
    """Leave page frame ``pfn`` out of a kdump-compressed dump, as makedumpfile does."""
    data = bytearray(dump.read_bytes())
    block, sub_blocks, bitmap_blocks = _HEADER.unpack_from(data, _HEADER_AT)
    bitmaps = block * (1 + sub_blocks)
    half = bitmap_blocks * block // 2
    second = bitmaps + half
    byte, bit = second + pfn // 8, 1 << (pfn % 8)
    assert data[byte] & bit, f"page {pfn} is not in the dump"
    before = sum(bin(b).count("1") for b in data[second:byte]) + bin(data[byte] & (bit - 1)).count(
        "1"
    )
    total = sum(bin(b).count("1") for b in data[second : second + half])
    data[byte] &= ~bit
    descs = bitmaps + 2 * half
    at, end = descs + before * _DESC, descs + total * _DESC
    data[at : end - _DESC] = data[at + _DESC : end]
    dump.write_bytes(bytes(data))


def _open(kinds: KindsFixture, dump: Path) -> Target:
    base = kinds.base
    modules = [str(m) for m in kinds.modules]
    return open_target(str(dump), str(base.vmlinux), str(base.debug_dir), modules)


def test_excluded_code_page_is_said_not_guessed(vmcore_kinds: KindsFixture, tmp_path: Path) -> None:
    dump = tmp_path / "vmcore"
    reassemble_flattened(vmcore_kinds.vmcore("kassist-uaf"), dump)
    target = _open(vmcore_kinds, dump)
    whole = explain_vmcore(target)
    assert whole.fault is not None and whole.fault.decoded is not None  # the page is there
    crash = triage_lines(vmcore_kinds.console("kassist-uaf").splitlines(), source="t").crashes[0]
    pc = pc_frame(crash.report)
    assert pc is not None and pc.offset is not None
    prog = target.prog
    address = prog.symbol(pc.function).address + pc.offset
    page = int(follow_phys(prog["init_mm"].address_of_(), address)) // 4096
    before = whole.to_dict()["readable"]["pages_present"]
    del target, prog

    exclude_page(dump, page)
    cut = explain_vmcore(_open(vmcore_kinds, dump))
    assert cut.to_dict()["readable"]["pages_present"] == before - 1
    assert cut.fault is not None and cut.fault.decoded is None  # nothing decoded from a gap
    said = " ".join(cut.fault.notes + cut.notes)
    assert f"the code at 0x{address:x} is not in the dump" in said
    assert cut.member is None  # no member named without the instruction
    # What does not need that page is still read: the source line from the DWARF.
    assert cut.location == whole.location


def test_excluded_object_page_is_not_read_as_no_stacks(
    vmcore_kinds: KindsFixture, tmp_path: Path
) -> None:
    # The freed kassist_conn's page left out: its slub_debug=U tracks are in that page,
    # so "the cache keeps no stacks" would be false; the explanation says it cannot read them.
    dump = tmp_path / "vmcore"
    reassemble_flattened(vmcore_kinds.vmcore("kassist-uaf"), dump)
    target = _open(vmcore_kinds, dump)
    whole = explain_vmcore(target)
    assert whole.member is not None and whole.fault is not None and whole.fault.regs is not None
    conn = whole.fault.regs.values["RDI"]  # conn, the freed object (the member's base)
    slab = next(i["slab"] for i in whole.identities if i["what"] == "RDI")
    assert slab is not None and slab["stores_user"] and whole.object_stacks
    page = int(follow_phys(target.prog["init_mm"].address_of_(), conn)) // 4096
    del target

    exclude_page(dump, page)
    cut = explain_vmcore(_open(vmcore_kinds, dump))
    assert not cut.object_stacks
    said = explanation_markdown(cut)
    assert "could not be read: the object's memory is not in the dump" in said
    assert "keeps no alloc/free stacks" not in said
