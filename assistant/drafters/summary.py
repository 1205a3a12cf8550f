"""A bug report's "What happened" paragraph: the model's, checked sentence by sentence,
or the facts' own.

The model gets the crash's facts as labelled lines (``prompts/what_happened.j2``): the
bad access or condition, the object and where it was allocated and freed, the path into
the bug, the task, the taint and whether the kernel panicked. It writes 3 to 5
sentences through :func:`assistant.drafters.pipeline.checked_draft`: each sentence is
held to those facts and the report (every name and number, the kind of crash, the
crashing function, no guessed cause), and read as a reader would
(:func:`assistant.drafters.checker.reader_problems`: it must add to the title and be
grammatical). A failing sentence is dropped; a paragraph with too little left is
withheld, and the sentences built from the facts (:func:`fallback_summary`) stand.
"""

from __future__ import annotations

import re
from dataclasses import replace

from assistant.drafters.assessment import Rating
from assistant.drafters.checker import SUMMARY_WORDS, Evidence, kinds_named, reader_problems
from assistant.drafters.pipeline import Draft, DraftPrompt, checked_draft, draft_prompt
from assistant.llm.base import Backend
from assistant.triage.facts import AllocStack, CrashFacts
from assistant.triage.model import Crash

PROMPT_NAME = "what_happened"
#: Callers of the guilty frame named in the facts.
CALLERS = 3
#: Frames of the path into the bug given to the model, the crashing one included.
PATH_FRAMES = 6
#: The paragraph's bounds in words and sentences, and the fewest sentences worth showing.
MIN_WORDS, MAX_WORDS, MAX_SENTENCES, MIN_SENTENCES = 12, 140, 5, 2


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


# Where a call trace stops being the path into the bug: the entry from user space or a
# kernel thread's start (kept), or the allocation and free stacks KASAN prints after it.
_PATH_END = re.compile(r"^(?:entry_SYSCALL\w*|do_syscall_64|ret_from_fork\w*|kthread)$")
_PATH_BEYOND = re.compile(r"^(?:save_stack\w*|kasan_\w+|kmsan_\w+|set_track\w*|__kasan\w*)")
# The allocator's own frames at the top of an allocation or free stack.
_ALLOCATOR = re.compile(
    r"^(?:__?)?(?:kmalloc|kzalloc|kfree|kzfree|kvfree|vfree|kmem_cache_\w+|"
    r"kmalloc_\w+|__kmalloc\w*|slab_\w+|kvmalloc\w*|krealloc|_*kasan_\w+|"
    r"kfree_\w+|__slab_\w+|___slab_\w+|save_stack\w*|set_track|depot_\w+|stack_trace_\w+|"
    r"kasan_\w+)(?:\.(?:constprop|part|isra|cold)(?:\.\d+)?)*$"
)


def path_into_bug(crash: Crash, most: int = PATH_FRAMES) -> list[str]:
    """Return the call path into the crashing function, outermost first, at most ``most``
    frames (the crashing function last)."""
    callers: list[str] = []
    for name in _callers(crash, len(crash.call_trace)):
        if _PATH_BEYOND.match(name):
            break
        if not name.startswith(("SyS_", "SYSC_", "__x64_sys", "__do_sys", "__se_sys")):
            callers.append(name)
        if _PATH_END.match(name):
            break
    callers = [c for c in callers if not _PATH_END.match(c)][: most - 1]
    return [*reversed(callers), *([crash.frame] if crash.frame else [])]


def _stack_phrase(stack: AllocStack) -> str:
    frames = [f for f in stack.frames if not _ALLOCATOR.match(f)]
    where = f", in {frames[0]}" if frames else ""
    via = f", called from {frames[1]}" if len(frames) > 1 else ""
    return f"task {stack.pid}{where}{via}"


def _taint_phrase(crash: Crash) -> str:
    reasons = [r.split(": ", 1)[-1] for r in crash.kernel.taint_reasons]
    return "; ".join(reasons) if reasons else "none"


