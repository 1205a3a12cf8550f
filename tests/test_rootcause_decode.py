"""``Code:`` decoding against the kernel's own scripts/decodecode, and its bad inputs.

The agreement test runs decodecode (objdump) on every distinct ``Code:`` line of the dev
corpus, tests/data and the vmcore fixtures' consoles, and compares the faulting
instruction, mnemonic and operands. Two disagreements are explained, and
listed when they occur:

- objdump without ``-z`` prints ``...`` for a run of zero bytes at the marker, so
  decodecode shows no faulting instruction there (kassist shows ``add %al,(%rax)``,
  what ``00 00`` is);
- a line with no marker (cut or interleaved in the log): decodecode takes its first byte
  for the faulting one; kassist says the faulting byte is unknown and does not guess.
"""

from __future__ import annotations

import re

import pytest

from assistant.rootcause.code import CodeError, decode, parse_code
from assistant.rootcause.fault import analyse_report
from assistant.rootcause.registers import classify
from tests.decodecode import Decodecode
from tests.rootcause_corpus import code_cases, fixture_consoles
from tests.vmcore_fixture import _cache_root

#: objdump's comments (``# 0x7a8f3a28``, ``// #2``) and symbols (``<.text+0x5>``).
_COMMENT = re.compile(r"\s+(#|//|<).*$")


def _split(text: str) -> tuple[str, str]:
    text = _COMMENT.sub("", text.strip())
    mnemonic, _, operands = text.partition(" ")
    if "\t" in mnemonic:
        mnemonic, _, operands = text.partition("\t")
    return mnemonic, " ".join(operands.split())


def test_faulting_instruction_agrees_with_decodecode() -> None:
    cases = [c for c in code_cases(fixture_consoles(_cache_root())) if c.arch]
    assert len(cases) > 150  # the corpus and tests/data hold this many distinct lines
    dd = Decodecode()
    agree, explained, disagree = 0, [], []
    try:
        for case in cases:
            assert case.arch is not None
            ref = dd.reference(case.line, case.arch).text
            why = ""
            try:
                mine: str | None = decode(parse_code(case.tokens, case.arch)).faulting.text
            except CodeError as exc:
                mine, why = None, str(exc)
            if (ref is None or ref == "(bad)") and mine is None:
                agree += 1  # neither decodes it: a line that cannot be read
            elif ref == "...":
                explained.append(f"{case.where}: objdump skipped zeros, kassist {mine!r}")
            elif mine is None and not re.search(r"[<(]", case.tokens):
                explained.append(f"{case.where}: {why}; decodecode guessed {ref!r}")
            elif ref is not None and mine is not None and _split(ref) == _split(mine):
                agree += 1
            else:
                disagree.append(f"{case.where}: decodecode {ref!r}, kassist {mine!r}")
    finally:
        dd.save()
    print("explained disagreements:", *explained, sep="\n  ")
    assert not disagree, "\n".join(disagree)
    assert agree + len(explained) == len(cases)
    assert len(explained) <= 0.03 * len(cases), explained
    assert any(c.arch == "arm64" for c in cases)


LKDTM_NULL = (
    "48 89 de 5b e9 a3 c8 ba e8 48 c7 c7 70 06 57 c0 5b e9 9f 58 26 e9 0f 1f 44 00 00 53 31 "
    "f6 48 c7 c7 d8 06 57 c0 e8 8b 58 26 e9 <48> 8b 1c 25 00 00 00 00 b8 de c0 de c0 48 c7 "
    "c7 00 07 57 c0 48 01"
)


def test_lkdtm_access_null_decodes_as_objdump_prints_it() -> None:
    d = decode(parse_code(LKDTM_NULL, "x86_64"))
    assert d.faulting.text == "mov    0x0,%rbx"
    assert d.faulting.access == "read" and d.faulting.memory is not None
    assert d.before and d.before[-1].offset + len(d.before[-1].data) == 0


@pytest.mark.parametrize(
    ("text", "arch", "why"),
    [
        ("48 8b 1c 25 00 00 00 00", "x86_64", "no <..> or (....) marker"),
        ("48 8b <1c 25 00", "x86_64", "not closed"),
        ("48 8b <1c> 25 <00>", "x86_64", "more than one marker"),
        ("0f 1f 44 00 00 <48> 8b 1c", "x86_64", "cut short"),
        ("0f 1f 44 00 00 <48>", "x86_64", "cut short"),
        ("d503201f d503201f (d4210000)", "x86_64", "another architecture"),
        ("48 8b <1c> 25", "arm64", "another architecture"),
        ("48 8b <1c> zz 25", "x86_64", "not hex bytes"),
        ("Bad RIP value.", "x86_64", "could not read the code bytes"),
        ("Unable to access opcode bytes at 0xffffffffc0001000.", "x86_64", "could not read"),
        ("00 00 <ff> ff ff ff ff ff", "x86_64", "not a x86_64 instruction"),
    ],
)
def test_bad_code_lines_are_one_line_never_a_guess(text: str, arch: str, why: str) -> None:
    with pytest.raises(CodeError) as exc:
        decode(parse_code(text, arch))  # type: ignore[arg-type]
    message = str(exc.value)
    assert why in message and "\n" not in message


def test_a_report_of_another_architecture_says_so() -> None:
    report = (
        "Unable to handle kernel paging request at virtual address 00001000\n"
        "pc : [<c03a4e6c>]    lr : [<c03a4e44>]    psr: 200f0013\n"
        "r10: 00000000  r9 : 00000000  r8 : 00000000\n"
        "Code: e92d4100 e1a08001 e1a0e003 e2522040 (a8ac410a)\n"
    )
    analysis = analyse_report(report)
    assert analysis is not None and analysis.decoded is None
    assert analysis.notes == ["a 32-bit ARM report: only x86-64 and arm64 Code: lines are decoded"]


@pytest.mark.parametrize(
    ("value", "name"),
    [
        (0xDEAD000000000100, "LIST_POISON1"),
        (0xDEAD000000000122, "LIST_POISON2"),
        (0x6B6B6B6B6B6B6B6B, "POISON_FREE"),
        (0x6B6B6B6B, "POISON_FREE"),
        (0x6B6B6B6B6B6B6B73, "POISON_FREE"),
        (0x5A5A5A5A5A5A5A5A, "POISON_INUSE"),
        (0xA5A5A5A5A5A5A5A5, "POISON_END"),
        (0x10, "ZERO_SIZE_PTR"),
        (0, "NULL"),
    ],
)
def test_poison_values_are_named_from_poison_h(value: int, name: str) -> None:
    assert classify(value, "x86_64").name == name


def test_non_canonical_only_when_no_paging_mode_allows_it() -> None:
    # A 5-level-paging kernel address (Debian's kernel under -cpu max) is canonical.
    assert classify(0xFF619E6D005ABCA8, "x86_64").kind == "kernel"
    assert classify(0x1FFFF1003A313890, "x86_64").kind == "non-canonical"
    assert classify(0xDFFFFC0000000004, "x86_64").kind == "kasan-shadow"
