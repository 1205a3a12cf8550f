"""The summary paragraph of a bug report: the model's draft, checked, or the facts' own.

The model gets the facts as labelled lines (``prompts/bug_report_summary.j2``), is
stopped at a blank line or a new label, and its answer is cut at its last sentence
end; then :func:`assistant.drafters.checker.check_draft` decides. A refused draft is
kept for the record (the LLM log, the benchmark) but never shown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from assistant.drafters.assessment import DocRef, Rating
from assistant.drafters.checker import (
    SUMMARY_WORDS,
    Evidence,
    Verdict,
    check_draft,
    cut_to_sentence,
)
from assistant.drafters.pipeline import sampling_of
from assistant.llm.base import Backend, GenerationStats, Message, Sampling
from assistant.llm.prompts import Prompt, load_prompt
from assistant.triage.facts import CrashFacts
from assistant.triage.model import Crash

PROMPT_NAME = "bug_report_summary"
#: Callers of the guilty frame named in the facts.
CALLERS = 3
#: Characters of a documentation section quoted to the model as background.
BACKGROUND_CHARS = 300
#: A summary's length bounds in words and sentences.
MIN_WORDS, MAX_WORDS, MAX_SENTENCES = 8, 50, 2


@dataclass
class SummaryDraft:
    """The model's summary and the checker's verdict on it.

    :param raw: what the model generated, before the sentence cut.
    :param text: the draft as checked.
    :param verdict: the checker's verdict.
    :param stats: the generation's cost.
    """

    raw: str
    text: str
    verdict: Verdict
    stats: GenerationStats = field(default_factory=GenerationStats)


def kind_phrase(title: str) -> str:
    """Return what went wrong, in a title's words: ``KASAN: use-after-free Read in f`` →
    ``use-after-free read``, ``INFO: task hung in f`` → ``task hung``."""
    head = title.split(" in ", maxsplit=1)[0] if " in " in title else title
    head = head.split(": ", 1)[1] if head.startswith(_DETECTOR_PREFIXES) else head
    return head.removeprefix("unable to handle kernel ").lower()


_DETECTOR_PREFIXES = ("KASAN: ", "KFENCE: ", "KMSAN: ", "KCSAN: ", "UBSAN: ", "INFO: ", "BUG: ")


def article(phrase: str) -> str:
    """Return ``a`` or ``an`` for a phrase (``a use-after-free``, ``an uninit-value``)."""
    return "an" if phrase[:1] in "aeiou" and not phrase.startswith("use") else "a"


def _reporter(title: str) -> str:
    detector = title.split(":", 1)[0]
    return detector if detector in _DETECTORS else "The kernel"


_DETECTORS = ("KASAN", "KFENCE", "KMSAN", "KCSAN", "UBSAN")


def _kind(crash: Crash, facts: CrashFacts) -> str:
    phrase = kind_phrase(crash.title)
    what = f"{article(phrase)} {phrase}"
    if facts.access_size:
        what += f" of {facts.access_size} bytes"
    return what


# Frames of the reporting machinery (a WARNING's, a BUG's), above the interrupted code
# when the guilty function itself is not in the trace.
_REPORTING = re.compile(
    r"^(?:(?:__)?dump_stack(?:_lvl)?|show_stack|panic|__warn(?:\.cold)?|warn_slowpath_\w+|"
    r"report_bug|fixup_bug|handle_bug|do_error_trap|do_invalid_op|invalid_op|"
    r"exc_invalid_op|asm_exc_invalid_op|do_trap|die|oops_end|print_address_description)"
    r"(?:\.\w+)*$"
)


def _callers(crash: Crash, most: int = CALLERS) -> list[str]:
    # The frames after the guilty one (its callers), innermost first.
    names = [f.function for f in crash.call_trace]
    if crash.frame in names:
        names = names[names.index(crash.frame) + 1 :]
    else:
        names = [n for n in names if not _REPORTING.match(n)]
    return list(dict.fromkeys(names))[:most]


def fact_lines(crash: Crash, rating: Rating) -> list[tuple[str, str]]:
    """Return the facts handed to the model, as (label, value) pairs.

    Few on purpose: a small model copies what it is given, so it gets the facts one
    sentence needs; the report shows the rest itself.
    """
    rows: list[tuple[str, str]] = [("Crash", crash.title), ("Kind", kind_phrase(crash.title))]
    if crash.frame:
        rows.append(("Function", crash.frame))
    callers = _callers(crash)
    if callers:
        rows.append(("Called from", callers[0]))
    if crash.task.comm:
        rows.append(("Task", crash.task.comm))
    return rows


def fallback_summary(crash: Crash, rating: Rating) -> str:
    """Return the summary built from the facts alone (no model, or a withheld draft)."""
    facts = crash.crash_facts()
    where = f" in `{crash.frame}`" if crash.frame else ""
    if crash.guilty_file:
        where += f" ({crash.guilty_file})"
    callers = _callers(crash)
    via = f", called from `{callers[0]}`" if callers else ""
    task = f" in task `{crash.task.comm}`" if crash.task.comm else ""
    kernel = f" on kernel {crash.kernel.release}" if crash.kernel.release else ""
    text = f"{_reporter(crash.title)} reported {_kind(crash, facts)}{where}{via}{task}{kernel}."
    if facts.freed_by and facts.freed_by.frames:
        text += (
            f" The object was freed earlier by task {facts.freed_by.pid} in "
            f"`{facts.freed_by.frames[0]}`."
        )
    elif len(facts.locks) == 2:
        text += f" The task acquired `{facts.locks[0]}` while holding `{facts.locks[1]}`."
    elif facts.warning_location:
        text += f" The warning is at {facts.warning_location}."
    return text


def background(docs: list[DocRef]) -> str:
    """Return the first sentences of the first cited documentation section."""
    if not docs:
        return ""
    text = " ".join(docs[0].text.split())[:BACKGROUND_CHARS]
    return cut_to_sentence(text) if "." in text else ""


def summary_evidence(
    crash: Crash, rating: Rating, messages: list[Message], extra: str = ""
) -> Evidence:
    """Return what a summary may say: the report, the facts as given, the prompt's lines."""
    prompt_lines = [line for m in messages for line in m.content.splitlines() if line.strip()]
    user = messages[-1].content if messages else ""
    return Evidence(
        text="\n".join([crash.title, crash.report, user, rating.reason, extra]),
        severity=rating.severity,
        kind=crash.title,
        function=crash.frame,
        kernel=crash.kernel.release,
        functions=_callers(crash, len(crash.call_trace)),
        prompt_lines=prompt_lines,
        min_words=MIN_WORDS,
        max_words=MAX_WORDS,
        allow_causes=False,
        max_sentences=MAX_SENTENCES,
        plain_words=SUMMARY_WORDS,
    )