def happened_facts(crash: Crash, rating: Rating) -> list[tuple[str, str]]:
    """Return the facts the paragraph is written from, as (label, value) pairs."""
    facts: CrashFacts = crash.crash_facts()
    # syzkaller's "in corrupted" names no function: a model copies it as if it did.
    rows: list[tuple[str, str]] = [("Title", crash.title.removesuffix(" in corrupted"))]
    if facts.access:
        size = f" of {facts.access_size} bytes" if facts.access_size else ""
        at = f" at address {facts.address}" if facts.address else ""
        freed = " in freed memory" if "use-after-free" in kinds_named(crash.title) else ""
        rows.append(("Bad access", f"{facts.access}{size}{at}{',' if freed and at else ''}{freed}"))
    if facts.object_cache:
        rows.append(
            ("Object", f"a {facts.object_size}-byte object from the {facts.object_cache} cache")
        )
    if crash.frame and not crash.corrupted:
        where = f", in {crash.guilty_file}" if crash.guilty_file else ""
        rows.append(("Crashing function", f"{crash.frame}{where}"))
    path = [] if crash.corrupted else path_into_bug(crash)
    if len(path) > 1:
        rows.append(("Path into the bug", " -> ".join(path)))
    if facts.allocated_by:
        rows.append(("Allocated by", _stack_phrase(facts.allocated_by)))
    if facts.freed_by:
        rows.append(("Freed by", _stack_phrase(facts.freed_by)))
    if facts.uninit_origin:
        rows.append(("Uninitialised value created in", " <- ".join(facts.uninit_origin[:3])))
    if len(facts.locks) == 2:
        rows += [("Acquiring lock", facts.locks[0]), ("While holding lock", facts.locks[1])]
    if facts.hung_task:
        rows.append(("Hung task", facts.hung_task))
    if facts.hung_seconds:
        rows.append(("Blocked for", f"more than {facts.hung_seconds} seconds"))
    if facts.held_locks:
        rows.append(("Locks held", "; ".join(facts.held_locks[:3])))
    if facts.stall_cpus:
        rows.append(("Stalled CPUs", ", ".join(map(str, facts.stall_cpus))))
    if facts.stall_tasks:
        rows.append(("Tasks blocking the grace period", ", ".join(map(str, facts.stall_tasks))))
    if facts.warning_location:
        rows.append(("Warning at", facts.warning_location))
    if facts.oom_victim:
        rows.append(("Killed task", facts.oom_victim))
    if crash.task.comm:
        # No parentheses: the prose grammar takes one word inside them.
        cpu = f", on CPU {crash.task.cpu}" if crash.task.cpu is not None else ""
        pid = f", pid {crash.task.pid}" if crash.task.pid is not None else ""
        rows.append(("Task", f"{crash.task.comm}{pid}{cpu}"))
    rows.append(("Taint", _taint_phrase(crash)))
    rows.append(("Panicked", "yes" if crash.panicked else "no"))
    return rows


#: The words the paragraph may use besides the evidence's: a summary's, and how a kernel
#: engineer tells the path and the context (none of them claims a cause).
REPORT_WORDS = SUMMARY_WORDS | frozenset(
    """panic panicked tainted taint path runs ran went came led leads into entered entry
    allocated allocation inside beyond after earlier later then once so first next finally
    took take takes taking""".split()  # noqa: SIM905
)


def happened_prompt(crash: Crash, rating: Rating) -> DraftPrompt:
    """Render the paragraph's prompt for a crash (with the names grammar of its facts)."""
    facts = happened_facts(crash, rating)
    labels = {label for label, _ in facts}
    freed = "use-after-free" in kinds_named(crash.title)
    return draft_prompt(PROMPT_NAME, facts=facts, labels=labels, freed=freed)


def happened_evidence(crash: Crash, rating: Rating, prompt: DraftPrompt) -> Evidence:
    """Return what the paragraph may say: the report and the facts as given to the model."""
    facts = "\n".join(f"{label}: {value}" for label, value in happened_facts(crash, rating))
    return Evidence(
        text="\n".join([crash.title, crash.report, facts, rating.reason]),
        severity=rating.severity,
        kind=crash.title,
        function=crash.frame,
        kernel=crash.kernel.release,
        functions=_callers(crash, len(crash.call_trace)),
        # Echoes of the instructions are refused; the crash's own facts may be restated,
        # and the worked example's names are the grounding check's (a sentence of it
        # that is true here, "The kernel was not tainted", may be said).
        prompt_lines=[
            ln
            for m in (prompt.messages[0], prompt.messages[-1])
            for ln in m.content.splitlines()
            if ln.strip() and ln not in facts.splitlines()
        ],
        min_words=MIN_WORDS,
        max_words=MAX_WORDS,
        allow_causes=False,
        max_sentences=MAX_SENTENCES,
        plain_words=REPORT_WORDS,
    )


_ALLOCATED = re.compile(r"\ballocat", re.I)
# "freed it", "freed by task 40", "X frees the object"; not "after it had been freed".
_FREED = re.compile(
    r"\bfreed (?:it|the|by|in)\b|\bfrees\b|\bfree(?:s|d)? (?:it|the object)\b", re.I
)
# A number bound to what it counts: "CPU 1", "task 812", "pid 812", "8 bytes", "143 seconds".
_BOUND = re.compile(
    r"\b(?P<cpu>CPU)s?\s+(?P<n1>\d+)|\b(?P<pid>task|pid|PID)\s+(?P<n2>\d+)"
    r"|\b(?P<n3>\d+)[- ](?P<bytes>bytes?|byte-)|\b(?P<n4>\d+)\s+(?P<secs>seconds?)",
    re.I,
)
_SYMBOLISH = re.compile(r"\b[a-z_][a-z0-9_]*_[a-z0-9_]+\b")


