"""The faulting instruction, from an oops's ``Code:`` line alone.

The kernel prints the bytes around the faulting instruction (``show_opcodes()`` on
x86-64: 42 bytes before and 21 from it, the faulting byte in ``<..>``; arm64's
``dump_kernel_instr()``: four words before and the faulting one in ``(....)``). The
kernel's ``scripts/decodecode`` assembles them back and runs ``objdump``; kassist
decodes them the same way with a real disassembler and prints them in objdump's AT&T
syntax (``mov    0x0,%rbx``, ``ud2``), what kernel engineers read:

- x86-64: iced-x86's GAS formatter, set up as objdump prints (it agreed with
  decodecode on every faulting instruction of the corpora, capstone's AT&T printer
  on fewer: see docs/rootcause.md);
- arm64: capstone (iced-x86 is x86 only), its operands rewritten as objdump prints
  them (``[x1, #96]``, ``x0, #0x60``).

Parsing (:func:`parse_code`) and decoding (:func:`decode`) are pure. Whatever cannot be
decoded is a :class:`CodeError`: one line saying what is wrong with the line, never a
guess.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Arch = Literal["x86_64", "arm64"]

#: ``Code:`` and what follows it on the line.
_CODE = re.compile(r"\bCode:\s*(?P<rest>.*)$")
#: What x86's show_opcodes() prints instead of bytes it could not read.
_UNREADABLE = re.compile(r"Bad RIP value|Unable to access opcode bytes|Unable to access")
_TOKEN = re.compile(r"^[<(]?[0-9a-fA-F]+[>)]?$")


class CodeError(ValueError):
    """A ``Code:`` line that cannot be decoded; the message says why, in one line."""


@dataclass(frozen=True)
class CodeBytes:
    """The bytes of a ``Code:`` line.

    :param arch: the architecture the bytes are for.
    :param data: the bytes, in memory order (arm64 words little-endian).
    :param marker: the offset in ``data`` of the faulting instruction's first byte.
    :param unit: bytes per printed token (1 on x86, 4 for arm64 words).
    """

    arch: Arch
    data: bytes
    marker: int
    unit: int


@dataclass(frozen=True)
class MemOperand:
    """A memory operand ``disp(%base,%index,scale)`` (arm64: ``[base, #disp]``).

    Registers are named as the register dump names them, upper case (``RBX``, ``X1``);
    ``segment`` is ``GS``/``FS`` for a per-CPU access, else ``None``.
    """

    base: str | None
    index: str | None
    scale: int
    disp: int
    segment: str | None = None
    #: bytes read or written (0 when unknown)
    size: int = 0


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction.

    :param offset: its offset from the faulting instruction in bytes (negative before it).
    :param data: its bytes.
    :param text: objdump's rendering, e.g. ``mov    0x60(%rbx),%rax``.
    :param mnemonic: the mnemonic alone (``mov``, ``ud2``, ``ldr``).
    :param memory: its memory operand, if it has one (``lea`` has none: it reads nothing).
    :param writes: registers it writes, dump names (``RAX``), the flags left out.
    :param loads: it reads ``memory`` into the register ``writes[0]`` (a plain load).
    :param access: ``read``, ``write`` or ``None`` (what it does to ``memory``).
    """

    offset: int
    data: bytes
    text: str
    mnemonic: str
    memory: MemOperand | None = None
    writes: tuple[str, ...] = ()
    loads: bool = False
    access: str | None = None


@dataclass
class Decoded:
    """A decoded ``Code:`` line.

    :param code: the bytes.
    :param faulting: the faulting instruction.
    :param before: the instructions before it, when the bytes before the marker decode
        into instructions that end exactly at it (else empty: no guess).
    :param after: the instructions after it.
    """

    code: CodeBytes
    faulting: Instruction
    before: list[Instruction] = field(default_factory=list)
    after: list[Instruction] = field(default_factory=list)


def code_line(report: str) -> str | None:
    """Return the text after ``Code:`` of a report's first kernel ``Code:`` line.

    A user-space register dump (``RIP: 0033:``) printed after the kernel's has its own
    ``Code:`` line; the kernel's comes first.
    """
    for line in report.splitlines():
        m = _CODE.search(line)
        if m:
            return m.group("rest").strip()
    return None


def parse_code(text: str, arch: Arch) -> CodeBytes:
    """Parse the bytes of a ``Code:`` line (what follows ``Code:``).

    :param text: e.g. ``48 8b 1c 25 <00> ...`` or ``d503201f (d4210000)``.
    :param arch: the architecture the report says it is (its register dump).
    :raises CodeError: unreadable bytes, no or several markers, tokens of mixed widths,
        tokens of another architecture's width, or nothing at or after the marker.
    """
    if _UNREADABLE.search(text):
        raise CodeError(f"the kernel could not read the code bytes ({text.strip()[:60]})")
    tokens = text.split()
    if not tokens:
        raise CodeError("the Code: line is empty")
    if not all(_TOKEN.match(t) for t in tokens):
        bad = next(t for t in tokens if not _TOKEN.match(t))
        raise CodeError(f"the Code: line holds {bad[:20]!r}, not hex bytes (damaged or cut)")
    widths = {len(t.strip("<>()")) for t in tokens}
    if len(widths) != 1:
        raise CodeError("the Code: line mixes byte and word tokens (damaged or cut)")
    width = widths.pop()
    want = {"x86_64": 2, "arm64": 8}[arch]
    if width != want:
        raise CodeError(
            f"the Code: line holds {width // 2}-byte tokens, not {arch}'s {want // 2}: "
            "bytes of another architecture"
        )
    marked = [i for i, t in enumerate(tokens) if t[0] in "<(" or t[-1] in ">)"]
    if not marked:
        raise CodeError("the Code: line has no <..> or (....) marker: the faulting byte is unknown")
    if len(marked) > 1:
        raise CodeError("the Code: line has more than one marker")
    index = marked[0]
    mark = tokens[index]
    if not ((mark[0] == "<" and mark[-1] == ">") or (mark[0] == "(" and mark[-1] == ")")):
        raise CodeError(f"the Code: line's marker {mark!r} is not closed")
    unit = width // 2
    data = b"".join(int(t.strip("<>()"), 16).to_bytes(unit, "little") for t in tokens)
    return CodeBytes(arch=arch, data=data, marker=index * unit, unit=unit)


# --- x86-64: iced-x86 ----------------------------------------------------------------

#: The longest x86 instruction, in bytes.
_X86_MAX_INSN = 15
#: Segment registers objdump names on a memory operand: the per-CPU ones.
_PERCPU_SEGMENTS = {"FS", "GS"}


@functools.cache
def _iced() -> tuple[Any, Any, dict[int, str]]:
    # The formatter set up as objdump prints, the operand-access factory, register names.
    import iced_x86

    _MEMORY_SIZES.update(_memory_sizes())
    fmt = iced_x86.Formatter(iced_x86.FormatterSyntax.GAS)
    fmt.hex_prefix = "0x"
    fmt.uppercase_hex = False
    fmt.small_hex_numbers_in_decimal = False
    fmt.space_after_operand_separator = False
    fmt.show_branch_size = False
    fmt.branch_leading_zeros = False
    fmt.show_zero_displacements = True
    fmt.rip_relative_addresses = True
    names = {
        getattr(iced_x86.Register, n): n
        for n in dir(iced_x86.Register)
        if n.isupper() and isinstance(getattr(iced_x86.Register, n), int)
    }
    return fmt, iced_x86.InstructionInfoFactory(), names


# iced prints a size suffix on indirect branches and no scale of 1 after an index;
# objdump (binutils 2.40) does the opposite.
_MNEMONIC_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(call|jmp)q$"), r"\1"),
)
_OPERAND_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\((%\w+)?,(%\w+)\)"), r"(\1,\2,1)"),
)
#: String instructions: objdump names the segments of their implicit operands.
_STRING_OPS = re.compile(r"^(?:movs|cmps|stos|lods|scas|ins|outs)[bwlq]?$")
_STRING_SEGMENTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?<!:)\(%([re]?)si\)"), r"%ds:(%\1si)"),
    (re.compile(r"(?<!:)\(%([re]?)di\)"), r"%es:(%\1di)"),
)


