"""Draft a kernel bug report in Markdown: facts first, then at most one checked paragraph.

Everything that can be computed is: title, kernel, taint and trace from triage; what
the report says of its own family (:mod:`assistant.triage.facts`); severity, next
steps, maintainers and documentation (:mod:`assistant.drafters.assessment`). The
model writes only the summary paragraph, from those facts; the shared checker
(:mod:`assistant.drafters.checker`) reads it before anyone does, and a refused draft
is withheld: one line says why and a sentence built from the facts stands instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from assistant.drafters.assessment import (
    Knowledge,
    Rating,
    crash_knowledge,
    next_steps,
    open_knowledge,
    severity_of,
)
from assistant.drafters.markdown import md_inline as _md_inline
from assistant.drafters.pipeline import Draft
from assistant.drafters.summary import draft_happened, fallback_summary
from assistant.drafters.vmcore_markdown import vmcore_markdown
from assistant.frames import frame_text
from assistant.llm.base import Backend
from assistant.rootcause.report import RootcauseContext, rootcause_markdown
from assistant.triage.facts import AllocStack, CrashFacts
from assistant.triage.model import Crash
from assistant.triage.render import task_text

if TYPE_CHECKING:
    from assistant.knowledge import KnowledgeBase
    from probes.drgn import Findings
    from probes.drgn.dwarf import DebugFiles


@dataclass
class DraftedReport:
    """A drafted bug report.

    :param markdown: the whole report.
    :param summary: the "What happened" paragraph shown: the model's checked sentences, or
        the sentences built from the facts.
    :param draft: what the model wrote and what the checker kept (``None`` without a model).
    """

    markdown: str
    summary: str = ""
    draft: Draft | None = None
    knowledge: Knowledge = field(default_factory=Knowledge)


def skeleton_head(crash: Crash, rating: Rating | None = None) -> str:
    """Return the report's deterministic top: title and the facts table."""
    k, t = crash.kernel, crash.task
    rating = rating or severity_of(crash.type, crash.panicked)
    rows = [
        ("Type", crash.type),
        ("Severity", f"{rating.severity}: {rating.reason}"),
        ("Guilty frame", f"`{_md_inline(crash.frame)}`" if crash.frame else "unknown"),
        ("Kernel", f"`{_md_inline(k.release)}`" if k.release else "unknown"),
        ("Tainted", ", ".join(k.tainted) if k.tainted else "no"),
        ("Hardware", _md_inline(k.hardware) if k.hardware else "unknown"),
        ("Task", f"`{_md_inline(task_text(t))}`" if t.comm else "unknown"),
        ("Panicked", "yes" if crash.panicked else "no"),
        ("Signature", f"`{crash.signature}`"),
    ]
    if crash.guilty_file:
        rows.insert(2, ("Guilty file", f"`{crash.guilty_file}`"))
    if crash.corrupted:
        rows.append(("Corrupted", crash.corrupted_reason or "yes"))
    if crash.same_as is not None:  # a non-binding link the crash store found
        s = crash.same_as
        rows.append(("Probably the same bug as",
                     f"`{s.signature}` {_md_inline(s.title)} ({_md_inline(s.why)})"))  # fmt: skip
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


def _code(text: str) -> str:
    return f"`{_md_inline(text)}`"


def _stack_text(label: str, stack: AllocStack) -> str:
    who = f"task {stack.pid}" + (f" ({_md_inline(stack.comm)})" if stack.comm else "")
    return f"- {label} by {who}: " + " < ".join(_code(f) for f in stack.frames)


#: One fact's bullets (none when the report does not give it).
_FactLines = Callable[[CrashFacts], list[str]]


def _plain(label: str, get: Callable[[CrashFacts], object]) -> _FactLines:
    # A fact that is one plain value, shown as code.
    def lines(facts: CrashFacts) -> list[str]:
        value = get(facts)
        return [f"- {label}: {_code(str(value))}"] if value else []

    return lines


