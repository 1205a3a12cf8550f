"""``kassist vmcore explain``: the verdict first, then why, each line backed by a fact.

From a vmcore (drgn, :mod:`probes.drgn.explain`): the faulting instruction decoded
from the dump's own memory, its registers, the variable and struct member the faulting
address belongs to (DWARF), what every register and the fault address are
(``identify_address``: symbol, task stack, slab object allocated or free), the object's
allocation and free stacks where slub_debug kept them, whether the log's trace and
drgn's unwound trace agree frame by frame, how much of the dump could be read, and the
assessment (:mod:`assistant.rootcause.assess`).

:func:`explain_target` gathers; :func:`explanation_markdown` and
:meth:`Explanation.to_dict` (schema ``kassist.explain/1``) print.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.drafters.markdown import md_inline
from assistant.rootcause.assess import Assessment, ObjectStacks, assess
from assistant.rootcause.code import CodeBytes, CodeError, Instruction, MemOperand, decode
from assistant.rootcause.fault import FaultAnalysis, relate
from assistant.rootcause.registers import Registers, fault_address
from assistant.triage.model import Crash

if TYPE_CHECKING:
    import drgn

    from probes.drgn import Target
    from probes.drgn.explain import FaultFrame, SourcePlace, Variable

EXPLAIN_SCHEMA = "kassist.explain/1"
#: Register values worth identifying: kernel addresses (the upper half).
_KERNEL_HALF = 1 << 63


@dataclass
class Fact:
    """One line of the explanation and where it comes from.

    :param text: the line.
    :param source: ``dump registers``, ``dump memory``, ``DWARF``, ``slub_debug``, ``log``...
    """

    text: str
    source: str


@dataclass
class MemberFinding:
    """The faulting access named in C.

    :param pointer: how the base register's value is named: ``conn``, ``conn->item``.
    :param type: the pointer's C type (``struct kassist_item *``).
    :param member: the member accessed (``id``), or ``None`` when the offset is not one.
    :param offset: the byte offset of the access.
    :param how: which fact named it (``RDI holds conn (DWARF location at the PC)``).
    :param variable_value: the value of the variable the chain starts from (``conn``):
        the object whose state matters.
    """

    pointer: str
    type: str
    member: str | None
    offset: int
    how: str
    variable_value: int | None = None

    def text(self) -> str:
        """``member at offset 0x8 of struct kassist_item: id``."""
        struct = self.type.removesuffix("*").strip()
        what = f"member at offset 0x{self.offset:x} of {struct}"
        return f"{what}: {self.member}" if self.member else f"{what} (no member there)"

    def to_dict(self) -> dict[str, Any]:
        """Return it as JSON-ready data, with its :meth:`text`."""
        return asdict(self) | {"text": self.text()}


@dataclass
class Explanation:
    """Everything ``vmcore explain`` says (``kassist.explain/1``)."""

    source: str
    verdict: str
    title: str | None
    function: str | None = None
    location: str | None = None
    chain: list[str] = field(default_factory=list)
    fault: FaultAnalysis | None = None
    member: MemberFinding | None = None
    facts: list[Fact] = field(default_factory=list)
    identities: list[dict[str, Any]] = field(default_factory=list)
    object_stacks: dict[str, dict[str, Any]] = field(default_factory=dict)
    trace_agreement: dict[str, Any] = field(default_factory=dict)
    readable: dict[str, Any] = field(default_factory=dict)
    assessment: Assessment | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the ``kassist.explain/1`` JSON object."""
        return {
            "schema": EXPLAIN_SCHEMA,
            "source": self.source,
            "verdict": self.verdict,
            "title": self.title,
            "function": self.function,
            "location": self.location,
            "inline_chain": self.chain,
            "fault": self.fault.to_dict() if self.fault else None,
            "member": self.member.to_dict() if self.member else None,
            "facts": [asdict(f) for f in self.facts],
            "identities": self.identities,
            "object_stacks": self.object_stacks,
            "trace_agreement": self.trace_agreement,
            "readable": self.readable,
            "assessment": self.assessment.to_dict() if self.assessment else None,
            "notes": self.notes,
        }


