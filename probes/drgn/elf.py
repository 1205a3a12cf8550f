"""Read the little an ELF file says about itself: its type and its GNU build ID.

Used before handing files to drgn, so that a wrong ``vmlinux`` or a damaged
vmcore is reported in one line instead of as a missing-symbols puzzle later.
Only ELF64 little-endian (x86-64) is read; other files return ``None``.
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
NT_GNU_BUILD_ID = 3

# Elf64_Ehdr after e_ident: type, machine, version, entry, phoff, shoff, flags,
# ehsize, phentsize, phnum, shentsize, shnum, shstrndx.
_EHDR = struct.Struct("<HHIQQQIHHHHHH")
_PHDR = struct.Struct("<IIQQQQQQ")  # type, flags, offset, vaddr, paddr, filesz, memsz, align
_SHDR = struct.Struct("<IIQQQQIIQQ")  # name, type, flags, addr, offset, size, link, info, ...


@dataclass(frozen=True)
class Segment:
    """A program header: ``p_type``, file offset and size in bytes."""

    type: int
    offset: int
    filesz: int


@dataclass(frozen=True)
class ElfHeader:
    """What the ELF header and its tables hold that we check.

    :param type: ``e_type`` (``ET_CORE`` = 4 for a vmcore).
    :param segments: the program headers.
    :param notes: (offset, size) in bytes of each ``SHT_NOTE`` section and ``PT_NOTE`` segment.
    """

    type: int
    segments: tuple[Segment, ...]
    notes: tuple[tuple[int, int], ...]


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
    e_type, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _ = _EHDR.unpack(raw)
    segments = []
    notes = []
    fh.seek(phoff)
    for _ in range(phnum if phentsize == _PHDR.size else 0):
        p = fh.read(_PHDR.size)
        if len(p) < _PHDR.size:
            break
        p_type, _, offset, _, _, filesz, _, _ = _PHDR.unpack(p)
        segments.append(Segment(p_type, offset, filesz))
        if p_type == PT_NOTE:
            notes.append((offset, filesz))
    if shoff and shentsize == _SHDR.size and shnum < 65536:
        fh.seek(shoff)
        table = fh.read(shentsize * shnum)
        for i in range(len(table) // shentsize):
            _, sh_type, _, _, offset, size, _, _, _, _ = _SHDR.unpack_from(table, i * shentsize)
            if sh_type == SHT_NOTE:
                notes.append((offset, size))
    return ElfHeader(e_type, tuple(segments), tuple(notes))


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
