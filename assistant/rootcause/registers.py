"""The register dump and the fault address of an oops, and what their values are.

Parsing is pure: :func:`parse_registers` reads the first kernel register dump of a
report (x86-64's ``RAX: ... RBX: ...`` rows, arm64's ``x29: ... x28: ...``), stopping
at a user-space one (``RIP: 0033:``); :func:`fault_address` reads the address the
report says faulted (the page-fault header, a general protection fault's "probably for
non-canonical address", arm64's "at virtual address", else ``CR2``).

:func:`classify` names what a value is, from a table: NULL (or NULL plus a small
offset), a poison value of ``include/linux/poison.h`` (``LIST_POISON1/2``, the slab's
``POISON_FREE`` 0x6b bytes of a freed object, ``POISON_INUSE`` 0x5a, ...), a
non-canonical address, a user-space address.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from assistant.triage.describe import parse_frames
from assistant.triage.model import Frame
from probes.printk_time import without_stamp

Arch = Literal["x86_64", "arm64"]
MASK64 = (1 << 64) - 1

#: x86-64 register names as the dump prints them; the order of a dump.
X86_REGISTERS = (
    "RAX",
    "RBX",
    "RCX",
    "RDX",
    "RSI",
    "RDI",
    "RBP",
    "RSP",
    "R8",
    "R9",
    "R10",
    "R11",
    "R12",
    "R13",
    "R14",
    "R15",
)
_X86_PAIR = re.compile(
    r"\b(?P<name>R[A-D]X|R[SD]I|RBP|RSP|R(?:[89]|1[0-5])|CR2|FS|GS|ORIG_RAX):\s*"
    r"(?:[0-9a-f]{4}:)?(?P<value>[0-9a-f]{8,16})\b"
)
_X86_RIP = re.compile(r"\bRIP: (?P<cs>[0-9a-f]{4}):(?:\[<(?P<addr>[0-9a-f]+)>\])?")
_ARM64_PAIR = re.compile(r"\b(?P<name>x\d{1,2}|sp)\s*:\s*(?P<value>[0-9a-f]{16})\b")
_ARM64_PC = re.compile(r"^pc : (?!\[<)")
#: The header lines that name the faulting address, by architecture, most specific first.
_FAULT_ADDRESS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"BUG: kernel NULL pointer dereference, address: (?P<a>[0-9a-f]+)"), "page fault"),
    (re.compile(r"BUG: unable to handle page fault for address: (?P<a>[0-9a-f]+)"), "page fault"),
    (
        re.compile(
            r"BUG: unable to handle kernel (?:NULL pointer dereference|paging request) at "
            r"(?:virtual address )?(?P<a>[0-9a-f]+)"
        ),
        "page fault",
    ),
    (
        re.compile(
            r"general protection fault, (?:probably for non-canonical address|"
            r"maybe for address) (?P<a>0x[0-9a-f]+)"
        ),
        "general protection fault",
    ),
    (
        re.compile(
            r"Unable to handle kernel (?:NULL pointer dereference|paging request|"
            r"write to read-only memory|execute from non-executable memory|"
            r"access to user memory[^ ]*)? ?at virtual address (?P<a>[0-9a-f]+)"
        ),
        "page fault",
    ),
)


@dataclass
class Registers:
    """A register dump.

    :param arch: ``x86_64`` or ``arm64``.
    :param values: register name (dump spelling, upper case: ``RBX``, ``X19``, ``SP``,
        ``CR2``, ``GS``) → its value (unsigned 64-bit).
    :param pc: the faulting PC when the dump prints it as a number (old x86 dumps'
        ``RIP: 0010:[<ffffffff81234567>]``), else ``None``.
    """

    arch: Arch
    values: dict[str, int] = field(default_factory=dict)
    pc: int | None = None


@dataclass(frozen=True)
class FaultAddress:
    """The address a report says faulted.

    :param address: the address (unsigned 64-bit).
    :param source: what said it: ``page fault`` (the header), ``general protection
        fault`` (the kernel's decoding of the instruction), or ``CR2``.
    """

    address: int
    source: str


#: Register-dump lines of architectures kassist does not decode: their name.
_OTHER_ARCH: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bpsr: [0-9a-f]{8}\b|^r10: [0-9a-f]{8} "), "32-bit ARM"),
    (re.compile(r"^EIP: |\bEIP: \d{4}:"), "32-bit x86"),
    (re.compile(r"^NIP: |^MSR: "), "powerpc"),
    (re.compile(r"^epc : |^ status: "), "RISC-V"),
    (re.compile(r"^Krnl PSW :"), "s390"),
)


def report_arch(report: str) -> Arch | None:
    """Tell the architecture from a report's register dump, or ``None`` when it has none
    of x86-64 or arm64 (see :func:`other_arch`)."""
    for raw in report.splitlines():
        line = without_stamp(raw).strip()
        if _X86_RIP.search(line) or line.startswith(("RAX: ", "RSP: ")):
            return "x86_64"
        if line.startswith(("x29: ", "pstate: ", "x0 : ")):
            return "arm64"
    return None


def other_arch(report: str) -> str | None:
    """Name the architecture of a register dump kassist does not decode, if there is one."""
    for raw in report.splitlines():
        line = without_stamp(raw).strip()
        for pattern, name in _OTHER_ARCH:
            if pattern.search(line):
                return name
    return None


def parse_registers(report: str, arch: Arch) -> Registers:
    """Read the first kernel register dump of a report.

    :param report: the crash report's text (printk prefixes allowed).
    :param arch: from :func:`report_arch`.
    :return: the registers found (none: an empty ``values``).
    """
    out = Registers(arch)
    started = False
    for raw in report.splitlines():
        line = without_stamp(raw).strip()
        if arch == "x86_64":
            rip = _X86_RIP.search(line)
            if rip:
                if started:
                    break  # the next dump (user space's RIP: 0033, or another oops)
                started = rip.group("cs") != "0033"
                if rip.group("addr"):
                    out.pc = int(rip.group("addr"), 16)
                continue
            pairs = _X86_PAIR.finditer(line)
        else:
            if _ARM64_PC.match(line):
                if started:
                    break
                started = True
                continue
            pairs = _ARM64_PAIR.finditer(line)
        for m in pairs:
            name = m.group("name").upper()
            if name in out.values:
                return out  # a second dump without a RIP line of its own
            out.values[name] = int(m.group("value"), 16)
            started = True
    return out


#: The faulting PC as a symbol: x86-64's ``RIP: 0010:func+0x9/0x20 [mod]`` (after the
#: ``[<addr>]`` of old dumps), arm64's ``pc : func+0x28/0x58 [mod]``, or ``PC is at``.
_PC_SYMBOL = re.compile(
    r"^(?:RIP: (?!0033)[0-9a-f]{4}:(?:\[<[0-9a-f]+>\]\s*){0,2}|pc : (?:\[<[0-9a-f]+>\]\s*)?"
    r"|PC is at )(?=[A-Za-z_.$])"
)


def pc_frame(report: str) -> Frame | None:
    """Return the faulting PC of a report's first kernel register dump as a frame.

    >>> pc_frame("RIP: 0010:kassist_conn_item_id+0x9/0x20 [kassist_crash]").offset
    9

    :return: ``function+offset/size [module]``, or ``None`` when the dump prints no symbol.
    """
    for raw in report.splitlines():
        line = without_stamp(raw).strip()
        m = _PC_SYMBOL.match(line)
        if m:
            frames = parse_frames([line[m.end() :]])
            return frames[0] if frames else None
    return None


def fault_address(report: str, registers: Registers) -> FaultAddress | None:
    """Return the address the report says faulted, or ``None`` when it says none.

    ``CR2`` is used only for a page fault whose header does not print the address
    (on a general protection fault CR2 holds an older fault's address).
    """
    text = "\n".join(without_stamp(line) for line in report.splitlines())
    for pattern, source in _FAULT_ADDRESS:
        m = pattern.search(text)
        if m:
            return FaultAddress(int(m.group("a"), 16) & MASK64, source)
    if "#PF:" in text and "CR2" in registers.values:
        return FaultAddress(registers.values["CR2"], "CR2")
    return None


# --- what a value is ------------------------------------------------------------------

#: ``CONFIG_ILLEGAL_POINTER_VALUE`` of x86-64 and arm64: ``POISON_POINTER_DELTA``.
POISON_POINTER_DELTA = 0xDEAD000000000000
#: Pointer poisons of include/linux/poison.h (and ZERO_SIZE_PTR, include/linux/slab.h).
POISON_POINTERS: dict[int, tuple[str, str]] = {
    0x100 + POISON_POINTER_DELTA: (
        "LIST_POISON1",
        "list_del()'s poison in ->next: the entry was deleted",
    ),
    0x122 + POISON_POINTER_DELTA: (
        "LIST_POISON2",
        "list_del()'s poison in ->prev: the entry was deleted",
    ),
    0x300 + POISON_POINTER_DELTA: ("TIMER_ENTRY_STATIC", "a static timer's poisoned entry"),
    0x400 + POISON_POINTER_DELTA: ("TAIL_MAPPING", "a tail page's poisoned mapping"),
    0x500 + POISON_POINTER_DELTA: ("MUTEX_POISON_WW_CTX", "a ww-mutex's poisoned context"),
    0x40 + POISON_POINTER_DELTA: ("PP_SIGNATURE", "a page-pool page's signature"),
    0xEB9F + POISON_POINTER_DELTA: ("BPF_PTR_POISON", "BPF's poisoned pointer"),
    0xF5 + POISON_POINTER_DELTA: ("VFS_PTR_POISON", "the VFS's poisoned pointer"),
    0x10: ("ZERO_SIZE_PTR", "what kmalloc(0) returns: an object of no bytes"),
    0x9F911029D74E35B: ("RED_INACTIVE", "SLAB's red zone of a free object"),
    0xD84156C5635688C0: ("RED_ACTIVE", "SLAB's red zone of an allocated object"),
}
#: Byte poisons of include/linux/poison.h: a value made of these bytes was read from
#: memory filled with them.
POISON_BYTES: dict[int, tuple[str, str]] = {
    0x6B: ("POISON_FREE", "slab use-after-free poison: read from a freed object (slub_debug=P)"),
    0x5A: ("POISON_INUSE", "slab poison of an allocated but never written object"),
    0xA5: ("POISON_END", "the last byte of a poisoned slab object"),
    0xCC: ("POISON_FREE_INITMEM", "freed init memory, or SLUB's active red zone"),
    0xBB: ("SLUB_RED_INACTIVE", "SLUB's red zone of a free object"),
    0xAA: ("PAGE_POISON", "a freed page's poison (page_poison=1)"),
    0x5B: ("JBD_POISON_FREE", "jbd's freed-buffer poison"),
    0x5C: ("JBD2_POISON_FREE", "jbd2's freed-buffer poison"),
    0xA7: ("POOL_POISON_FREED", "a dma pool's freed block"),
    0xA9: ("POOL_POISON_ALLOCATED", "a dma pool's uninitialised block"),
}
#: Whole-word poisons.
POISON_WORDS: dict[int, tuple[str, str]] = {
    0xDEADBEEF: ("ATM_POISON", "0xdeadbeef, a common debug poison"),
    0xDEAD4EAD: ("SPINLOCK_MAGIC", "a spinlock's debug magic"),
}
#: The first page: an access below it is a NULL pointer plus a member offset.
NULL_PAGE = 4096
#: KASAN's shadow offset on x86-64: a GPF at dffffc00000000xx is KASAN checking NULL + x.
KASAN_SHADOW_OFFSET = 0xDFFFFC0000000000


@dataclass(frozen=True)
class ValueKind:
    """What a register value or an address is.

    :param kind: ``null``, ``near-null``, ``poison``, ``non-canonical``, ``user``,
        ``kasan-shadow`` or ``kernel``.
    :param name: the poison's name (``LIST_POISON2``), else ``None``.
    :param meaning: one line for a person.
    """

    kind: str
    name: str | None
    meaning: str


def _repeated_byte(value: int, width: int) -> int | None:
    if width <= 0:
        return None
    b = value & 0xFF
    pattern = int.from_bytes(bytes([b]) * width, "little")
    return b if value == pattern else None


def _byte_poison(value: int) -> tuple[int, str, str] | None:
    # The full word, or its low 32 bits (a 4-byte load), made of one poison byte; the
    # last byte of a poisoned object is POISON_END, so ...a56b6b... counts as well.
    for width in (8, 4):
        part = value if width == 8 else value & 0xFFFFFFFF
        if width == 4 and value >> 32:
            continue
        b = _repeated_byte(part, width)
        if b is not None and b in POISON_BYTES:
            name, meaning = POISON_BYTES[b]
            return b, name, meaning
    # A poisoned pointer plus a member offset: 0x6b6b6b6b6b6b6b6b + 0x60.
    for b, (name, meaning) in POISON_BYTES.items():
        base = int.from_bytes(bytes([b]) * 8, "little")
        if 0 < (value - base) & MASK64 < NULL_PAGE:
            return b, name, meaning + f" (plus 0x{(value - base) & MASK64:x})"
    return None


def canonical(value: int, arch: Arch) -> bool:
    """Tell whether an address may be canonical, whatever the paging mode.

    x86-64 with 5-level paging (LA57, which Debian's kernel uses where the CPU has it)
    allows 57-bit addresses: bits 56..63 equal. A log does not say which mode ran, so
    only an address non-canonical in both modes is called so. arm64's top byte may carry
    a tag (TBI, KASAN tags): bits 48..55 are checked there.
    """
    if arch == "arm64":
        top = (value >> 48) & 0xFF
        return top in (0, 0xFF)
    top = value >> 56
    return top in (0, 0xFF)


def _null(value: int, arch: Arch) -> ValueKind | None:
    return ValueKind("null", "NULL", "a NULL pointer") if value == 0 else None


def _poison_pointer(value: int, arch: Arch) -> ValueKind | None:
    if value not in POISON_POINTERS:
        return None
    name, meaning = POISON_POINTERS[value]
    return ValueKind("poison", name, meaning)


def _near_null(value: int, arch: Arch) -> ValueKind | None:
    if value >= NULL_PAGE:
        return None
    return ValueKind("near-null", None, f"NULL plus 0x{value:x}: a member of a NULL pointer")


def _poison_word(value: int, arch: Arch) -> ValueKind | None:
    for word, where in ((value, ""), (value >> 32, " in the upper half")):
        if word in POISON_WORDS:
            name, meaning = POISON_WORDS[word]
            return ValueKind("poison", name, meaning + where)
    return None


def _poison_bytes(value: int, arch: Arch) -> ValueKind | None:
    byte_poison = _byte_poison(value)
    if byte_poison is None:
        return None
    _, name, meaning = byte_poison
    return ValueKind("poison", name, meaning)


def _kasan_shadow(value: int, arch: Arch) -> ValueKind | None:
    if arch != "x86_64" or not 0 <= value - KASAN_SHADOW_OFFSET < 1 << 44:
        return None
    if canonical(value, arch):
        return None
    shadowed = (value - KASAN_SHADOW_OFFSET) << 3
    null = " (a NULL pointer plus an offset)" if shadowed < NULL_PAGE else ""
    return ValueKind("kasan-shadow", None, f"KASAN's shadow of address 0x{shadowed:x}{null}")


def _poison_delta(value: int, arch: Arch) -> ValueKind | None:
    if not 0 <= value - POISON_POINTER_DELTA < 0x10000:
        return None
    meaning = f"POISON_POINTER_DELTA plus 0x{value - POISON_POINTER_DELTA:x}"
    return ValueKind("poison", None, meaning)


def _address(value: int, arch: Arch) -> ValueKind:
    if not canonical(value, arch):
        return ValueKind("non-canonical", None, "a non-canonical address: no memory is there")
    if value >> 63 == 0:
        return ValueKind("user", None, "a user-space address")
    return ValueKind("kernel", None, "a kernel address")


#: What a value may be, tried in this order (the first that says something wins);
#: :func:`_address` names what is left.
_KINDS: tuple[Callable[[int, Arch], ValueKind | None], ...] = (
    _null,
    _poison_pointer,
    _near_null,
    _poison_word,
    _poison_bytes,
    _kasan_shadow,
    _poison_delta,
)


def classify(value: int, arch: Arch) -> ValueKind:
    """Say what a register value or an address is.

    >>> classify(0xdead000000000122, "x86_64").name
    'LIST_POISON2'
    >>> classify(0x6b6b6b6b6b6b6b6b, "x86_64").name
    'POISON_FREE'
    """
    value &= MASK64
    for kind in _KINDS:
        found = kind(value, arch)
        if found is not None:
            return found
    return _address(value, arch)
