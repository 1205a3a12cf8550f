"""The faulting instruction related to the registers and the fault address, from a log.

:func:`analyse_report` is pure: a crash report's text in, a :class:`FaultAnalysis` out:
the decoded instruction (:mod:`assistant.rootcause.code`), the address its memory
operand computes from the register dump (``RBX + 0x60 = 0x60``), whether that is the
address that faulted (``CR2 = RBX + 0x60``), and what the registers it used held
(:func:`assistant.rootcause.registers.classify`). What cannot be computed is one line
in :attr:`FaultAnalysis.notes`, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from assistant.rootcause.code import (
    CodeError,
    Decoded,
    Instruction,
    MemOperand,
    code_line,
    decode,
    parse_code,
)
from assistant.rootcause.registers import (
    MASK64,
    Arch,
    FaultAddress,
    Registers,
    ValueKind,
    classify,
    fault_address,
    other_arch,
    parse_registers,
    report_arch,
)

#: Trap instructions: what the kernel uses them for.
TRAPS: dict[tuple[str, str], str] = {
    ("x86_64", "ud2"): "ud2: the trap of BUG(), WARN() and the BUG_ON() family",
    ("x86_64", "int3"): "int3: a breakpoint (kprobe, text patching)",
    ("x86_64", "ud1"): "ud1: UBSAN's or CFI's trap",
    ("arm64", "brk"): "brk: the trap of BUG(), WARN(), KASAN or UBSAN (by its immediate)",
    ("arm64", "udf"): "udf: an undefined instruction",
}


@dataclass
class RegisterNote:
    """A register whose value says something.

    :param register: its name in the dump (``RBX``).
    :param value: its value.
    :param kind: what the value is.
    :param role: ``base``, ``index``, or ``other`` (not used by the instruction).
    """

    register: str
    value: int
    kind: ValueKind
    role: str


@dataclass
class FaultAnalysis:
    """What the log alone says about the faulting instruction.

    :param arch: the architecture of the report.
    :param decoded: the decoded ``Code:`` line, or ``None`` (see ``notes``).
    :param expression: the memory operand as registers, ``RBX + 0x60``.
    :param address: its value from the register dump.
    :param fault: the address the report says faulted.
    :param address_kind: what that address is (NULL plus an offset, non-canonical...).
    :param relation: ``CR2 = RBX + 0x60``, or why the two differ.
    :param registers: the registers worth naming: the operand's, and any other holding
        a poison or non-canonical value.
    :param notes: what could not be computed, one line each.
    """

    arch: Arch | None
    decoded: Decoded | None = None
    expression: str | None = None
    address: int | None = None
    address_kind: ValueKind | None = None
    fault: FaultAddress | None = None
    relation: str | None = None
    trap: str | None = None
    registers: list[RegisterNote] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    regs: Registers | None = None

    @property
    def instruction(self) -> Instruction | None:
        """The faulting instruction, if it was decoded."""
        return self.decoded.faulting if self.decoded else None

    def to_dict(self) -> dict[str, Any]:
        """Return the analysis as the ``crash.fault`` JSON object."""
        insn = self.instruction
        return {
            "arch": self.arch,
            "instruction": insn.text if insn else None,
            "access": insn.access if insn else None,
            "context": [
                {"offset": i.offset, "text": i.text}
                for i in (
                    [*self.decoded.before, self.decoded.faulting, *self.decoded.after]
                    if self.decoded
                    else []
                )
            ],
            "expression": self.expression,
            "address": _hex(self.address),
            "address_kind": self.address_kind.kind if self.address_kind else None,
            "address_meaning": self.address_kind.meaning if self.address_kind else None,
            "fault_address": _hex(self.fault.address) if self.fault else None,
            "fault_address_source": self.fault.source if self.fault else None,
            "relation": self.relation,
            "trap": self.trap,
            "registers": [
                {
                    "register": r.register,
                    "value": _hex(r.value),
                    "kind": r.kind.kind,
                    "name": r.kind.name,
                    "meaning": r.kind.meaning,
                    "role": r.role,
                }
                for r in self.registers
            ],
            "notes": list(self.notes),
        }


def _hex(value: int | None) -> str | None:
    return None if value is None else f"0x{value:x}"


def expression(mem: MemOperand) -> str:
    """Write a memory operand as registers and offsets: ``RBX + RAX*8 + 0x60``."""
    parts = []
    if mem.segment:
        parts.append(f"{mem.segment} base")
    if mem.base:
        parts.append(mem.base)
    if mem.index:
        parts.append(f"{mem.index}*{mem.scale}" if mem.scale != 1 else mem.index)
    text = " + ".join(parts)
    if mem.disp or not parts:
        sign = "-" if mem.disp < 0 and parts else "+"
        value = f"0x{abs(mem.disp) if parts else mem.disp & MASK64:x}"
        text = f"{text} {sign} {value}" if parts else value
    return text


def effective_address(
    mem: MemOperand, regs: Registers, length: int = 0
) -> tuple[int | None, str | None]:
    """Compute a memory operand's address from the register dump.

    :param length: the instruction's length in bytes (a RIP-relative operand counts from
        the next instruction).
    :return: the address, or ``None`` and the line that says which register is missing.
    """
    total = mem.disp
    if mem.base == "RIP":
        if regs.pc is None:
            return None, "RIP-relative operand: the log does not print the faulting PC as a number"
        total += regs.pc + length
    for name, scale in ((mem.base, 1), (mem.index, mem.scale), (mem.segment, 1)):
        if name is None or name == "RIP":
            continue
        if name not in regs.values:
            what = f"{name}'s base" if name == mem.segment else name
            return None, f"{what} is not in the register dump: the address is not computed"
        total += regs.values[name] * scale
    return total & MASK64, None


def _relation(fault: FaultAddress, address: int, expr: str, size: int) -> str:
    label = {
        "CR2": "CR2",
        "page fault": "the fault address",
        "general protection fault": "the non-canonical address",
    }[fault.source]
    if fault.address == address:
        return f"{label} = {expr}"
    delta = (fault.address - address) & MASK64
    if size and delta < size:
        return f"{label} = {expr} + {delta} (inside the {size}-byte access)"
    return (
        f"{label} 0x{fault.address:x} is not {expr} = 0x{address:x}: the fault was elsewhere "
        "(a string or vector instruction, or a page crossed)"
    )


#: General-purpose registers: the ones whose values are data or pointers.
_GENERAL = re.compile(r"^(R[A-D]X|R[SD]I|RBP|RSP|R(?:[89]|1[0-5])|X\d{1,2}|SP)$")


def _register_notes(regs: Registers, arch: Arch, mem: MemOperand | None) -> list[RegisterNote]:
    roles = {}
    if mem is not None:
        roles = {r: role for r, role in ((mem.base, "base"), (mem.index, "index")) if r}
    out = []
    for name, role in roles.items():
        if name in regs.values:
            out.append(
                RegisterNote(name, regs.values[name], classify(regs.values[name], arch), role)
            )
    for name, value in regs.values.items():
        if name in roles or not _GENERAL.match(name):
            continue
        kind = classify(value, arch)
        if kind.kind == "poison":
            out.append(RegisterNote(name, value, kind, "other"))
    return out


def analyse_report(report: str) -> FaultAnalysis | None:
    """Decode a report's ``Code:`` line and relate it to its registers and fault address.

    :param report: one crash report's text.
    :return: the analysis, or ``None`` when the report has neither a ``Code:`` line nor
        a register dump (a hang, a lockdep report...).
    """
    code_text = code_line(report)
    arch = report_arch(report)
    if code_text is None and arch is None:
        return None
    out = FaultAnalysis(arch=arch)
    if arch is None:
        other = other_arch(report)
        out.notes.append(
            f"a {other} report: only x86-64 and arm64 Code: lines are decoded"
            if other
            else "no register dump of x86-64 or arm64 in the report: the Code: line is not decoded"
        )
        return out
    regs = parse_registers(report, arch)
    out.regs = regs
    out.fault = fault_address(report, regs)
    if code_text is None:
        out.notes.append("no Code: line in the report: the faulting instruction is not known")
        out.registers = _register_notes(regs, arch, None)
        return out
    try:
        out.decoded = decode(parse_code(code_text, arch))
    except CodeError as exc:
        out.notes.append(f"Code: line not decoded: {exc}")
        out.registers = _register_notes(regs, arch, None)
        return out
    return relate(out)


def relate(out: FaultAnalysis) -> FaultAnalysis:
    """Fill in what the decoded instruction says with the registers and the fault address.

    :param out: an analysis with ``decoded``, ``regs`` and ``fault`` set (a log's, or a
        dump's registers and code bytes).
    """
    assert out.decoded is not None and out.regs is not None and out.arch is not None
    arch, regs = out.arch, out.regs
    insn = out.decoded.faulting
    out.trap = TRAPS.get((arch, insn.mnemonic))
    mem = insn.memory
    out.registers = _register_notes(regs, arch, mem)
    if mem is None:
        return out
    out.expression = expression(mem)
    if not regs.values:
        out.notes.append("no register dump in the report: the address is not computed")
        return out
    out.address, missing = effective_address(mem, regs, len(insn.data))
    if missing:
        out.notes.append(missing)
        return out
    if out.address is not None:
        out.address_kind = classify(out.address, arch)
    if out.fault is not None and out.address is not None:
        out.relation = _relation(out.fault, out.address, out.expression, mem.size)
    return out
