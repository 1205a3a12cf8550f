"""Draft a kernel bug report in Markdown: a deterministic skeleton plus an LLM summary.

Everything that must be right (title, kernel, taint, trace) comes from triage;
the model only writes the summary paragraph, and every kernel symbol it names
is checked against the crash's evidence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from assistant.drafters.markdown import md_inline as _md_inline
from assistant.drafters.vmcore_markdown import vmcore_markdown
from assistant.frames import frame_text
from assistant.llm.base import Backend, GenerationStats
from assistant.llm.prompts import load_prompt
from assistant.triage.model import Crash

if TYPE_CHECKING:
    from assistant.vmcore import VmcoreSection

PROMPT_NAME = "bug_report_summary"
#: Frames handed to the model (the innermost ones carry the signal).
PROMPT_FRAMES = 12
# Words that look like kernel symbols: snake_case with an underscore, or name().
_SYMBOL = re.compile(r"\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b|\b([A-Za-z_]\w*)\(\)")


@dataclass
class DraftedReport:
    """A drafted bug report.

    :param markdown: the whole report.
    :param summary: the model's summary (empty without a model).
    :param unsupported: symbols the summary names that the crash evidence does not.
    """

    markdown: str
    summary: str = ""
    unsupported: list[str] = field(default_factory=list)
    stats: GenerationStats = field(default_factory=GenerationStats)


def skeleton_head(crash: Crash) -> str:
    """Return the report's deterministic top: title and the facts table."""
    k, t = crash.kernel, crash.task
    rows = [
        ("Type", crash.type),
        ("Guilty frame", f"`{_md_inline(crash.frame)}`" if crash.frame else "unknown"),
        ("Kernel", f"`{_md_inline(k.release)}`" if k.release else "unknown"),
        ("Tainted", ", ".join(k.tainted) if k.tainted else "no"),
        ("Hardware", _md_inline(k.hardware) if k.hardware else "unknown"),
        ("Task", f"`{_md_inline(t.comm)}` pid {t.pid} on CPU {t.cpu}" if t.comm else "unknown"),
        ("Panicked", "yes" if crash.panicked else "no"),
        ("Signature", f"`{crash.signature}`"),
    ]
    if crash.guilty_file:
        rows.insert(2, ("Guilty file", f"`{crash.guilty_file}`"))
    if crash.corrupted:
        rows.append(("Corrupted", crash.corrupted_reason or "yes"))
    table = "\n".join(f"| {a} | {b} |" for a, b in rows)
    return f"# {_md_inline(crash.title)}\n\n| | |\n|---|---|\n{table}\n"


def skeleton_tail(crash: Crash) -> str:
    """Return the report's deterministic bottom: the call trace and the raw report."""
    trace = "\n".join(frame_text(f) for f in crash.call_trace) or "(no call trace found)"
    report = crash.report.replace("```", "'''")
    return (
        f"\n## Call trace\n\n```\n{trace}\n```\n\n"
        f"## Report (lines {crash.start_line}-{crash.end_line} of the log)\n\n```\n{report}\n```\n"
    )


def unsupported_symbols(summary: str, crash: Crash) -> list[str]:
    """Return the kernel-looking symbols a summary names that the crash does not contain."""
    evidence = crash.report + " " + crash.title
    found: list[str] = []
    for m in _SYMBOL.finditer(summary):
        sym = m.group(1) or m.group(2)
        if sym and sym not in evidence and sym not in found:
            found.append(sym)
    return found


def summary_stream(
    crash: Crash, backend: Backend, max_tokens: int, stats: GenerationStats
) -> Iterator[str]:
    """Yield the model's summary of a crash as it is generated."""
    prompt = load_prompt(PROMPT_NAME)
    stats.prompt_name = prompt.label
    messages = prompt.render(crash=crash, frames=crash.call_trace[:PROMPT_FRAMES])
    return backend.stream(messages, max_tokens=max_tokens, stats=stats)


def assessment_markdown(crash: Crash, backend: Backend) -> str:
    """Return the report's "Assessment" section: the ``crash_assessment`` structured step.

    The step's answer is a validated object or nothing: a refusal becomes one line.
    """
    from assistant.errors import KassistError
    from assistant.llm.steps import assess_crash

    n_ctx = int(getattr(getattr(backend, "cfg", None), "n_ctx", 2048))
    try:
        v = assess_crash(crash, backend, n_ctx).value
    except KassistError as exc:
        return f"\n## Assessment\n\n_No assessment: {_md_inline(exc.message)}._\n"
    steps = "\n".join(f"- {_md_inline(s)}" for s in v.next_steps)
    text = (
        "\n## Assessment (structured, by the local model; check it)\n\n| | |\n|---|---|\n"
        f"| Subsystem | {v.subsystem} |\n| Severity | {v.severity} |\n"
        f"| Likely cause | {_md_inline(v.likely_cause)} |\n\nNext steps:\n\n{steps}\n"
    )
    unsupported = unsupported_symbols(" ".join([v.likely_cause, *v.next_steps]), crash)
    if unsupported:
        text += (
            "\n> **Check:** the assessment names "
            + ", ".join(f"`{s}`" for s in unsupported)
            + ", which the crash report does not contain.\n"
        )
    return text


def draft_report(
    crash: Crash,
    backend: Backend | None,
    max_tokens: int,
    write: Callable[[str], None] | None = None,
    vmcore: VmcoreSection | None = None,
) -> DraftedReport:
    """Draft the report, writing each piece through ``write`` as soon as it exists.

    :param crash: the crash to report (the first one of a triage).
    :param backend: the LLM backend, or ``None`` for the skeleton alone.
    :param max_tokens: the most tokens the summary may take.
    :param write: called with each piece of Markdown, model tokens included, in order.
    :param vmcore: drgn's analyses of the crash's vmcore (``TriageResult.vmcore``), if any.
    """
    emit = write or (lambda _s: None)
    head = skeleton_head(crash)
    emit(head)
    stats = GenerationStats()
    pieces: list[str] = []
    if backend is not None:
        emit("\n## Summary (drafted by the local model; check it)\n\n")
        for piece in summary_stream(crash, backend, max_tokens, stats):
            pieces.append(piece)
            emit(piece)
        emit("\n")
    summary = "".join(pieces).strip()
    unsupported = unsupported_symbols(summary, crash) if summary else []
    note = ""
    if unsupported:
        note = (
            "\n> **Check:** the summary names "
            + ", ".join(f"`{s}`" for s in unsupported)
            + ", which the crash report does not contain.\n"
        )
        emit(note)
    assessment = assessment_markdown(crash, backend) if backend is not None else ""
    emit(assessment)
    from_vmcore = vmcore_markdown(vmcore) if vmcore else ""
    emit(from_vmcore)
    tail = skeleton_tail(crash)
    emit(tail)
    middle = (
        f"\n## Summary (drafted by the local model; check it)\n\n{summary}\n" if backend else ""
    )
    return DraftedReport(
        markdown=head + middle + note + assessment + from_vmcore + tail,
        summary=summary,
        unsupported=unsupported,
        stats=stats,
    )
