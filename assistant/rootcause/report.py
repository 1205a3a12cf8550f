"""What the root-cause analysis adds to a crash's JSON and its bug report, from the log.

One function each for the triage JSON (``crash.fault``, ``crash.assessment``) and the
bug report's Markdown section, so that triage, the report drafter and the chat call the
same thing. A :class:`RootcauseContext` carries what they may add to the log: the
knowledge base (the guilty file's MAINTAINERS sections, which ``actionable`` needs) and
the kernel's debug files (the faulting PC's source and the member, ``fault.dwarf``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.drafters.markdown import md_inline
from assistant.errors import NotAvailable
from assistant.rootcause.assess import Assessment, assess, maintainer_sections, needs_maintainers
from assistant.rootcause.fault import FaultAnalysis, analyse_report
from assistant.triage.model import Crash

if TYPE_CHECKING:
    from assistant.knowledge import KnowledgeBase
    from assistant.rootcause.debuginfo import SourceFinding
    from probes.drgn.dwarf import DebugFiles


@dataclass
class RootcauseContext:
    """What the analysis of a log's crash may use besides the log.

    :param kb: the knowledge base, or ``None``: the guilty file's MAINTAINERS sections.
    :param debug: the kernel's debug files (``--vmlinux``/``--debug-dir``), or ``None``.
    :param notes: why what was given could not be used, one line each (for the user).
    """

    kb: KnowledgeBase | None = None
    debug: DebugFiles | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Rootcause:
    """The analysis of one crash from its log.

    :param fault: the faulting instruction related to the registers, or ``None``.
    :param assessment: actionable, trigger, impact, privileges.
    :param source: what the debug files say of the faulting PC, or ``None`` without them.
    """

    fault: FaultAnalysis | None
    assessment: Assessment
    source: SourceFinding | None = None


def log_context(
    crashes: Sequence[Crash],
    vmlinux: str | None = None,
    debug_dir: str | None = None,
    kb: KnowledgeBase | None = None,
    with_kb: bool = True,
) -> RootcauseContext:
    """Open what a log's crashes' analysis may use: the debug files, and symbolise them.

    With ``vmlinux`` or ``debug_dir`` the kernel's debug files are opened
    (:func:`assistant.rootcause.debuginfo.open_log_debug`) and the crashes' traces
    symbolised with them (their guilty file, which MAINTAINERS is looked up by).

    :param kb: the knowledge base; opened here (once per process; ``None`` when not
        built) if ``with_kb`` and a crash's "actionable" turns on its MAINTAINERS sections.
    :raises InputError: the debug files are missing or of another kernel (one line).
    :raises NotAvailable: eu-addr2line is not installed. A vmlinux that is not a
        kernel's with debug info only symbolises (:attr:`RootcauseContext.notes` says so).
    """
    out = RootcauseContext(kb)
    if vmlinux is not None or debug_dir is not None:
        from assistant.rootcause.debuginfo import open_log_debug
        from assistant.triage.symbolize import symbolize_crash

        try:
            out.debug = open_log_debug(crashes, vmlinux, debug_dir)
            vmlinux = out.debug.vmlinux
        except NotAvailable as exc:  # not a kernel's: eu-addr2line still reads its lines
            out.notes.append(f"the faulting member is not named: {exc.message}")
        for crash in crashes:
            symbolize_crash(crash, Path(str(vmlinux)), Path(debug_dir) if debug_dir else None)
    if out.kb is None and with_kb and any(needs_maintainers(c) for c in crashes):
        out.kb = _knowledge()
    return out


@functools.cache
def _knowledge() -> KnowledgeBase | None:
    # Opened once per process: `triage --format jsonl` calls log_context per input.
    from assistant.knowledge import try_open

    return try_open()


def crash_rootcause(crash: Crash, context: RootcauseContext | None = None) -> Rootcause:
    """Analyse a crash's faulting instruction and assess it.

    :param context: the knowledge base and debug files at hand, if any.
    """
    context = context or RootcauseContext()
    fault = analyse_report(crash.report)
    source = None
    if context.debug is not None and fault is not None:
        from assistant.rootcause.debuginfo import explain_log

        source = explain_log(crash, fault, context.debug)
    assessment = assess(crash, fault, maintainer_sections(crash, context.kb))
    return Rootcause(fault, assessment, source)


def rootcause_dict(crash: Crash, context: RootcauseContext | None = None) -> dict[str, Any]:
    """Return ``{"fault": ..., "assessment": ...}`` for ``kassist.triage/1``'s crash object.

    ``fault.dwarf`` holds the debug files' answer when ``context`` has them.
    """
    found = crash_rootcause(crash, context)
    fault = found.fault.to_dict() if found.fault else None
    if fault is not None and found.source is not None:
        fault["dwarf"] = found.source.to_dict()
    return {"fault": fault, "assessment": found.assessment.to_dict()}


def fault_markdown(fault: FaultAnalysis | None, source: SourceFinding | None = None) -> str:
    """Return the report's "Faulting instruction" section (empty when there is nothing).

    :param source: what the debug files say of the faulting PC (its lines follow).
    """
    if fault is None:
        return ""
    out = []
    if fault.decoded is not None:
        d = fault.decoded
        lines = [
            f"{'*' if i.offset == 0 else ' '} {i.offset:+4d}: {i.text}"
            for i in [*d.before[-4:], d.faulting, *d.after[:2]]
        ]
        out.append("```\n" + "\n".join(lines) + "\n```")
    if fault.trap:
        out.append(f"- {md_inline(fault.trap)}")
    if fault.expression and fault.address is not None:
        kind = f" ({md_inline(fault.address_kind.meaning)})" if fault.address_kind else ""
        out.append(f"- Address: `{fault.expression}` = `0x{fault.address:x}`{kind}")
    if fault.relation:
        out.append(f"- {md_inline(fault.relation)}")
    for r in fault.registers:
        name = f" = {r.kind.name}" if r.kind.name else ""
        out.append(f"- `{r.register}` = `0x{r.value:x}`{name}: {md_inline(r.kind.meaning)}")
    out += [f"- _Not computed: {md_inline(n)}_" for n in fault.notes]
    if source is not None:
        from assistant.rootcause.debuginfo import source_markdown

        out += source_markdown(source)
    if not out:
        return ""
    return "\n## Faulting instruction\n\n" + "\n".join(out) + "\n"


def assessment_markdown(assessment: Assessment) -> str:
    """Return the report's short "Assessment" table, each verdict with its first reason."""
    rows = "\n".join(
        f"| {what} | {md_inline(v)} | {md_inline(why)} |" for what, v, why in assessment.rows()
    )
    return f"\n## Assessment\n\n| | Verdict | Why |\n|---|---|---|\n{rows}\n"


def rootcause_markdown(crash: Crash, context: RootcauseContext | None = None) -> str:
    """Return the report's "Faulting instruction" and "Assessment" sections."""
    found = crash_rootcause(crash, context)
    return fault_markdown(found.fault, found.source) + assessment_markdown(found.assessment)
