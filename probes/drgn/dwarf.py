"""Read a vmlinux's and its modules' DWARF without a dump, for the addresses a log names.

A log prints the faulting PC as ``function+offset/size [module]`` and the registers at
the fault; with the kernel's debug files, drgn maps that PC to its source lines and
evaluates the frame's variables from the registers alone. No core is needed: the
vmlinux is an extra module at its link addresses, each module ``.ko`` a relocatable
module whose allocated sections are laid out one after another, as the module loader
would (the log's ``symbol+offset`` is all that is looked up, so where they go does not
matter, only that they do not overlap).

- :func:`open_debug_files`: the program with the files' debug info, and the kernel
  release the vmlinux says it is (its ``linux_banner``, read from the file);
- :func:`find_vmlinux`, :func:`find_module`: the files in a ``/usr/lib/debug`` tree;
- :func:`pc_address`: a log's ``function+offset`` as an address there, checked against
  the symbol's size the log prints;
- :func:`source_chain`: the inline chain at an address, innermost first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import drgn

from probes.drgn.debugcache import uncompressed
from probes.drgn.elf import PT_LOAD, SHF_ALLOC, SHT_NOBITS, elf_header, read_address
from probes.drgn.explain import SourcePlace
from probes.drgn.program import X86_64, vmlinux_candidates
from probes.errors import ProbeError

AARCH64 = drgn.Platform(
    drgn.Architecture.AARCH64,
    drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN,
)
#: The log's architecture names → drgn platforms.
PLATFORMS = {"x86_64": X86_64, "arm64": AARCH64}
#: Where the relocatable modules are laid out: the module area, 16 MiB apart.
MODULE_BASE = 0xFFFFFFFFC0000000
MODULE_STRIDE = 1 << 24
_BANNER = re.compile(rb"Linux version (\S+)")


@dataclass
class DebugFiles:
    """A program holding a kernel's debug info, with no dump.

    :param prog: the drgn program.
    :param vmlinux: the vmlinux file given.
    :param release: the kernel release the vmlinux's ``linux_banner`` says, or ``None``.
    :param modules: module name (as the log prints it) → the ``.ko`` loaded for it.
    :param warnings: what loading said (the debug cache not usable...).
    """

    prog: drgn.Program
    vmlinux: str
    release: str | None
    modules: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def _text_range(path: str) -> tuple[int, int]:
    header = elf_header(path)
    loads = [s for s in header.segments if s.type == PT_LOAD and s.vaddr >> 63] if header else []
    if not loads:
        raise ProbeError(f"{path} is not a vmlinux (no kernel segments)", "give the vmlinux")
    return min(s.vaddr for s in loads), max(s.vaddr + s.filesz for s in loads)


def _release(prog: drgn.Program, vmlinux: str) -> str | None:
    try:
        banner = read_address(vmlinux, prog.symbol("linux_banner").address, 256)
    except (LookupError, OSError):
        return None
    m = _BANNER.match(banner or b"")
    return m.group(1).decode(errors="replace") if m else None


def _add_module(prog: drgn.Program, name: str, path: str, base: int) -> bool:
    header = elf_header(path)
    if header is None:
        return False
    module = prog.relocatable_module(name, base, create=True)
    at = base
    for section in header.sections:
        if not section.flags & SHF_ALLOC or not section.name:
            continue
        align = max(section.align, 1)
        at = (at + align - 1) // align * align
        module.section_addresses[section.name] = at
        at += section.size if section.type != SHT_NOBITS or section.size else 0
    module.address_range = (base, max(at, base + 1))
    module.try_file(path, force=True)
    return bool(module.debug_file_status == drgn.ModuleFileStatus.HAVE)


def open_debug_files(
    vmlinux: str, modules: Mapping[str, str] = {}, arch: str = "x86_64"
) -> DebugFiles:
    """Load a vmlinux's and some modules' debug info into a program without a dump.

    :param vmlinux: the kernel's ELF file with DWARF (a compressed one is uncompressed
        once, see :mod:`probes.drgn.debugcache`).
    :param modules: module name → its ``.ko`` with DWARF.
    :param arch: ``x86_64`` or ``arm64``.
    :raises ProbeError: the vmlinux is missing, unreadable, or has no debug info.
    """
    if not os.path.isfile(vmlinux):
        raise ProbeError(f"vmlinux {vmlinux}: no such file", "give the -dbg package's vmlinux")
    try:
        text = _text_range(vmlinux)
        dwarf, why = uncompressed(vmlinux)
    except OSError as exc:
        raise ProbeError(
            f"cannot read {vmlinux}: {exc.strerror}", "check its permissions"
        ) from None
    prog = drgn.Program(PLATFORMS[arch])
    kernel = prog.extra_module("vmlinux", create=True)
    kernel.address_range = text
    kernel.try_file(dwarf, force=True)
    if kernel.debug_file_status != drgn.ModuleFileStatus.HAVE:
        raise ProbeError(
            f"{vmlinux} has no debug info", "give the vmlinux of the -dbg package, not vmlinuz"
        )
    out = DebugFiles(prog, vmlinux, _release(prog, vmlinux), warnings=[why] if why else [])
    for i, (name, path) in enumerate(sorted(modules.items())):
        try:
            if _add_module(prog, name, path, MODULE_BASE + i * MODULE_STRIDE):
                out.modules[name] = path
            else:
                out.warnings.append(f"{path}: no debug info for module {name}")
        except OSError as exc:
            out.warnings.append(f"cannot read {path}: {exc.strerror}")
    return out


def find_vmlinux(debug_dir: str, release: str) -> str | None:
    """Return the vmlinux of a release in a ``/usr/lib/debug``-style tree, or ``None``."""
    return next(
        (p for p in vmlinux_candidates([debug_dir], None, release) if os.path.isfile(p)), None
    )


def find_module(debug_dir: str, release: str | None, name: str) -> str | None:
    """Return a module's debug file (``name.ko`` or ``name.ko.debug``, ``-`` and ``_``
    alike) in a ``/usr/lib/debug``-style tree, under ``lib/modules/<release>`` when it
    has one, or ``None``."""
    root = Path(debug_dir)
    tree = root / "lib" / "modules" / release if release else root
    base = tree if tree.is_dir() else root
    names = {name, name.replace("_", "-"), name.replace("-", "_")}
    for path in sorted(base.rglob("*.ko*")):
        if path.name.removesuffix(".debug").removesuffix(".ko") in names and path.is_file():
            return str(path)
    return None


def pc_address(
    debug: DebugFiles, function: str, offset: int, size: int | None, module: str | None
) -> tuple[int | None, str | None]:
    """Return the address of a log's ``function+offset`` in the debug files.

    :param size: the symbol's size the log prints (``/0x20``): checked against the file's,
        so that a vmlinux of another build is not read as if it were the right one.
    :return: (the address, ``None``) or (``None``, why not, one line).
    """
    prog = debug.prog
    where = f"module {module}" if module else "the vmlinux"
    if module is not None and module not in debug.modules:
        return None, f"no debug file for module {module} (give --debug-dir with its .ko)"
    owner = prog.module("vmlinux") if module is None else None
    candidates = []
    for sym in prog.symbols(function):
        holder = prog.module(sym.address)
        if (module is None and holder == owner) or (module is not None and holder.name == module):
            candidates.append(sym)
    if not candidates:
        return None, f"{function} is not a symbol of {where}: another build, or another kernel"
    sym = candidates[0]
    if size is not None and not _same_extent(prog, sym, size):
        return None, (
            f"{function} is 0x{sym.size:x} bytes in {where} (up to the next symbol), "
            f"0x{size:x} in the log: the debug file is of another build"
        )
    return sym.address + offset, None


def _same_extent(prog: drgn.Program, sym: drgn.Symbol, size: int) -> bool:
    # kallsyms prints a symbol's size as the distance to the next symbol: its own size
    # plus the alignment padding after it. So the log's size covers the ELF symbol, no
    # other symbol starts before its end, and one starts there (or nothing is there).
    if size < sym.size:
        return False
    for address in range(sym.address + sym.size, sym.address + size):
        with suppress(LookupError):
            prog.symbol(address)
            return False
    try:
        return bool(prog.symbol(sym.address + size).address == sym.address + size)
    except LookupError:
        return True


def source_chain(prog: drgn.Program, address: int) -> list[SourcePlace]:
    """Return the source places at an address, innermost (inlined) first."""
    try:
        found = prog.source_location(address)
    except LookupError:
        return []
    places = list(found)
    return [
        SourcePlace(p.name() or "?", p.filename or None, p.line or None, i < len(places) - 1)
        for i, p in enumerate(places)
    ]