def summary_messages(
    crash: Crash, rating: Rating, docs: list[DocRef], prompt: Prompt | None = None
) -> list[Message]:
    """Render the summary prompt for a crash."""
    prompt = prompt or load_prompt(PROMPT_NAME)
    kind = kind_phrase(crash.title)
    return prompt.render(
        facts=fact_lines(crash, rating),
        family=crash.crash_facts().family,
        kind=kind,
        a_kind=f"{article(kind)} {kind}",
        crash_prefix=crash.title.split(" in ")[0],
        background=background(docs),
    )


def draft_summary(
    crash: Crash,
    rating: Rating,
    backend: Backend,
    docs: list[DocRef] | None = None,
    max_tokens: int | None = None,
    sampling: Sampling | None = None,
    prompt: Prompt | None = None,
) -> SummaryDraft:
    """Ask the model for the summary and check it.

    :param docs: documentation sections; the first one's opening is given as background.
    :param max_tokens: the answer's budget (default: the prompt's ``max_tokens``).
    :param sampling: override the prompt's ``[sampling]`` table (the benchmark does).
    """
    prompt = prompt or load_prompt(PROMPT_NAME)
    messages = summary_messages(crash, rating, docs or [], prompt)
    stats = GenerationStats(prompt_name=prompt.label)
    budget = max_tokens or int(prompt.meta.get("max_tokens", 80))
    how = sampling or sampling_of(prompt, fact_lines(crash, rating))
    raw = "".join(backend.stream(messages, budget, stats, sampling=how))
    text = cut_to_sentence(raw)
    verdict = check_draft(text, summary_evidence(crash, rating, messages))
    backend.record_outcome(
        stats,
        {"summary": text} if verdict.ok else None,
        None if verdict.ok else "; ".join(verdict.problems),
    )
    return SummaryDraft(raw=raw, text=text, verdict=verdict, stats=stats)