def chain_text(places: Sequence[SourcePlace]) -> list[str]:
    """Return an inline chain as lines, innermost first: ``func file:line [inline]``."""
    return [f"{p.function} {p.file}:{p.line}" + (" [inline]" if p.inline else "") for p in places]


# --- naming the faulting access ----------------------------------------------------


def _pointer_member(
    prog: drgn.Program, type_name: str, offset: int, pointer: str, how: str, value: int | None
) -> MemberFinding:
    from probes.drgn.explain import member_name

    member = member_name(prog, type_name, offset)
    return MemberFinding(pointer, type_name, member, offset, how, value)


_QUALIFIERS = re.compile(r"(\s+(?:volatile|const|restrict))+$")


def _pointer(type_name: str) -> str | None:
    # "struct kassist_item * volatile" -> "struct kassist_item *"; None if not a pointer.
    bare = _QUALIFIERS.sub("", type_name)
    return bare if bare.endswith("*") else None


def _writer_before(analysis: FaultAnalysis, register: str) -> int | None:
    # The last instruction before the faulting one that writes the register (by index
    # into decoded.before), or None when nothing in the decoded bytes does.
    assert analysis.decoded is not None
    for i in range(len(analysis.decoded.before) - 1, -1, -1):
        if register in analysis.decoded.before[i].writes:
            return i
    return None


def _first_pointer(variables: Sequence[Variable]) -> tuple[Variable, str] | None:
    # The first variable of pointer type and that type, qualifiers dropped.
    for v in variables:
        ptype = _pointer(v.type)
        if ptype:
            return v, ptype
    return None


def _named_by_register(
    prog: drgn.Program, regs: dict[str, int], base: str, disp: int
) -> MemberFinding | None:
    # The base register is a pointer variable's DWARF location at the PC.
    from probes.drgn.explain import register_variables

    held = _first_pointer(register_variables(prog, regs, base))
    if held is None:
        return None
    v, ptype = held
    how = f"{base} holds {v.name} ({v.type}), its DWARF location at the PC"
    return _pointer_member(prog, ptype, disp, v.name, how, v.value)


def _base_load(
    analysis: FaultAnalysis, regs: dict[str, int], base: str
) -> tuple[Instruction, MemOperand] | str:
    # The decoded load that set the base register, and its memory operand, whose own
    # base register still holds its value at the fault; or the line that says why not.
    assert analysis.decoded is not None
    at = _writer_before(analysis, base)
    if at is None:
        return f"no variable is in {base} at the PC, and no decoded instruction sets it"
    load = analysis.decoded.before[at]
    src = load.memory
    if not load.loads or src is None or src.base is None or src.index is not None:
        return f"{base} was set by `{load.text}`, not a load DWARF can name"
    between = analysis.decoded.before[at + 1 :]
    if any(src.base in i.writes for i in between) or src.base not in regs:
        return f"{src.base} changed after `{load.text}`: its value then is not known"
    return load, src


def _named_by_slot(
    prog: drgn.Program,
    trace: drgn.StackTrace,
    frame: FaultFrame,
    load: Instruction,
    src: MemOperand,
    mem: MemOperand,
) -> MemberFinding | None:
    # The base register was loaded from a pointer local's stack slot.
    from probes.drgn.explain import local_at

    assert src.base is not None
    slot = (frame.registers[src.base] + src.disp) & ((1 << 64) - 1)
    local = local_at(trace, frame.index, slot)
    ptype = _pointer(local.type) if local is not None else None
    if local is None or ptype is None:
        return None
    how = f"`{load.text}` loaded {mem.base} from the stack slot of {local.name}"
    return _pointer_member(prog, ptype, mem.disp, local.name, how, local.value)