def _listed(
    label: str,
    get: Callable[[CrashFacts], Sequence[object]],
    sep: str,
    show: Callable[[str], str] = _code,
) -> _FactLines:
    # A fact that is a list of names or numbers, on one line.
    def lines(facts: CrashFacts) -> list[str]:
        items = get(facts)
        return [f"- {label}: " + sep.join(show(str(i)) for i in items)] if items else []

    return lines


def _counted(template: str, get: Callable[[CrashFacts], int | None]) -> _FactLines:
    # A fact that is one number, inside a sentence of its own.
    def lines(facts: CrashFacts) -> list[str]:
        value = get(facts)
        return [template.format(value)] if value else []

    return lines


def _stack(label: str, get: Callable[[CrashFacts], AllocStack | None]) -> _FactLines:
    def lines(facts: CrashFacts) -> list[str]:
        stack = get(facts)
        return [_stack_text(label, stack)] if stack else []

    return lines


def _access(facts: CrashFacts) -> list[str]:
    if not facts.access:
        return []
    size = f" of {facts.access_size} bytes" if facts.access_size else ""
    return [f"- Access: {facts.access}{size}"]


def _object(facts: CrashFacts) -> list[str]:
    if not facts.object_cache:
        return []
    return [f"- Object: cache {_code(facts.object_cache)}, {facts.object_size} bytes"]


def _locks(facts: CrashFacts) -> list[str]:
    names = ("Acquiring", "While holding")
    return [f"- {label}: {_code(lock)}" for label, lock in zip(names, facts.locks, strict=False)]


#: The "What the report says" bullets, in the order shown.
_FACT_LINES: tuple[_FactLines, ...] = (
    _access,
    _object,
    _plain("Address", lambda f: f.address),
    _plain("Uninitialised bytes", lambda f: f.uninit_bytes),
    _plain("Task", lambda f: f.hung_task),
    _plain("Warning at", lambda f: f.warning_location),
    _plain("OOM constraint", lambda f: f.oom_constraint),
    _plain("OOM victim", lambda f: f.oom_victim),
    _stack("Allocated", lambda f: f.allocated_by),
    _stack("Freed", lambda f: f.freed_by),
    _listed("Uninit created at", lambda f: f.uninit_origin, " < "),
    _locks,
    _listed("Dependency chain", lambda f: f.lock_chain, " -> "),
    _counted("- Blocked or stuck for: more than {} s", lambda f: f.hung_seconds),
    _listed("Locks held", lambda f: f.held_locks, "; "),
    _listed("Stalled CPUs", lambda f: f.stall_cpus, ", ", str),
    _listed("Tasks blocking the grace period", lambda f: f.stall_tasks, ", ", str),
    _counted("- Grace period age: {} jiffies", lambda f: f.stall_jiffies),
    _listed("Largest consumers", lambda f: f.oom_consumers, "; "),
)


def facts_markdown(facts: CrashFacts) -> str:
    """Return the "What the report says" section (empty when the report says nothing more)."""
    out = [line for fact in _FACT_LINES for line in fact(facts)]
    if not out:
        return ""
    return "\n## What the report says\n\n" + "\n".join(out) + "\n"


def steps_markdown(crash: Crash) -> str:
    """Return the "Next steps" section (from the table by family, not from the model)."""
    steps = "\n".join(f"{i}. {step}" for i, step in enumerate(next_steps(crash), 1))
    return f"\n## Next steps\n\n{steps}\n"


