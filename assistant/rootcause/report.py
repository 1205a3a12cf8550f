"""What the root-cause analysis adds to a crash's JSON and its bug report, from the log alone.

One function each for the triage JSON (``crash.fault``, ``crash.assessment``) and the
bug report's Markdown section, so that triage, the report drafter and the chat call the
same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from assistant.drafters.markdown import md_inline
from assistant.rootcause.assess import Assessment, assess
from assistant.rootcause.fault import FaultAnalysis, analyse_report
from assistant.triage.model import Crash


def crash_rootcause(
    crash: Crash, sections: Sequence[str] | None = None
) -> tuple[FaultAnalysis | None, Assessment]:
    """Analyse a crash's faulting instruction and assess it.

    :param sections: the guilty file's MAINTAINERS sections, when the knowledge base knows.
    """
    fault = analyse_report(crash.report)
    return fault, assess(crash, fault, sections)


def rootcause_dict(crash: Crash) -> dict[str, Any]:
    """Return ``{"fault": ..., "assessment": ...}`` for ``kassist.triage/1``'s crash object."""
    fault, assessment = crash_rootcause(crash)
    return {"fault": fault.to_dict() if fault else None, "assessment": assessment.to_dict()}


def fault_markdown(fault: FaultAnalysis | None) -> str:
    """Return the report's "Faulting instruction" section (empty when there is nothing)."""
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
    if not out:
        return ""
    return "\n## Faulting instruction\n\n" + "\n".join(out) + "\n"


def assessment_markdown(assessment: Assessment) -> str:
    """Return the report's short "Assessment" table, each verdict with its first reason."""
    rows = "\n".join(
        f"| {what} | {md_inline(v)} | {md_inline(why)} |" for what, v, why in assessment.rows()
    )
    return f"\n## Assessment\n\n| | Verdict | Why |\n|---|---|---|\n{rows}\n"


def rootcause_markdown(crash: Crash, sections: Sequence[str] | None = None) -> str:
    """Return the report's "Faulting instruction" and "Assessment" sections."""
    fault, assessment = crash_rootcause(crash, sections)
    return fault_markdown(fault) + assessment_markdown(assessment)
