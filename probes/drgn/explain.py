"""What a dump says about the fault: registers, code bytes, variables, objects, stacks.

The readers behind ``kassist vmcore explain`` (the explanation is
``assistant/rootcause/explain.py``'s). Each reads one thing with drgn and returns data:

- :func:`fault_frame`: the frame that faulted (below the oops machinery), its registers,
  and its inline chain (file:line of each inlined function at the PC);
- :func:`stack_modules`: the modules the crashed thread's stack runs through;
- :func:`code_at`: the bytes around the PC, read from the dump's memory (what the
  ``Code:`` line prints, without the log);
- :func:`register_variables`: which DWARF variables of the faulting frame live in a
  register at the PC. drgn evaluates the variables' locations from a ``struct pt_regs``;
  evaluating them again with one register changed shows which ones that register holds;
- :func:`local_at`: the local whose stack slot is at an address;
- :func:`identify`: drgn's ``identify_address`` and, for a slab object, its cache,
  start and state (allocated or free);
- :func:`slab_tracks`: the allocation and free stacks slub_debug's user tracking
  (``slub_debug=U``) keeps after an object;
- :func:`member_name`: a struct's member at an offset.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import drgn
from drgn.helpers.common.memory import identify_address
from drgn.helpers.common.type import member_at_offset
from drgn.helpers.linux.slab import slab_object_info

from probes.drgn.stack import KERNEL_SPACE_START, guilty_index, stack_frames

#: drgn's x86-64 register names → ``struct pt_regs`` members.
_PT_REGS = {
    "rax": "ax",
    "rbx": "bx",
    "rcx": "cx",
    "rdx": "dx",
    "rsi": "si",
    "rdi": "di",
    "rbp": "bp",
    "rsp": "sp",
    "r8": "r8",
    "r9": "r9",
    "r10": "r10",
    "r11": "r11",
    "r12": "r12",
    "r13": "r13",
    "r14": "r14",
    "r15": "r15",
}
#: Bytes the kernel's show_opcodes() prints before and from the PC (x86-64).
CODE_BEFORE = 42
CODE_AFTER = 21
#: ``SLAB_STORE_USER`` (include/linux/slab.h): the cache keeps alloc/free tracks.
SLAB_STORE_USER = 0x00010000
#: A perturbation no real pointer difference matches by chance.
_DELTA = 0x5A5A000


@dataclass
class SourcePlace:
    """One function of the inline chain at the faulting PC.

    :param function: the (possibly inlined) function.
    :param file: its source file, or ``None``.
    :param line: the line, or ``None``.
    :param inline: it was inlined into the next place of the chain.
    """

    function: str
    file: str | None
    line: int | None
    inline: bool


@dataclass
class FaultFrame:
    """The frame that faulted.

    :param index: its index in the crashed thread's stack trace.
    :param pc: the faulting PC.
    :param function: its function (innermost inlined one), or ``None``.
    :param offset: the PC's offset into its symbol.
    :param size: the symbol's size.
    :param module: the module, ``None`` for vmlinux.
    :param registers: register values at the fault, upper-case dump names (``RAX``, ``RIP``).
    :param chain: the inline chain at the PC, innermost first.
    """

    index: int
    pc: int
    function: str | None
    offset: int | None
    size: int | None
    module: str | None
    registers: dict[str, int]
    chain: list[SourcePlace] = field(default_factory=list)


@dataclass
class Variable:
    """A DWARF variable or parameter.

    :param name: its C name.
    :param type: its C type (``struct kassist_conn *``).
    :param function: the function it belongs to.
    :param value: its value, when it is an integer or pointer that could be read.
    """

    name: str
    type: str
    function: str
    value: int | None = None


@dataclass
class SlabObject:
    """A slab object an address falls in.

    :param cache: the cache's name.
    :param address: the object's start.
    :param offset: the address's offset into it.
    :param allocated: allocated (``True``), free (``False``), or not known (``None``).
    :param size: ``kmem_cache.object_size``.
    :param stores_user: the cache keeps alloc/free tracks (slub_debug=U).
    """

    cache: str
    address: int
    offset: int
    allocated: bool | None
    size: int
    stores_user: bool


@dataclass
class Identity:
    """What an address is, as drgn identifies it.

    :param address: the address.
    :param description: ``identify_address``'s text (``slab object: kassist_conn+0x0``,
        ``task stack: kassist-crash (pid 94)+0x3e78``, ``function symbol: ...``) or ``None``.
    :param slab: the slab object, for a slab address.
    """

    address: int
    description: str | None
    slab: SlabObject | None = None


@dataclass
class Track:
    """slub_debug's record of an allocation or a free (``struct track``, mm/slub.c).

    :param pid: the task's PID.
    :param cpu: the CPU.
    :param when: ``jiffies`` at the time.
    :param frames: the stack (function names, innermost first), from the stack depot.
    """

    pid: int
    cpu: int
    when: int
    frames: list[str] = field(default_factory=list)


def _regs(frame: drgn.StackFrame) -> dict[str, int]:
    out = {name.upper(): value for name, value in frame.registers().items()}
    out["RIP"] = frame.pc
    return out


def fault_frame(prog: drgn.Program) -> tuple[drgn.StackTrace, FaultFrame] | None:
    """Return the crashed thread's trace and the frame that faulted, or ``None``.

    :return: ``None`` for a live kernel, or a dump where no thread crashed.
    """
    try:
        trace = prog.crashed_thread().stack_trace()
    except (ValueError, LookupError):
        return None
    frames = stack_frames(prog, trace, with_locals=False)
    index = guilty_index(frames)
    if index is None:
        return None
    drgn_frame = trace[index]
    chain = []
    for f in frames[index:]:
        if f.pc != frames[index].pc:
            break
        chain.append(SourcePlace(f.function or "?", f.file, f.line, f.inline))
        if not f.inline:
            break
    top = frames[index]
    try:
        registers = _regs(drgn_frame)
    except (LookupError, ValueError):
        registers = {"RIP": top.pc}
    return trace, FaultFrame(
        index=index,
        pc=top.pc,
        function=top.function,
        offset=top.offset,
        size=top.size,
        module=top.module,
        registers=registers,
        chain=chain,
    )


def stack_modules(prog: drgn.Program) -> set[str]:
    """Return the loaded modules (not vmlinux) holding PCs of the crashed thread's stack.

    Read before the modules' debug info is loaded, the stack unwinds as far as the
    kernel's own unwind tables go: the faulting frame at least.
    """
    out: set[str] = set()
    try:
        trace = prog.crashed_thread().stack_trace()
    except (ValueError, LookupError, drgn.FaultError):
        return out
    for frame in trace:
        try:
            module = prog.module(frame.pc)
        except LookupError:
            continue
        if not isinstance(module, drgn.MainModule):
            out.add(module.name)
    return out


def code_at(prog: drgn.Program, pc: int) -> tuple[bytes, int] | None:
    """Read the code bytes around a PC, as x86's show_opcodes() prints them.

    :return: the bytes and the PC's offset in them, or ``None`` when the PC's own page
        cannot be read. Bytes before the PC on an unreadable page are left out.
    """
    try:
        after = prog.read(pc, CODE_AFTER)
    except drgn.FaultError:
        return None
    for before in (CODE_BEFORE, pc % 4096):
        try:
            return prog.read(pc - before, before) + after, before
        except drgn.FaultError:
            continue
    return after, 0


def _pt_regs(prog: drgn.Program, registers: dict[str, int]) -> drgn.Object:
    value = {
        member: registers[name.upper()]
        for name, member in _PT_REGS.items()
        if name.upper() in registers
    }
    value["ip"] = registers["RIP"]
    return drgn.Object(prog, "struct pt_regs", value=value)


def registers_trace(prog: drgn.Program, registers: dict[str, int]) -> drgn.StackTrace:
    """Return the stack trace that starts from a register dump (x86-64's ``struct pt_regs``).

    Only the first frame needs no memory: it is what a log's registers give, without a dump.

    :param registers: upper-case dump names (``RAX``...) and ``RIP``.
    """
    return prog.stack_trace(_pt_regs(prog, registers))


def _frame_values(prog: drgn.Program, registers: dict[str, int]) -> dict[tuple[str, str], int]:
    # Every integer or pointer variable of the frames at the PC (the inline chain),
    # evaluated from these registers alone.
    out: dict[tuple[str, str], int] = {}
    trace = registers_trace(prog, registers)
    pc = registers["RIP"]
    for frame in trace:
        if frame.pc != pc:
            break
        for name in frame.locals():
            try:
                obj = frame[name]
                if obj.absent_ or obj.address_ is not None:
                    continue  # optimised out, or in memory (not in a register)
                out[(frame.name, name)] = obj.value_()
            except (drgn.FaultError, LookupError, TypeError, ValueError):
                continue
        if not frame.is_inline:
            break
    return out


def register_variables(
    prog: drgn.Program, registers: dict[str, int], register: str
) -> list[Variable]:
    """Return the variables of the faulting frame (and its inline chain) held in a register.

    Only x86-64 (its ``struct pt_regs``). A variable whose value moves with the register
    when the register alone is changed is held in it.

    :param registers: the faulting frame's registers (:attr:`FaultFrame.registers`).
    :param register: ``RBX``, ``RDI``...
    """
    if register not in registers or register.lower() not in _PT_REGS:
        return []
    base = _frame_values(prog, registers)
    moved = dict(registers)
    moved[register] = (registers[register] + _DELTA) & ((1 << 64) - 1)
    after = _frame_values(prog, moved)
    out = []
    trace = registers_trace(prog, registers)
    types: dict[tuple[str, str], str] = {}
    for frame in trace:
        if frame.pc != registers["RIP"]:
            break
        for name in frame.locals():
            with contextlib.suppress(LookupError, drgn.FaultError):
                types[(frame.name, name)] = frame[name].type_.type_name()
        if not frame.is_inline:
            break
    for key, value in base.items():
        if value == registers[register] and after.get(key) == moved[register]:
            out.append(Variable(key[1], types.get(key, "?"), key[0], value))
    return out


def local_at(trace: drgn.StackTrace, index: int, address: int) -> Variable | None:
    """Return the local of frame ``index`` (or its inline chain) whose stack slot is ``address``."""
    pc = trace[index].pc
    for frame in list(trace)[index:]:
        if frame.pc != pc:
            break
        for name in frame.locals():
            try:
                obj = frame[name]
            except (LookupError, drgn.FaultError):
                continue
            if obj.address_ == address:
                value = None
                with contextlib.suppress(drgn.FaultError, TypeError, ValueError):
                    value = obj.value_()
                return Variable(name, obj.type_.type_name(), frame.name, value)
        if not frame.is_inline:
            break
    return None


def member_name(prog: drgn.Program, type_name: str, offset: int) -> str | None:
    """Return the member of a struct (or what a pointer points to) at a byte offset.

    :param type_name: ``struct kassist_item *`` or ``struct kassist_item``.
    :return: ``id``, ``node.next``, or ``None`` when the type or offset is unknown.
    """
    try:
        t = prog.type(type_name)
        while t.kind == drgn.TypeKind.TYPEDEF:
            t = t.type
        if t.kind == drgn.TypeKind.POINTER:
            t = t.type
        return member_at_offset(t, offset)
    except (LookupError, ValueError, TypeError, SyntaxError):
        return None


def pointee_type(prog: drgn.Program, type_name: str, member: str) -> str | None:
    """Return the type of ``member`` of the struct ``type_name`` points to (or is)."""
    try:
        t = prog.type(type_name)
        if t.kind == drgn.TypeKind.POINTER:
            t = t.type
        return str(t.member(member).type.type_name())
    except (LookupError, ValueError, TypeError, SyntaxError):
        return None


def identify(prog: drgn.Program, address: int) -> Identity:
    """Say what an address is: a symbol, a task stack, a slab object (allocated or free)..."""
    try:
        description = identify_address(prog, address)
    except (drgn.FaultError, LookupError, ValueError, OverflowError):
        description = None
    slab = None
    if address >= KERNEL_SPACE_START:
        try:
            info = slab_object_info(prog, address)
        except (drgn.FaultError, LookupError, ValueError, OverflowError):
            info = None
        if info is not None:
            cache = info.slab_cache
            slab = SlabObject(
                cache=cache.name.string_().decode(errors="replace"),
                address=info.address,
                offset=address - info.address,
                allocated=info.allocated,
                size=cache.object_size.value_(),
                stores_user=bool(cache.flags.value_() & SLAB_STORE_USER),
            )
    return Identity(address, description, slab)


def _track_frames(prog: drgn.Program, track: drgn.Object) -> list[str]:
    from drgn.helpers.linux.stackdepot import stack_depot_fetch

    # track.addr is the caller of the allocator or free (set_track()); the depot's stack
    # may start above it (its frames are skipped), so it leads when missing.
    out = []
    with contextlib.suppress(LookupError, drgn.FaultError):
        out.append(prog.symbol(track.addr.value_()).name)
    try:
        trace = stack_depot_fetch(track.handle)
    except (AttributeError, LookupError, drgn.FaultError):  # no CONFIG_STACKDEPOT
        trace = None
    for frame in trace or ():
        name = frame.name
        if not out or out[-1] != name:
            out.append(name)
    if len(out) > 1 and out[0] in out[1:]:
        out.pop(0)  # the depot's stack holds it already
    return out


def slab_tracks(prog: drgn.Program, obj: SlabObject) -> dict[str, Track]:
    """Return slub_debug's allocation and free tracks of a slab object (``alloc``/``free``).

    ``struct track`` pairs follow the object's data (``get_track()``, mm/slub.c): at
    ``s->inuse``, plus a pointer when the free pointer is stored outside the object.

    :return: an empty dict when the cache keeps no tracks (no ``slub_debug=U``).
    """
    if not obj.stores_user:
        return {}
    cache = next(
        (c for c in _caches(prog) if c.name.string_().decode(errors="replace") == obj.cache), None
    )
    if cache is None:
        return {}
    inuse = cache.inuse.value_()
    info_end = inuse + (8 if cache.offset.value_() >= inuse else 0)
    track_type = prog.type("struct track")
    out = {}
    for i, name in enumerate(("alloc", "free")):
        t = drgn.Object(prog, track_type, address=obj.address + info_end + i * track_type.size)
        try:
            out[name] = Track(
                pid=t.pid.value_(),
                cpu=t.cpu.value_(),
                when=t.when.value_(),
                frames=_track_frames(prog, t),
            )
        except drgn.FaultError:
            continue
    return out


def _caches(prog: drgn.Program) -> list[drgn.Object]:
    from drgn.helpers.linux.slab import for_each_slab_cache

    return list(for_each_slab_cache(prog))
