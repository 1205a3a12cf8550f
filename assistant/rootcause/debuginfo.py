"""From a log with the kernel's debug files: the faulting PC's source line and the member.

``kassist report LOG --vmlinux FILE`` (or ``--debug-dir DIR``) and ``kassist triage
--format json`` with them: the log's ``RIP: 0010:func+0x9/0x20 [mod]`` is looked up in the
vmlinux or the module's ``.ko`` (:mod:`probes.drgn.dwarf`, no dump needed), mapped to
its file:line and inline chain, and the faulting access's base register named as the
vmcore explanation names it (:func:`assistant.rootcause.explain.name_access`: DWARF
variable locations at the PC, evaluated from the log's registers).

A debug file of another build is caught by the symbol's size the log prints
(``/0x20``) and by the release in the vmlinux's ``linux_banner``; what cannot be named
is one line in :attr:`SourceFinding.notes`, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from assistant.drafters.markdown import md_inline
from assistant.errors import InputError, NotAvailable
from assistant.rootcause.explain import MemberFinding, chain_text, name_access
from assistant.rootcause.fault import FaultAnalysis
from assistant.rootcause.registers import X86_REGISTERS, pc_frame, report_arch
from assistant.triage.model import Crash
from probes.errors import ProbeError

if TYPE_CHECKING:
    from probes.drgn.dwarf import DebugFiles

_DEBUG_HINT = "give --vmlinux FILE (the -dbg package's) or --debug-dir DIR (a /usr/lib/debug tree)"


@dataclass
class SourceFinding:
    """What the debug files say about a log's faulting PC (``crash.fault.dwarf``).

    :param pc: the PC as the log names it (``kassist_conn_item_id+0x9/0x20 [kassist_crash]``).
    :param location: its ``file:line``, or ``None``.
    :param chain: the inline chain, innermost first (``func file:line [inline]``).
    :param member: the faulting access's pointer and member, or ``None`` (see ``notes``).
    :param debug_file: the vmlinux or ``.ko`` the PC was found in.
    :param notes: what could not be computed, one line each.
    """

    pc: str | None
    location: str | None = None
    chain: list[str] = field(default_factory=list)
    member: MemberFinding | None = None
    debug_file: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return it as JSON-ready data."""
        return {
            "pc": self.pc,
            "location": self.location,
            "inline_chain": self.chain,
            "member": self.member.to_dict() if self.member else None,
            "debug_file": self.debug_file,
            "notes": self.notes,
        }


def _releases(crashes: Sequence[Crash]) -> list[str]:
    return list(dict.fromkeys(c.kernel.release for c in crashes if c.kernel.release))


def open_log_debug(
    crashes: Sequence[Crash], vmlinux: str | None, debug_dir: str | None
) -> DebugFiles:
    """Open the debug files for a log's crashes: the vmlinux and the faulting modules.

    The vmlinux is ``vmlinux`` or, in ``debug_dir``, the one of the log's release; the
    ``.ko`` of each module a crash faulted in is looked for in ``debug_dir``.

    :raises InputError: no vmlinux, or one of a release that no crash of the log ran
        (one line: the vmlinux does not match the log).
    :raises NotAvailable: the vmlinux cannot be read as a kernel's with debug info.
    """
    from probes.drgn.dwarf import find_module, find_vmlinux, open_debug_files

    releases = _releases(crashes)
    if vmlinux is None and debug_dir is not None:
        vmlinux = next((v for r in releases if (v := find_vmlinux(debug_dir, r))), None)
        if vmlinux is None:
            what = f"kernel {', '.join(releases)}" if releases else "the log's kernel"
            raise InputError(f"no vmlinux of {what} in {debug_dir}", _DEBUG_HINT)
    if vmlinux is None:
        raise InputError("no vmlinux given", _DEBUG_HINT)
    modules: dict[str, str] = {}
    for crash in crashes:
        pc = pc_frame(crash.report)
        if pc is not None and pc.module and debug_dir and pc.module not in modules:
            found = find_module(debug_dir, crash.kernel.release, pc.module)
            if found:
                modules[pc.module] = found
    arch = next((a for c in crashes if (a := report_arch(c.report))), "x86_64")
    try:
        debug = open_debug_files(vmlinux, modules, arch)
    except ProbeError as exc:
        raise NotAvailable(exc.message, exc.hint) from None
    if debug.release and releases and debug.release not in releases:
        raise InputError(
            f"{vmlinux} is kernel {debug.release}, the log's is {', '.join(releases)}: "
            "it does not match the log",
            f"give the vmlinux of kernel {releases[0]} (package linux-image-{releases[0]}-dbg)",
        )
    return debug


def _log_registers(fault: FaultAnalysis, pc: int) -> dict[str, int]:
    assert fault.regs is not None
    out = {r: fault.regs.values[r] for r in X86_REGISTERS if r in fault.regs.values}
    out["RIP"] = pc
    return out


def explain_log(crash: Crash, fault: FaultAnalysis | None, debug: DebugFiles) -> SourceFinding:
    """Name a log crash's faulting PC's source and the member its access used.

    :param fault: the log's analysis of the faulting instruction
        (:func:`assistant.rootcause.fault.analyse_report`).
    :param debug: the opened debug files (:func:`open_log_debug`).
    """
    from probes.drgn.dwarf import pc_address, source_chain
    from probes.drgn.explain import FaultFrame, registers_trace

    pc = pc_frame(crash.report)
    if pc is None or pc.offset is None:
        return SourceFinding(None, notes=["the register dump names no faulting function"])
    text = f"{pc.function}+0x{pc.offset:x}" + (f"/0x{pc.size:x}" if pc.size else "")
    out = SourceFinding(text + (f" [{pc.module}]" if pc.module else ""))
    release = crash.kernel.release
    if release and debug.release and release != debug.release:
        out.notes.append(f"the report is of kernel {release}, the vmlinux of {debug.release}")
        return out
    address, why = pc_address(debug, pc.function, pc.offset, pc.size, pc.module)
    if address is None:
        out.notes.append(why or f"{pc.function} not found")
        return out
    out.debug_file = debug.modules.get(pc.module, debug.vmlinux) if pc.module else debug.vmlinux
    places = source_chain(debug.prog, address)
    if places and places[0].file:
        out.location = f"{places[0].file}:{places[0].line}"
    out.chain = chain_text(places)
    if fault is None or fault.instruction is None:
        out.notes.append("no decoded faulting instruction: no access to name")
        return out
    if fault.arch != "x86_64" or fault.regs is None or not fault.regs.values:
        out.notes.append(
            "the member is named from x86-64 register dumps only (arm64: file:line and chain)"
        )
        return out
    registers = _log_registers(fault, address)
    frame = FaultFrame(0, address, pc.function, pc.offset, pc.size, pc.module, registers)
    out.member, why = name_access(debug.prog, registers_trace(debug.prog, registers), frame, fault)
    if out.member is None and why:
        out.notes.append(why)
    return out


def source_markdown(found: SourceFinding) -> list[str]:
    """Return the bug report's lines for a :class:`SourceFinding` (Markdown list items)."""
    out = []
    if found.location:
        out.append(f"- Source: `{md_inline(found.location)}` in `{md_inline(found.pc or '?')}`")
        out += [f"  - inlined into `{md_inline(link)}`" for link in found.chain[1:]]
    if found.member is not None:
        m = found.member
        what = f"{md_inline(m.text())} ({md_inline(m.how)})"
        out.append(f"- `{md_inline(m.pointer)}`: {what} _(DWARF)_")
    out += [f"- _Not computed from the debug info: {md_inline(n)}_" for n in found.notes]
    return out