def _named_by_member(
    prog: drgn.Program,
    regs: dict[str, int],
    load: Instruction,
    src: MemOperand,
    mem: MemOperand,
) -> MemberFinding | None:
    # The base register was loaded from a pointer member of the struct a register
    # variable points to (``conn->item``).
    from probes.drgn.explain import pointee_type, register_variables

    assert src.base is not None
    outer = _first_pointer(register_variables(prog, regs, src.base))
    if outer is None:
        return None
    v, vtype = outer
    member = _pointer_member(prog, vtype, src.disp, v.name, "", v.value).member
    if not member or "." in member:
        return None
    inner = pointee_type(prog, vtype, member)
    inner = _pointer(inner) if inner else None
    if inner is None:
        return None
    how = f"`{load.text}` loaded {mem.base} = {v.name}->{member}; {src.base} holds {v.name}"
    return _pointer_member(prog, inner, mem.disp, f"{v.name}->{member}", how, v.value)


def name_access(
    prog: drgn.Program, trace: drgn.StackTrace, frame: FaultFrame, analysis: FaultAnalysis
) -> tuple[MemberFinding | None, str | None]:
    """Name the faulting access's base pointer and member with DWARF.

    The base register is a variable's location at the PC; or it was loaded, by an
    instruction of the decoded bytes, from a variable's stack slot, or from a member of a
    struct a register variable points to (``conn->item``).

    :return: the finding, or ``None`` and the line that says why not.
    """
    insn = analysis.instruction
    mem = insn.memory if insn else None
    if mem is None or mem.base is None or mem.base == "RIP" or mem.index is not None:
        return None, "the faulting instruction has no plain base-register operand to name"
    regs = frame.registers
    found = _named_by_register(prog, regs, mem.base, mem.disp)
    if found is not None:
        return found, None
    loaded = _base_load(analysis, regs, mem.base)
    if isinstance(loaded, str):
        return None, loaded
    load, src = loaded
    found = _named_by_slot(prog, trace, frame, load, src, mem) or _named_by_member(
        prog, regs, load, src, mem
    )
    if found is not None:
        return found, None
    return None, f"{mem.base} was loaded by `{load.text}` from memory no variable names"


# --- the trace, dmesg's against drgn's -----------------------------------------------

_SUFFIX = re.compile(r"(\.(cold|isra|constprop|part|lto_priv)(\.\d+)*|_after_hwframe)$")


def _norm(name: str | None) -> str:
    return _SUFFIX.sub("", name or "?")


def trace_agreement(crash: Crash | None, trace: drgn.StackTrace, index: int) -> dict[str, Any]:
    """Compare the log's call trace with drgn's unwinding, frame by frame.

    The log's trace (ORC, printed at the oops) names no inlined function; drgn's does,
    so drgn's inline frames are left out of the comparison.
    """
    drgn_names = []
    unreliable = []
    for i, frame in enumerate(list(trace)[index:]):
        if frame.pc < _KERNEL_HALF:
            break
        if frame.is_inline:
            continue
        try:
            name = frame.symbol().name
        except LookupError:
            unreliable.append(
                f"frame {index + i} at 0x{frame.pc:x} is in no symbol: a call to a bad "
                "address, or a corrupted stack; frames below it are not trusted"
            )
            break
        if frame.interrupted and i > 0:
            unreliable.append(
                f"frame {index + i} ({name}) was interrupted: an IRQ or exception frame"
            )
        drgn_names.append(_norm(name))
    log_names = [_norm(f.function) for f in crash.call_trace] if crash else []
    # Both traces end at the same entry (the syscall, the kthread); the log's may start
    # elsewhere (printed from dump_stack() before the panic, or with more than one stack
    # in the report), so they are compared from their outermost frames inwards.
    compared = min(len(log_names), len(drgn_names))
    pairs = list(zip(reversed(log_names), reversed(drgn_names), strict=False))
    first_diff = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
    return {
        "log_frames": log_names,
        "drgn_frames": drgn_names,
        "agree": first_diff is None and compared > 0,
        "agreeing_frames": compared if first_diff is None else first_diff,
        "first_difference": None if first_diff is None else list(pairs[first_diff]),
        "unreliable": unreliable,
    }


# --- how much of the dump could be read ------------------------------------------------

#: makedumpfile's dump level bits (``-d``): the page types left out.
DUMP_LEVEL_BITS = (
    (1, "zero pages"),
    (2, "cache pages"),
    (4, "private cache pages"),
    (8, "user pages"),
    (16, "free pages"),
)