def objdump_layout(mnemonic: str, operands: str) -> str:
    """Lay an instruction out as objdump does: the mnemonic padded to 6, a space, operands.

    >>> objdump_layout("mov", "0x0,%rbx")
    'mov    0x0,%rbx'
    """
    return f"{mnemonic:<6} {operands}".rstrip() if operands else mnemonic


def _x86_text(fmt: object, insn: object) -> tuple[str, str]:
    mnemonic = fmt.format_mnemonic(insn)  # type: ignore[attr-defined]
    operands = fmt.format_all_operands(insn)  # type: ignore[attr-defined]
    for pattern, repl in _MNEMONIC_REWRITES:
        mnemonic = pattern.sub(repl, mnemonic)
    for pattern, repl in _OPERAND_REWRITES:
        operands = pattern.sub(repl, operands)
    if _STRING_OPS.match(mnemonic.split()[-1] if mnemonic else ""):
        for pattern, repl in _STRING_SEGMENTS:
            operands = pattern.sub(repl, operands)
    text = objdump_layout(mnemonic, operands)
    if insn.is_ip_rel_memory_operand:  # type: ignore[attr-defined]
        # objdump's comment: the address the operand names, from the decoding's base.
        text += f"        # 0x{insn.ip_rel_memory_address:x}"  # type: ignore[attr-defined]
    return text, mnemonic.split()[-1] if mnemonic else ""