def knowledge_markdown(crash: Crash, knowledge: Knowledge) -> str:
    """Return the "Recipients" and "Documentation" sections, or one notice line."""
    out = []
    if knowledge.to or knowledge.cc:
        block = []
        if knowledge.to:
            block.append("To: " + ", ".join(knowledge.to))
        if knowledge.cc:
            block.append("Cc: " + ", ".join(knowledge.cc))
        where = f" of `{crash.guilty_file}`" if crash.guilty_file else ""
        subsystems = ", ".join(knowledge.subsystems)
        version = (
            f"; MAINTAINERS of Linux {knowledge.kernel_version}" if knowledge.kernel_version else ""
        )
        release = crash.kernel.release or ""
        if knowledge.kernel_version and not release.startswith(knowledge.kernel_version):
            version += (
                f", not the crashed {_md_inline(release) or 'kernel'}'s: files may have moved"
            )
        text = "\n".join(block).replace("```", "'''")
        out.append(
            f"\n## Recipients\n\nMaintainers and lists{where} ({_md_inline(subsystems)}{version}):"
            f"\n\n```\n{text}\n```\n"
        )
    if knowledge.docs:
        rows = "\n".join(f"- `{d.cite}` ({_md_inline(d.title)})" for d in knowledge.docs)
        out.append(f"\n## Documentation\n\n{rows}\n")
    if knowledge.notice:  # kassist's own words, not the log's
        out.append(f"\n_{knowledge.notice}._\n")
    return "".join(out)


HAPPENED = "\n## What happened\n\n"
#: Said under a paragraph the model wrote (every sentence checked against the report).
MODEL_MARK = "Drafted by the local model; each sentence checked against the report."


def summary_markdown(crash: Crash, rating: Rating, draft: Draft | None) -> tuple[str, str]:
    """Return the "What happened" section and the paragraph shown in it.

    The model's checked sentences are shown as the model's (a dropped sentence is said in
    one line); a withheld draft is said in one line, and the sentences built from the
    facts stand instead.
    """
    if draft is not None and draft.text is not None:
        note = f" {_md_inline(draft.why)}." if draft.why else ""
        return f"{HAPPENED}{draft.text}\n\n_{MODEL_MARK}{note}_\n", draft.text
    text = fallback_summary(crash, rating)
    note = ""
    if draft is not None:
        why = draft.why.removeprefix("withheld: ")
        note = (
            f"\n_The local model's paragraph was withheld ({_md_inline(why)}); "
            "this one is built from the facts._\n"
        )
    return HAPPENED + text + "\n" + note, text


def draft_report(
    crash: Crash,
    backend: Backend | None,
    max_tokens: int | None,
    write: Callable[[str], None] | None = None,
    vmcore: Findings | None = None,
    kb: KnowledgeBase | None = None,
    use_kb: bool = True,
    explanation: str | None = None,
    debug: DebugFiles | None = None,
) -> DraftedReport:
    """Draft the report, writing each piece through ``write`` as soon as it exists.

    The model's summary is written only once the checker has read it.

    :param crash: the crash to report (the first one of a triage).
    :param backend: the LLM backend, or ``None`` for the facts alone.
    :param max_tokens: the most tokens the paragraph may take (``None``: the prompt's).
    :param write: called with each piece of Markdown, in order.
    :param vmcore: drgn's analyses of the crash's vmcore (``TriageResult.vmcore``), if any.
    :param kb: the knowledge base (default: opened here when ``use_kb``).
    :param explanation: ``kassist vmcore explain``'s Markdown for the crash's dump, if any.
    :param debug: the kernel's debug files (``--vmlinux``): the faulting PC's source and
        member in the "Faulting instruction" section.
    """
    emit = write or (lambda _s: None)
    rating = severity_of(crash.type, crash.panicked)
    head = skeleton_head(crash, rating)
    emit(head)
    kb = kb if kb is not None or not use_kb else open_knowledge()
    knowledge = crash_knowledge(crash, kb)
    draft = draft_happened(crash, rating, backend, max_tokens) if backend is not None else None
    summary, shown = summary_markdown(crash, rating, draft)
    pieces = [
        summary,
        facts_markdown(crash.crash_facts()),
        rootcause_markdown(crash, RootcauseContext(kb, debug)),  # rootcause: the log
        explanation or "",
        steps_markdown(crash),
        knowledge_markdown(crash, knowledge),
        vmcore_markdown(vmcore) if vmcore else "",
        skeleton_tail(crash),
    ]
    for piece in pieces:
        emit(piece)
    return DraftedReport(
        markdown=head + "".join(pieces), summary=shown, draft=draft, knowledge=knowledge
    )