def readable(path: str, fmt: str | None) -> dict[str, Any]:
    """Say how much of a dump holds memory: its format, dump level, pages present."""
    from probes.drgn.kdump import dump_coverage

    out: dict[str, Any] = {"format": fmt}
    if fmt != "kdump-compressed":
        return out
    cov = dump_coverage(path)
    if cov is None:
        return out
    level, present, total = cov
    out.update(
        dump_level=level,
        excluded=[name for bit, name in DUMP_LEVEL_BITS if level & bit],
        pages_present=present,
        pages_total=total,
    )
    return out


#: Families whose "faulting" frame is where a timer interrupted a loop, not a fault.
_STALLS = ("soft-lockup", "hang", "rcu-stall")

# --- putting it together ---------------------------------------------------------------


def _identities(
    prog: drgn.Program, regs: dict[str, int], fault: int | None
) -> list[dict[str, Any]]:
    from probes.drgn.explain import identify

    wanted = [
        (name, value)
        for name, value in regs.items()
        if value >= _KERNEL_HALF and name not in ("RIP", "CS", "SS", "RFLAGS")
    ]
    if fault is not None:
        wanted.insert(0, ("fault address", fault))
    out = []
    for name, value in wanted:
        ident = identify(prog, value)
        if ident.description is None and ident.slab is None:
            continue
        out.append(
            {
                "what": name,
                "address": f"0x{value:x}",
                "description": ident.description,
                "slab": asdict(ident.slab) if ident.slab else None,
            }
        )
    return out


def _object_stacks(
    prog: drgn.Program, pointers: list[int]
) -> tuple[dict[str, dict[str, Any]], ObjectStacks | None, str | None]:
    from probes.drgn.explain import identify, slab_tracks

    for value in pointers:
        ident = identify(prog, value)
        if ident.slab is None:
            continue
        slab = ident.slab
        state = {True: "allocated", False: "free", None: "in an unknown state"}[slab.allocated]
        article = "an" if state[0] in "aeiou" else "a"
        line = f"0x{value:x} is {article} {state} object of cache {slab.cache} (+0x{slab.offset:x})"
        tracks = slab_tracks(prog, slab)
        stacks = {name: asdict(t) for name, t in tracks.items()}
        obj = ObjectStacks(
            cache=slab.cache,
            allocated=tracks["alloc"].frames if "alloc" in tracks else (),
            freed=tracks["free"].frames if "free" in tracks and slab.allocated is False else (),
            source="the dump (slub_debug tracking)",
        )
        if not tracks and slab.stores_user:
            line += (
                "; its alloc/free stacks (slub_debug=U) could not be read: the object's "
                "memory is not in the dump (an excluded page?)"
            )
        elif not tracks:
            line += "; the cache keeps no alloc/free stacks (boot with slub_debug=U to get them)"
        return stacks, obj, line
    return {}, None, None


def _verdict(
    crash: Crash | None,
    member: MemberFinding | None,
    obj_line: str | None,
    analysis: FaultAnalysis | None,
) -> str:
    head = crash.title if crash else "a crash"
    parts = [head]
    if member is not None:
        parts.append(f"{member.pointer}: {member.text()}")
    if analysis is not None and analysis.registers:
        named = [r for r in analysis.registers if r.role == "base" and r.kind.kind != "kernel"]
        if named:
            r = named[0]
            parts.append(f"{r.register} = 0x{r.value:x} ({r.kind.name or r.kind.meaning})")
    if obj_line:
        parts.append(obj_line)
    return "; ".join(parts)


def _source_line(path: str, line: int) -> str | None:
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return None
    return lines[line - 1] if 0 < line <= len(lines) else None