def _x86_insn(data: bytes, offset: int) -> Instruction | None:
    import iced_x86

    fmt, info_factory, names = _iced()
    decoder = iced_x86.Decoder(64, data, ip=offset & 0xFFFFFFFFFFFFFFFF)
    insn = decoder.decode()
    if insn.is_invalid or insn.len > len(data):
        return None
    text, mnemonic = _x86_text(fmt, insn)
    memory = None
    access = None
    writes: list[str] = []
    loads = False
    info = info_factory.info(insn)
    for used in info.used_registers():
        name = names.get(used.register, "")
        if used.access in _writing() and name and name not in ("RIP", "EFLAGS"):
            writes.append(_full_register(name))
    mems = [m for m in info.used_memory()]
    if mems and insn.mnemonic != iced_x86.Mnemonic.LEA:
        m = mems[0]
        base = names.get(m.base) if m.base != iced_x86.Register.NONE else None
        if insn.is_ip_rel_memory_operand:
            base = "RIP"  # disp is then from the next instruction: iced gives the target
        index = names.get(m.index) if m.index != iced_x86.Register.NONE else None
        segment = names.get(m.segment) if m.segment != iced_x86.Register.NONE else None
        disp = m.displacement
        if base == "RIP":
            disp = (insn.ip_rel_memory_address - (offset + insn.len)) & 0xFFFFFFFFFFFFFFFF
        if base is not None and disp >= 1 << 63:
            disp -= 1 << 64  # a negative displacement from a register
        memory = MemOperand(
            base=_full_register(base) if base else None,
            index=_full_register(index) if index else None,
            scale=m.scale,
            disp=disp,
            segment=segment if segment in _PERCPU_SEGMENTS else None,
            size=_MEMORY_SIZES.get(m.memory_size, 0),
        )
        reads = m.access in _reading()
        written = m.access in _writing()
        access = "write" if written else "read" if reads else None
        loads = (
            reads
            and not written
            and insn.op_count == 2
            and insn.op0_kind == iced_x86.OpKind.REGISTER
            and mnemonic.startswith("mov")
        )
        if loads:
            writes = [_full_register(names.get(insn.op0_register, ""))]
    return Instruction(
        offset=offset,
        data=data[: insn.len],
        text=text,
        mnemonic=mnemonic,
        memory=memory,
        writes=tuple(dict.fromkeys(w for w in writes if w)),
        loads=loads,
        access=access,
    )


@functools.cache
def _writing() -> frozenset[int]:
    import iced_x86

    a = iced_x86.OpAccess
    return frozenset((a.WRITE, a.READ_WRITE, a.COND_WRITE, a.READ_COND_WRITE))