def _bound_values(crash: Crash, facts: CrashFacts) -> dict[str, set[int]]:
    # What each kind of bound number may be, from the facts.
    pids = {crash.task.pid, *facts.stall_tasks}
    pids |= {s.pid for s in (facts.allocated_by, facts.freed_by) if s is not None}
    if facts.hung_task and facts.hung_task.rpartition(":")[2].isdigit():
        pids.add(int(facts.hung_task.rpartition(":")[2]))
    return {
        "cpu": {crash.task.cpu, *facts.stall_cpus} - {None},  # type: ignore[dict-item]
        "pid": pids - {None},  # type: ignore[dict-item]
        "bytes": {facts.access_size, facts.object_size} - {None},  # type: ignore[dict-item]
        "secs": {facts.hung_seconds} - {None},  # type: ignore[dict-item]
    }


def number_claims(sentence: str, crash: Crash) -> list[str]:
    """Return the numbers a sentence binds to the wrong thing: a CPU that is not the
    report's, a PID of no task in it, a size or a time it does not give.

    >>> number_claims("Task 812 ran on CPU 5764.", Crash(title="t"))
    ['says task 812, not one of the report's', 'says CPU 5764, not one of the report's']
    """
    allowed = _bound_values(crash, crash.crash_facts())
    problems = []
    for m in _BOUND.finditer(sentence):
        kind = next(k for k in ("cpu", "pid", "bytes", "secs") if m.group(k))
        number = int(next(m.group(g) for g in ("n1", "n2", "n3", "n4") if m.group(g)))
        if number not in allowed[kind]:
            said = " ".join(m.group(0).split())
            problems.append(f"says {said}, not one of the report's")
    return problems


_TASK_NAMED = re.compile(r"\btask\s+([A-Za-z_][\w/.:-]*\w)")
_PATH_WORDS = re.compile(r"\b(?:path|runs from|through)\b", re.I)
_NAME = re.compile(r"[A-Za-z_][\w.]*\w")


def _comms(crash: Crash, facts: CrashFacts) -> set[str]:
    # The task names the report gives: the running task, the hung one, the stacks' tasks.
    names = {crash.task.comm or ""}
    if facts.hung_task:
        names.add(facts.hung_task.rpartition(":")[0])
    names |= {s.comm or "" for s in (facts.allocated_by, facts.freed_by) if s is not None}
    return names - {""}


def role_claims(sentence: str, crash: Crash) -> list[str]:
    """Return the names a sentence puts in the wrong role: a function called a task, or a
    call path out of the report's order (or where the report gives none)."""
    facts = crash.crash_facts()
    problems = []
    comms = _comms(crash, facts)
    for m in _TASK_NAMED.finditer(sentence):
        name = m.group(1)
        if name.lower() in SUMMARY_WORDS:
            continue  # "the hung task was ...": a word, not a name
        if name not in comms and not any(name.startswith(f"{c}:") for c in comms):
            problems.append(f"calls `{name}` a task, the report's tasks are {sorted(comms)}")
    if _PATH_WORDS.search(sentence):
        path = [] if crash.corrupted else path_into_bug(crash)
        named = [n for n in _NAME.findall(sentence) if n in path]
        places = [path.index(n) for n in named]
        if not path:
            problems.append("gives a call path, the report gives none")
        elif places != sorted(set(places)):
            problems.append("gives the call path out of the report's order")
    return problems


def stack_claims(sentence: str, facts: CrashFacts) -> list[str]:
    """Return the problems of a sentence that says where the object was allocated or freed:
    the report must give that stack, and the functions named must be in it.

    >>> stack_claims("Task 7 freed it in tcp_close.", CrashFacts())
    ['says where it was freed, the report gives no free stack']
    """
    problems: list[str] = []
    for pattern, stack, what in (
        (_ALLOCATED, facts.allocated_by, "allocated"),
        (_FREED, facts.freed_by, "freed"),
    ):
        if not pattern.search(sentence):
            continue
        if stack is None:
            problems.append(f"says where it was {what}, the report gives no {what[:-1]} stack")
            continue
        other = facts.freed_by if what == "allocated" else facts.allocated_by
        if other is not None and len({_ALLOCATED.search(sentence), _FREED.search(sentence)}) == 2:
            continue  # one sentence of both stacks: the grounding check reads the names
        wrong = [
            n
            for n in _SYMBOLISH.findall(sentence)
            if n not in stack.frames and other is not None and n in other.frames
        ]
        if wrong:
            problems.append(f"says `{wrong[0]}` {what} it, the report's {what[:-1]} stack does not")
    return problems


def draft_happened(
    crash: Crash, rating: Rating, backend: Backend | None, max_tokens: int | None = None
) -> Draft:
    """Have the model write the paragraph; every sentence is checked before it is shown.

    :param max_tokens: the paragraph's budget (default: the prompt's).
    """
    prompt = happened_prompt(crash, rating)
    if max_tokens is not None:
        prompt = replace(prompt, max_tokens=max_tokens)
    evidence = happened_evidence(crash, rating, prompt)
    table = [crash.task.comm or "", crash.kernel.release or ""]
    return checked_draft(
        prompt,
        evidence,
        backend,
        sentence_check=lambda sentence: [
            *reader_problems(sentence, crash.title, table),
            *stack_claims(sentence, crash.crash_facts()),
            *number_claims(sentence, crash),
            *role_claims(sentence, crash),
        ],
        min_sentences=MIN_SENTENCES,
    )