def _decode_at(
    prog: drgn.Program, frame: FaultFrame, interrupted: bool, analysis: FaultAnalysis
) -> None:
    # Decode the faulting instruction from the dump's memory into the analysis, or say
    # in its notes why there is none.
    from probes.drgn.explain import code_at

    if not interrupted:
        analysis.notes.append(
            f"no faulting instruction: {frame.function} called the panic itself (no exception "
            "frame), so there is no instruction to decode"
        )
        return
    code = code_at(prog, frame.pc)
    if code is None:
        analysis.notes.append(f"the code at 0x{frame.pc:x} is not in the dump: not decoded")
        return
    data, marker = code
    try:
        analysis.decoded = decode(CodeBytes("x86_64", data, marker, 1))
        relate(analysis)
    except CodeError as exc:
        analysis.notes.append(f"the dump's code bytes at the PC: {exc}")


def _fault_facts(analysis: FaultAnalysis, frame: FaultFrame, stalled: bool) -> list[Fact]:
    # The faulting instruction, the address it used, how the log's fault address relates
    # to it, and what each register holds.
    facts = []
    insn = analysis.instruction
    if insn is not None:
        what = "interrupted" if stalled else "faulting"
        where = f"{frame.function}+0x{frame.offset or 0:x}"
        facts.append(Fact(f"{what} instruction at {where}: `{insn.text}`", "dump memory"))
    if analysis.expression and analysis.address is not None:
        kind = analysis.address_kind
        meaning = f" ({kind.meaning})" if kind else ""
        text = f"address {analysis.expression} = 0x{analysis.address:x}{meaning}"
        facts.append(Fact(text, "dump registers"))
    if analysis.relation:
        facts.append(Fact(analysis.relation, "log + dump registers"))
    for note in analysis.registers:
        name = f" ({note.kind.name})" if note.kind.name else ""
        text = f"{note.register} = 0x{note.value:x}: {note.kind.meaning}{name}"
        facts.append(Fact(text, "dump registers"))
    return facts


def _object_pointers(
    member: MemberFinding | None, analysis: FaultAnalysis, regs: dict[str, int]
) -> list[int]:
    # The object whose state matters: the variable the access starts from, then the fault
    # address, the base register, the other registers (kernel addresses, each once).
    pointers = []
    if member is not None and member.variable_value is not None:
        pointers.append(member.variable_value)
    insn = analysis.instruction
    mem = insn.memory if insn else None
    if mem is not None and mem.base in regs:
        pointers.append(regs[mem.base])
    pointers += [regs[r] for r in regs if r not in ("RIP",)]
    if analysis.fault is not None:
        pointers.insert(1 if member else 0, analysis.fault.address)
    return [p for p in dict.fromkeys(pointers) if p >= _KERNEL_HALF]


def _stack_facts(object_stacks: dict[str, dict[str, Any]]) -> list[Fact]:
    # Who allocated and who freed the object (slub_debug's tracks).
    facts = []
    for name, stack in object_stacks.items():
        what = "allocated" if name == "alloc" else "freed"
        frames = " < ".join(stack["frames"][:6])
        text = f"{what} by pid {stack['pid']} on cpu {stack['cpu']}: {frames}"
        facts.append(Fact(text, "slub_debug"))
    return facts


def _trace_fact(ta: dict[str, Any]) -> Fact | None:
    # How far the log's trace and drgn's agree (see :func:`trace_agreement`).
    if not ta["log_frames"]:
        return None
    compared = min(len(ta["log_frames"]), len(ta["drgn_frames"]))
    text = f"log and drgn traces agree on {ta['agreeing_frames']} of {compared} frames"
    if not ta["agree"]:
        text += " from the outermost (then the log has {} where drgn has {})".format(
            *ta["first_difference"]
        )
    return Fact(text, "log + drgn unwinder")


def _add_member(
    out: Explanation,
    prog: drgn.Program,
    trace: drgn.StackTrace,
    frame: FaultFrame,
    analysis: FaultAnalysis,
) -> None:
    # Name the faulting access in C (a fact), or say why not (a note).
    if analysis.instruction is None:
        return
    out.member, why = name_access(prog, trace, frame, analysis)
    if out.member is not None:
        m = out.member
        out.facts.append(Fact(f"{m.pointer}: {m.text()} ({m.how})", "DWARF"))
    elif why:
        out.notes.append(why)


