"""``kassist vmcore explain`` on real dumps of every crash kind, checked against the sources.

The dumps are Debian's cloud kernel crashed by LKDTM and by kassist's own module
(tests/fixtures/vmcore/build.sh). What faulted is known from the source: the line, the
struct member, the object and its state; each test reads the expectation from the
source file the module was built from, not from a copy of the answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from assistant.rootcause.dump import explain_vmcore
from assistant.rootcause.explain import Explanation
from assistant.vmcore import open_target
from probes.drgn.elf import build_id
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

_CACHE: dict[str, Explanation] = {}


def _explain(kinds: KindsFixture, kind: str) -> Explanation:
    if kind not in _CACHE:
        base = kinds.base
        target = open_target(
            str(kinds.vmcore(kind)), str(base.vmlinux), str(base.debug_dir),
            [str(m) for m in kinds.modules],
        )  # fmt: skip
        _CACHE[kind] = explain_vmcore(target)
    return _CACHE[kind]


def _facts(e: Explanation) -> str:
    return "\n".join(f.text for f in e.facts)


def test_uaf_names_member_pointer_and_freed_object(vmcore_kinds: KindsFixture) -> None:
    e = _explain(vmcore_kinds, "kassist-uaf")
    src = vmcore_kinds.module_source
    assert e.location == f"{src}:{line_of(src, 'READ_ONCE(conn->item->id)')}"
    assert e.member is not None
    assert (e.member.pointer, e.member.member) == ("conn->item", "id")
    assert e.member.type == "struct kassist_item *"
    assert e.fault is not None and e.fault.instruction is not None
    assert e.fault.instruction.text == "mov    0x8(%rax),%eax"
    base = next(r for r in e.fault.registers if r.role == "base")
    assert base.kind.name == "POISON_FREE"
    assert "is a free object of cache kassist_conn (+0x0)" in e.verdict
    assert "kassist_conn_open" in e.object_stacks["alloc"]["frames"]
    assert "kassist_uaf_write" in e.object_stacks["free"]["frames"]
    assert e.assessment is not None
    assert e.assessment.trigger.verdict == "user syscall (write)"
    assert e.trace_agreement["agree"]


def test_null_member_through_a_stack_slot(vmcore_fixture: VmcoreFixture) -> None:
    target = open_target(str(vmcore_fixture.vmcore), str(vmcore_fixture.vmlinux),
                         str(vmcore_fixture.debug_dir))  # fmt: skip
    e = explain_vmcore(target)
    assert e.location is not None
    assert e.location.endswith(f"kassist_crash.c:{source_line('READ_ONCE(item->id)')}")
    assert e.member is not None and (e.member.pointer, e.member.member) == ("item", "id")
    assert e.fault is not None and e.fault.relation == "the fault address = RAX + 0x8"
    assert e.assessment is not None and e.assessment.impact.verdict == "denial of service"


@pytest.mark.parametrize(
    ("kind", "file", "needle", "instruction", "impact"),
    [
        ("ACCESS_NULL", "perms.c", "tmp = *ptr;", "mov    0x0,%rbx", "denial of service"),
        ("EXCEPTION", "bugs.c", "*((volatile int *) 0) = 0;", "movl   $0x0,0x0",
         "denial of service"),
        ("BUG", "bugs.c", "BUG();", "ud2", "denial of service"),
        ("WARNING", "bugs.c", "WARN_ON(++warn_counter);", "ud2", "unknown"),
    ],
)  # fmt: skip
def test_lkdtm_kinds_fault_where_the_source_says(
    vmcore_kinds: KindsFixture, kind: str, file: str, needle: str, instruction: str, impact: str
) -> None:
    e = _explain(vmcore_kinds, kind)
    src = vmcore_kinds.lkdtm_source / file
    assert e.location == f"{src}:{line_of(src, needle, after=f'lkdtm_{kind}(void)')}"
    assert e.fault is not None and e.fault.instruction is not None
    assert e.fault.instruction.text == instruction
    assert e.assessment is not None and e.assessment.impact.verdict == impact
    assert e.trace_agreement["agree"]


def test_write_after_free_names_the_object_and_its_stacks(vmcore_kinds: KindsFixture) -> None:
    e = _explain(vmcore_kinds, "WRITE_AFTER_FREE")
    assert "Poison overwritten" in (e.title or "")
    assert "an allocated object of cache kmalloc-1k" in e.verdict
    assert "lkdtm_WRITE_AFTER_FREE" in e.object_stacks["alloc"]["frames"]
    assert any(f.startswith("lkdtm_WRITE_AFTER_FREE") for f in e.object_stacks["free"]["frames"])
    assert e.assessment is not None and e.assessment.impact.verdict == "memory corruption"
    assert any("no faulting instruction" in n for n in e.fault.notes)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "function"),
    [("CORRUPT_LIST_ADD", "__list_add_valid"), ("CORRUPT_LIST_DEL", "__list_del_entry_valid")],
)
def test_list_corruption_is_memory_corruption(
    vmcore_kinds: KindsFixture, kind: str, function: str
) -> None:
    e = _explain(vmcore_kinds, kind)
    assert e.title == f"BUG: corrupted list in lkdtm_{kind}"
    assert e.function == function
    assert e.fault is not None and e.fault.instruction is not None
    assert e.fault.instruction.text == "ud2" and e.fault.trap is not None
    assert e.assessment is not None and e.assessment.impact.verdict == "memory corruption"


def test_softlockup_says_the_unwinder_crossed_an_interrupt(vmcore_kinds: KindsFixture) -> None:
    e = _explain(vmcore_kinds, "SOFTLOCKUP")
    assert (e.title or "").startswith("BUG: soft lockup")
    assert any("lkdtm_SOFTLOCKUP" in n and "interrupted" in n for n in e.notes)
    assert "interrupted instruction" in _facts(e)
    assert e.assessment is not None and e.assessment.impact.verdict == "denial of service"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "assistant", *args], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=300)  # fmt: skip


def test_cli_json_is_kassist_explain(vmcore_kinds: KindsFixture) -> None:
    base = vmcore_kinds.base
    ko = [a for m in vmcore_kinds.modules for a in ("--ko", str(m))]
    dump = str(vmcore_kinds.vmcore("kassist-uaf"))
    proc = _cli("vmcore", "explain", dump, "--vmlinux", str(base.vmlinux),
                "--debug-dir", str(base.debug_dir), *ko, "--format", "json", "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    assert data["schema"] == "kassist.explain/1"
    assert data["member"]["member"] == "id"
    assert data["assessment"]["impact"]["verdict"] == "read-only"


def test_a_vmlinux_of_another_build_is_one_line(vmcore_kinds: KindsFixture, tmp_path: Path) -> None:
    # lkdtm.ko has a build ID too, and it is not the dump's kernel's.
    proc = _cli("vmcore", "explain", str(vmcore_kinds.vmcore("BUG")), "--vmlinux",
                str(vmcore_kinds.modules[0]), "-q")  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not match the dump" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def _build_id_tree(tmp: Path, files: list[Path]) -> Path:
    # A /usr/lib/debug-style tree that finds files by build ID only.
    for f in files:
        build = build_id(str(f))
        assert build is not None
        link = tmp / ".build-id" / build.hex()[:2] / f"{build.hex()[2:]}.debug"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f.resolve())
    return tmp


def test_explain_loads_the_debug_info_of_the_crash_modules_only(
    vmcore_kinds: KindsFixture, tmp_path: Path
) -> None:
    # LKDTM's BUG: lkdtm's DWARF is needed, kassist_crash's (loaded, not involved) is not.
    base = vmcore_kinds.base
    tree = _build_id_tree(tmp_path, [base.vmlinux, *vmcore_kinds.modules])
    target = open_target(str(vmcore_kinds.vmcore("BUG")), debug_dir=str(tree), modules=())
    assert target.prog.module("lkdtm").wants_debug_file()
    e = explain_vmcore(target)
    assert not target.prog.module("lkdtm").wants_debug_file()
    assert target.prog.module("kassist_crash").wants_debug_file()
    assert e.function == "lkdtm_BUG" and e.location is not None and "bugs.c:" in e.location