@functools.cache
def _reading() -> frozenset[int]:
    import iced_x86

    a = iced_x86.OpAccess
    return frozenset((a.READ, a.READ_WRITE, a.COND_READ, a.READ_COND_WRITE))


def _memory_sizes() -> dict[int, int]:
    import iced_x86

    sizes = {
        "UINT8": 1,
        "INT8": 1,
        "UINT16": 2,
        "INT16": 2,
        "UINT32": 4,
        "INT32": 4,
        "UINT64": 8,
        "INT64": 8,
        "DWORD_OFFSET": 4,
        "QWORD_OFFSET": 8,
        "UINT128": 16,
        "PACKED128_UINT8": 16,
        "UINT256": 32,
    }
    return {getattr(iced_x86.MemorySize, k): v for k, v in sizes.items()}


_MEMORY_SIZES: dict[int, int] = {}

#: Sub-registers → the 64-bit register the dump prints.
_X86_FULL = {
    **{f"E{r}X": f"R{r}X" for r in "ABCD"},
    **{f"{r}X": f"R{r}X" for r in "ABCD"},
    **{f"{r}L": f"R{r}X" for r in "ABCD"},
    **{f"{r}H": f"R{r}X" for r in "ABCD"},
    **{f"E{r}": f"R{r}" for r in ("SI", "DI", "BP", "SP")},
    **{r: f"R{r}" for r in ("SI", "DI", "BP", "SP")},
    **{f"{r}L": f"R{r}" for r in ("SI", "DI", "BP", "SP")},
    **{f"R{n}{s}": f"R{n}" for n in range(8, 16) for s in ("D", "W", "L")},
}


def _full_register(name: str) -> str:
    return _X86_FULL.get(name, name)


# --- arm64: capstone -------------------------------------------------------------------


@functools.cache
def _capstone_arm64() -> Any:
    import capstone

    cs = capstone.Cs(capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)
    cs.detail = True
    return cs


#: objdump prints a load/store offset in decimal (``[x1, #96]``), capstone in hex.
_ARM64_MEM_IMM = re.compile(r"#(-?)0x([0-9a-f]+)(?=\]|, )")
_ARM64_BRACKET = re.compile(r"\[[^\]]*\]")
#: Mnemonics whose immediate objdump prints in hex (capstone prints small ones in decimal).
_ARM64_HEX_IMM = frozenset(
    [
        "mov",
        "movz",
        "movn",
        "movk",
        "add",
        "adds",
        "sub",
        "subs",
        "cmp",
        "cmn",
        "and",
        "ands",
        "orr",
        "eor",
        "tst",
        "brk",
        "hvc",
        "svc",
    ]
)
_ARM64_DEC_IMM = re.compile(r"#(-?)(\d+)\b(?!\])")
_ARM64_BRANCH = frozenset(["b", "bl", "cbz", "cbnz", "tbz", "tbnz", "adr", "adrp"])
_ARM64_TARGET = re.compile(r"#0x([0-9a-f]+)$")
_ARM64_REG_NAMES = {"fp": "X29", "lr": "X30", "xzr": "XZR", "wzr": "XZR", "sp": "SP"}
#: arm64 loads: the first operand is the register written.
_ARM64_LOAD = re.compile(r"^ld(?:r|ur|ar|xr|axr|p|np)")
_ARM64_STORE = re.compile(r"^st(?:r|ur|lr|xr|lxr|p|np)")


def _arm64_operands(mnemonic: str, op_str: str) -> str:
    out = _ARM64_BRACKET.sub(
        lambda m: _ARM64_MEM_IMM.sub(lambda n: f"#{n.group(1)}{int(n.group(2), 16)}", m.group(0)),
        op_str,
    )
    base = mnemonic.split(".", maxsplit=1)[0]
    if base in _ARM64_HEX_IMM and "[" not in out:
        head, sep, tail = out.partition(", lsl")
        head = _ARM64_DEC_IMM.sub(lambda n: f"#{n.group(1)}{int(n.group(2)):#x}", head)
        out = head + sep + tail
    if base in _ARM64_BRANCH or mnemonic.startswith("b."):
        out = _ARM64_TARGET.sub(lambda n: n.group(1).lstrip("0") or "0", out)
    return out