def _add_identities(out: Explanation, prog: drgn.Program, frame: FaultFrame) -> None:
    # What each register and the fault address are.
    fault = out.fault.fault if out.fault else None
    out.identities = _identities(prog, frame.registers, fault.address if fault else None)
    for ident in out.identities:
        if ident["description"]:
            text = f"{ident['what']} {ident['address']}: {ident['description']}"
            out.facts.append(Fact(text, "identify_address"))


def explain_target(target: Target, crash: Crash | None, log_report: str | None) -> Explanation:
    """Explain the crash in an opened dump.

    :param target: the opened vmcore (debug info loaded).
    :param crash: the crash triage found in the dump's printk buffer, if any.
    :param log_report: that crash's report text (its fault address, its Code: line).
    """
    from probes.drgn.explain import fault_frame

    prog = target.prog
    out = Explanation(source=target.source, verdict="", title=crash.title if crash else None)
    out.readable = readable(target.source, target.format.value if target.format else None)
    found = fault_frame(prog)
    if found is None:
        out.verdict = "no crashed thread in the dump: nothing faulted to explain"
        out.notes.append("drgn found no crashed thread (a live kernel, or a dump taken by hand)")
        return out
    trace, frame = found
    out.function = frame.function
    place = frame.chain[0] if frame.chain else None
    if place and place.file:
        out.location = f"{place.file}:{place.line}"
    out.chain = chain_text(frame.chain)
    regs = Registers("x86_64", {k: v for k, v in frame.registers.items() if k != "RIP"}, frame.pc)
    analysis = FaultAnalysis(arch="x86_64", regs=regs, fault=fault_address(log_report or "", regs))
    _decode_at(prog, frame, trace[frame.index].interrupted, analysis)
    out.fault = analysis
    stalled = crash is not None and crash.crash_facts().family in _STALLS
    out.facts += _fault_facts(analysis, frame, stalled)
    _add_member(out, prog, trace, frame, analysis)
    _add_identities(out, prog, frame)
    pointers = _object_pointers(out.member, analysis, frame.registers)
    out.object_stacks, obj, obj_line = _object_stacks(prog, pointers)
    if obj_line:
        out.facts.append(Fact(obj_line, "slab (drgn)"))
    out.facts += _stack_facts(out.object_stacks)
    out.trace_agreement = trace_agreement(crash, trace, frame.index)
    trace_fact = _trace_fact(out.trace_agreement)
    if trace_fact is not None:
        out.facts.append(trace_fact)
    out.notes += out.trace_agreement["unreliable"]
    if crash is not None:
        out.assessment = assess(crash, analysis, None, obj, _source_line)
    out.verdict = _verdict(crash, out.member, obj_line, analysis)
    return out


def explanation_markdown(e: Explanation) -> str:
    """Render an explanation: the verdict, then the facts, then what could not be said."""
    out = [f"## Explanation\n\n**{md_inline(e.verdict)}**\n"]
    if e.location or e.chain:
        out.append(
            f"- Faulted in `{md_inline(e.function or '?')}` at `{md_inline(e.location or '?')}`"
        )
        for link in e.chain[1:]:
            out.append(f"  - inlined into `{md_inline(link)}`")
    for fact in e.facts:
        out.append(f"- {md_inline(fact.text)} _({fact.source})_")
    r = e.readable
    if r.get("pages_total"):
        excluded = ", ".join(r.get("excluded") or []) or "nothing"
        out.append(
            f"- Dump: {r['format']}, {r['pages_present']} of {r['pages_total']} pages "
            f"present (dump level {r['dump_level']}: excluded {excluded}) _(dump header)_"
        )
    elif r.get("format"):
        out.append(f"- Dump: {r['format']} _(dump header)_")
    if e.assessment is not None:
        out.append("\n| Assessment | Verdict | Why |\n|---|---|---|")
        for what, verdict, why in e.assessment.rows():
            out.append(f"| {what} | {md_inline(verdict)} | {md_inline(why)} |")
    if e.notes:
        out.append("\nNot computed:\n")
        out += [f"- {md_inline(n)}" for n in e.notes]
    return "\n".join(out) + "\n"
