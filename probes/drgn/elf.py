"""Read the little an ELF file says about itself: its type, GNU build ID and sections.

Used before handing files to drgn, so that a wrong ``vmlinux`` or a damaged
vmcore is reported in one line instead of as a missing-symbols puzzle later; and to
lay a module's sections out, find compressed DWARF and read a vmlinux's constant data
(its ``linux_banner``) without a dump. Only ELF64 little-endian is read; other files
return ``None``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

ELF_MAGIC = b"\x7fELF"
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
SHT_NOTE = 7
SHT_NOBITS = 8
SHF_ALLOC = 0x2
SHF_COMPRESSED = 0x800
NT_GNU_BUILD_ID = 3

# Elf64_Ehdr after e_ident: type, machine, version, entry, phoff, shoff, flags,
# ehsize, phentsize, phnum, shentsize, shnum, shstrndx.
_EHDR = struct.Struct("<HHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")  # type, flags, offset, vaddr, paddr, filesz, memsz, align
_SHDR = struct.Struct("<IIQQQQIIQQ")  # name, type, flags, addr, offset, size, link, info, ...


@dataclass(frozen=True)
class Segment:
    """A program header: ``p_type``, file offset and size in bytes, virtual address."""

    type: int
    offset: int
    filesz: int
    vaddr: int = 0


@dataclass(frozen=True)
class Section:
    """A section header.

    :param name: ``.text``, ``.debug_info``...
    :param type: ``sh_type``.
    :param flags: ``sh_flags`` (``SHF_ALLOC``, ``SHF_COMPRESSED``...).
    :param size: its size in bytes (compressed size for a compressed section).
    :param align: ``sh_addralign``.
    """

    name: str
    type: int
    flags: int
    size: int
    align: int


@dataclass(frozen=True)
class ElfHeader:
    """What the ELF header and its tables hold that we check.

    :param type: ``e_type`` (``ET_CORE`` = 4 for a vmcore).
    :param segments: the program headers.
    :param notes: (offset, size) in bytes of each ``SHT_NOTE`` section and ``PT_NOTE`` segment.
    :param sections: the section headers, in file order.
    """

    type: int
    segments: tuple[Segment, ...]
    notes: tuple[tuple[int, int], ...]
    sections: tuple[Section, ...] = ()


def read_elf_header(fh: BinaryIO) -> ElfHeader | None:
    """Read an ELF64 little-endian header with its program and section headers.

    :param fh: a file opened in binary mode.
    :return: the header, or ``None`` when the file is not ELF64 little-endian.
    """
    fh.seek(0)
    ident = fh.read(16)
    if len(ident) < 16 or ident[:4] != ELF_MAGIC or ident[4] != 2 or ident[5] != 1:
        return None
    raw = fh.read(_EHDR.size)
    if len(raw) < _EHDR.size:
        return None
    e_type, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, shstrndx = (
        _EHDR.unpack(raw)
    )
    segments = []
    notes = []
    headers: list[tuple[int, int, int, int, int, int]] = []
    fh.seek(phoff)
    for _ in range(phnum if phentsize == _PHDR.size else 0):
        p = fh.read(_PHDR.size)
        if len(p) < _PHDR.size:
            break
        p_type, _, offset, vaddr, _, filesz, _, _ = _PHDR.unpack(p)
        segments.append(Segment(p_type, offset, filesz, vaddr))
        if p_type == PT_NOTE:
            notes.append((offset, filesz))
    if shoff and shentsize == _SHDR.size and shnum < 65536:
        fh.seek(shoff)
        table = fh.read(shentsize * shnum)
        for i in range(len(table) // shentsize):
            name, sh_type, flags, _, offset, size, _, _, align, _ = _SHDR.unpack_from(
                table, i * shentsize
            )
            headers.append((name, sh_type, flags, offset, size, align))
            if sh_type == SHT_NOTE:
                notes.append((offset, size))
    names = b""
    if 0 < shstrndx < len(headers) and headers[shstrndx][4] < 1 << 24:
        fh.seek(headers[shstrndx][3])
        names = fh.read(headers[shstrndx][4])
    sections = tuple(
        Section(_name_at(names, name), sh_type, flags, size, align)
        for name, sh_type, flags, _, size, align in headers
    )
    return ElfHeader(e_type, tuple(segments), tuple(notes), sections)


def _name_at(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset : end if end >= 0 else None].decode(errors="replace")


def elf_header(path: str) -> ElfHeader | None:
    """Read the ELF header of a file (see :func:`read_elf_header`).

    :raises OSError: the file cannot be read.
    """
    with open(path, "rb") as fh:
        return read_elf_header(fh)


def read_address(path: str, address: int, size: int) -> bytes | None:
    """Read ``size`` bytes at a virtual address of a linked ELF file (a vmlinux's data).

    :return: the bytes, or ``None`` when no ``PT_LOAD`` segment holds them in the file.
    :raises OSError: the file cannot be read.
    """
    with open(path, "rb") as fh:
        header = read_elf_header(fh)
        for seg in header.segments if header else ():
            if (
                seg.type == PT_LOAD
                and seg.vaddr <= address
                and address + size <= seg.vaddr + seg.filesz
            ):
                fh.seek(seg.offset + address - seg.vaddr)
                return fh.read(size)
    return None


def _parse_build_id(notes: bytes) -> bytes | None:
    # Elf64_Nhdr: namesz, descsz, type; name and desc are 4-byte aligned.
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        pos += 12
        name = notes[pos : pos + namesz]
        pos += (namesz + 3) & ~3
        desc = notes[pos : pos + descsz]
        pos += (descsz + 3) & ~3
        if ntype == NT_GNU_BUILD_ID and name.rstrip(b"\0") == b"GNU":
            return desc
    return None


def build_id(path: str) -> bytes | None:
    """Return the GNU build ID of an ELF file (a vmlinux, a ``.ko``).

    :param path: the file.
    :return: the build ID's bytes, or ``None`` when the file is not ELF or has none.
    :raises OSError: the file cannot be read.
    """
    with open(path, "rb") as fh:
        header = read_elf_header(fh)
        if header is None:
            return None
        for offset, size in header.notes:
            if size > 1 << 20:
                continue
            fh.seek(offset)
            found = _parse_build_id(fh.read(size))
            if found:
                return found
    return None