def _arm64_register(name: str) -> str:
    if name in _ARM64_REG_NAMES:
        return _ARM64_REG_NAMES[name]
    if name[:1] == "w" and name[1:].isdigit():
        return f"X{name[1:]}"
    return name.upper()


def _arm64_insn(data: bytes, offset: int) -> Instruction | None:
    import capstone

    insn = next(_capstone_arm64().disasm(data[:4], offset & 0xFFFFFFFFFFFFFFFF), None)
    if insn is None:
        return None
    mnemonic = insn.mnemonic
    operands = _arm64_operands(mnemonic, insn.op_str)
    memory = None
    for op in insn.operands:
        if op.type == capstone.arm64.ARM64_OP_MEM:
            memory = MemOperand(
                base=_arm64_register(insn.reg_name(op.mem.base)) if op.mem.base else None,
                index=_arm64_register(insn.reg_name(op.mem.index)) if op.mem.index else None,
                scale=1,
                disp=op.mem.disp,
            )
            break
    _read, regs_written = insn.regs_access()
    writes = tuple(dict.fromkeys(_arm64_register(insn.reg_name(r)) for r in regs_written))
    loads = memory is not None and bool(_ARM64_LOAD.match(mnemonic))
    access = None
    if memory is not None:
        access = "read" if loads else "write" if _ARM64_STORE.match(mnemonic) else None
    return Instruction(
        offset=offset,
        data=data[:4],
        text=objdump_layout(mnemonic, operands),
        mnemonic=mnemonic,
        memory=memory,
        writes=writes,
        loads=loads and len(writes) >= 1,
        access=access,
    )


# --- both ---------------------------------------------------------------------------

_DECODERS = {"x86_64": _x86_insn, "arm64": _arm64_insn}


def _decode_run(code: CodeBytes, start: int, end: int) -> list[Instruction] | None:
    # Decode data[start:end]; None when it does not split into whole instructions.
    out = []
    at = start
    decode_one = _DECODERS[code.arch]
    while at < end:
        insn = decode_one(code.data[at:end], at - code.marker)
        if insn is None:
            return None
        out.append(insn)
        at += len(insn.data)
    return out if at == end else None


def _before(code: CodeBytes) -> list[Instruction]:
    # x86 instructions have no fixed length: the bytes before the marker may start in the
    # middle of one. The first start (of the first 15) whose decoding ends exactly at
    # the marker is taken, as a reader of objdump's "All code" would; none: no guess.
    starts = range(0, min(code.marker, _X86_MAX_INSN)) if code.unit == 1 else [0]
    for start in starts:
        run = _decode_run(code, start, code.marker)
        if run:
            return run
    return []


def decode(code: CodeBytes) -> Decoded:
    """Decode the faulting instruction, and the ones around it where they decode.

    :raises CodeError: the bytes at the marker are not an instruction (a wrong marker),
        or the line stops inside it (cut short).
    """
    rest = code.data[code.marker :]
    if not rest:
        raise CodeError("the Code: line stops at the marker: no faulting instruction")
    faulting = _DECODERS[code.arch](rest, 0)
    if faulting is None:
        probe = _DECODERS[code.arch](rest + bytes(_X86_MAX_INSN), 0)
        if probe is not None:
            raise CodeError(
                "the Code: line stops inside the faulting instruction (cut short): "
                f"{len(rest)} of its {len(probe.data)} bytes"
            )
        raise CodeError(
            f"the bytes at the marker ({rest[:8].hex(' ')}) are not a {code.arch} "
            "instruction: a wrong marker, or bytes of another architecture"
        )
    after = []
    at = len(faulting.data)
    while at < len(rest):
        insn = _DECODERS[code.arch](rest[at:], at)
        if insn is None:
            break
        after.append(insn)
        at += len(insn.data)
    return Decoded(code=code, faulting=faulting, before=_before(code), after=after)
