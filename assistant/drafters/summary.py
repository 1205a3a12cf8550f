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
from assistant.drafters.pipeline import (
    Draft,
    DraftPrompt,
    SentenceCheck,
    checked_draft,
    draft_prompt,
    names_of,
)
from assistant.llm.base import Backend
from assistant.triage.facts import SYSCALL_FRAME, AllocStack, CrashFacts, is_syscall_wrapper
from assistant.triage.model import Crash
from assistant.triage.taint import TAINT_FLAGS

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
    frames (the crashing function last), without the frames that only enter a system
    call (:func:`~assistant.triage.facts.is_syscall_wrapper`)."""
    callers: list[str] = []
    for name in _callers(crash, len(crash.call_trace)):
        if _PATH_BEYOND.match(name):
            break
        if not is_syscall_wrapper(name):
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


#: What a taint letter tells a reader of the report, said so that a sentence can copy it.
TAINT_TELLS: dict[str, str] = {
    "W": "it had already issued a warning",
    "D": "it had already oopsed",
    "L": "a soft lockup had already occurred",
    "B": "a bad page had already been seen",
    "M": "the processor had reported a machine check",
    "O": "an out-of-tree module was loaded",
    "E": "an unsigned module was loaded",
    "P": "a proprietary module was loaded",
    "C": "a staging driver was loaded",
    "U": "user space had asked for a taint",
    "N": "an in-kernel test had been run",
}
#: The taints that say this report may not be the first thing that went wrong.
_EARLIER = frozenset("WDLBM")


def taint_known(crash: Crash) -> bool:
    """Tell whether the kernel's taint is known: its letters were read, or the report says
    ``Not tainted`` and nowhere ``Tainted:`` (a cut report may say neither; a ``Tainted:``
    whose letters were not read is not "not tainted").

    >>> c = Crash("t", "T", "CPU: 0 PID: 1 Comm: a Not tainted 6.1 #1", 1, 1)
    >>> taint_known(c), taint_known(Crash("t", "T", "BUG x (Tainted: G   ?): y", 1, 1))
    (True, False)
    """
    if crash.kernel.tainted:
        return True
    return _NOT_TAINTED_LINE.search(crash.report) is not None and (
        _TAINTED_LINE.search(crash.report) is None
    )


_NOT_TAINTED_LINE = re.compile(r"\bNot tainted\b")
_TAINTED_LINE = re.compile(r"\bTainted: ")


def taint_phrase(crash: Crash) -> str:
    """Return what the kernel's taint tells (``none`` when it is not tainted).

    >>> c = Crash("t", "T", "", 1, 1)
    >>> c.kernel.tainted = ["W"]
    >>> taint_phrase(c)
    'it had already issued a warning (W), so an earlier problem may be related'
    """
    flags = crash.kernel.tainted
    told = [f"{TAINT_TELLS.get(f, TAINT_FLAGS.get(f, f))} ({f})" for f in flags]
    if not told:
        return "none" if taint_known(crash) else "unknown"
    earlier = ", so an earlier problem may be related" if _EARLIER & set(flags) else ""
    return "; ".join(told) + earlier


# Where a call path comes from, read from the trace's frames innermost first: the first
# that matches names the context the bug ran in (a softirq run on the way out of a system
# call ran in the softirq). "from": where the path was entered; "in": what it ran in.
_CONTEXTS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"^(?:__do_softirq|run_ksoftirqd|handle_softirqs)$"), "in", "a softirq"),
    (
        re.compile(r"^(?:\w*apic_timer_interrupt\w*|hrtimer_interrupt|__sysvec_apic_timer\w*)$"),
        "in",
        "a timer interrupt",
    ),
    (
        re.compile(r"^(?:do_IRQ|common_interrupt|handle_irq|__handle_domain_irq)$"),
        "in",
        "an interrupt",
    ),
    (re.compile(r"^process_one_work$"), "from", "a workqueue worker"),
    (re.compile(r"^do_exit$"), "from", "the task's exit"),
    (SYSCALL_FRAME, "from", "the {call} system call"),
    (re.compile(r"^kthread$"), "from", "a kernel thread"),
)
#: Where a task's stack ends: the entry from user space, a kernel thread's start, or the
#: next stack printed after it (another task's, the detector's own).
_STACK_END = re.compile(
    r"^(?:entry_\w+|do_syscall_\w+|do_fast_syscall_32|do_int80_syscall_32|el0_\w+|"
    r"ret_from_fork\w*|kthread|dump_stack\w*|__dump_stack)$"
)


def entry_context(crash: Crash) -> tuple[str, str] | None:
    """Return where the path into the bug came from, as a label and a phrase: ``("Entered
    from", "the sendto system call")``, ``("Ran in", "a softirq")``; ``None`` when the
    trace does not tell (the crashing task's own stack only: the frames after its end,
    another task's or the detector's, are not read).
    """
    for name in _callers(crash, len(crash.call_trace)):
        for pattern, kind, phrase in _CONTEXTS:
            if m := pattern.match(name):
                label = "Entered from" if kind == "from" else "Ran in"
                return label, phrase.format(**m.groupdict())
        if _STACK_END.match(name):
            break
    return None


def _frame_file(crash: Crash) -> str | None:
    # The crashing frame's own file, as the trace gives it (syzkaller's guilty file may
    # be another frame's: a string helper's, an allocator's).
    for frame in crash.call_trace:
        if frame.function == crash.frame and frame.file:
            return frame.file
    return None


#: What the title's function is, by family: where the report says the bug was seen.
_WHERE_LABEL = {
    "hang": "Blocked in",
    "rcu-stall": "Stalled in",
    "soft-lockup": "Stuck in",
    "warning": "Warning in",
}
#: The reporting machinery's own tasks: not the task that hit the bug.
_REPORTERS = frozenset({"khungtaskd"})


def _who(comm_pid: str) -> str:
    # "syz-executor.1:5269" (the hung-task detector's form) -> "syz-executor.1, pid 5269"
    comm, _, pid = comm_pid.rpartition(":")
    return f"{comm}, pid {pid}" if comm and pid.isdigit() else comm_pid


def _held_by(facts: CrashFacts) -> tuple[list[str], list[str]]:
    # The held locks worth telling: the hung task's own (lock classes), and at most two
    # other tasks' (``task/pid: class``), never the detector's own.
    mine = f"{_who(facts.hung_task).replace(', pid ', '/')}: " if facts.hung_task else "\0"
    own = [r.removeprefix(mine) for r in facts.held_locks if r.startswith(mine)]
    others = [
        r
        for r in facts.held_locks
        if not r.startswith(mine) and r.split("/", 1)[0] not in _REPORTERS
    ]
    return own[:3], others[:2]


def _frame_in_trace(crash: Crash) -> bool:
    return bool(crash.frame) and any(f.function == crash.frame for f in crash.call_trace)


def happened_facts(crash: Crash, rating: Rating) -> list[tuple[str, str]]:
    """Return the facts the paragraph is written from, as (label, value) pairs.

    Each value is written as a sentence may copy it: names whole (a lock class, a task),
    no parentheses around several words, the hung-task detector's ``comm:pid`` as
    ``comm, pid N``; a fact the report does not give is left out, never guessed (the
    crashing function's file only from its own frame, the path only when the title's
    function is in the trace).
    """
    facts: CrashFacts = crash.crash_facts()
    # syzkaller's "in corrupted" names no function: a model copies it as if it did.
    rows: list[tuple[str, str]] = [("Title", crash.title.removesuffix(" in corrupted"))]
    return [*rows, *_where_rows(crash, facts), *_state_rows(crash, facts)]


def _where_rows(crash: Crash, facts: CrashFacts) -> list[tuple[str, str]]:
    # The access, the object, where the CPU was and the path into the bug.
    rows: list[tuple[str, str]] = []
    if facts.access:
        size = f" of {facts.access_size} bytes" if facts.access_size else ""
        at = f" at address {facts.address}" if facts.address else ""
        freed = " in freed memory" if "use-after-free" in kinds_named(crash.title) else ""
        rows.append(("Bad access", f"{facts.access}{size}{at}{',' if freed and at else ''}{freed}"))
    if facts.object_cache:
        rows.append(
            ("Object", f"a {facts.object_size}-byte object from the {facts.object_cache} cache")
        )
    if facts.fault_address and not facts.access:
        rows.append(("Faulting address", facts.fault_address))
    in_trace = _frame_in_trace(crash) and not crash.corrupted
    if in_trace or (crash.frame and crash.frame == facts.fault_ip):
        file = _frame_file(crash)
        where = f", in {file}" if file else ""
        rows.append((_WHERE_LABEL.get(facts.family, "Crashing function"), f"{crash.frame}{where}"))
    if facts.fault_ip and facts.fault_ip != crash.frame and facts.family in _IP_FAMILIES:
        rows.append(("Instruction pointer in", facts.fault_ip))
    path = path_into_bug(crash) if in_trace else []
    if len(path) > 1:
        rows.append(("Call path", " -> ".join(path)))
    context = entry_context(crash) if len(path) > 1 else None
    if context:
        rows.append(context)
    if facts.workqueue:
        queue, _, function = facts.workqueue.partition(" ")
        rows.append(("Work item", f"{function}, on the {queue} workqueue"))
    return rows


def _state_rows(crash: Crash, facts: CrashFacts) -> list[tuple[str, str]]:
    # The stacks, locks, tasks, taint and panic.
    return [
        *_stack_rows(facts),
        *_lock_rows(facts),
        *_stall_rows(facts),
        *_location_rows(facts),
        *_task_rows(crash, facts),
    ]


def _stack_rows(facts: CrashFacts) -> list[tuple[str, str]]:
    # Where the bad object was allocated and freed, where an uninitialised value was made.
    rows: list[tuple[str, str]] = []
    if facts.allocated_by:
        rows.append(("Allocated by", _stack_phrase(facts.allocated_by)))
    if facts.freed_by:
        rows.append(("Freed by", _stack_phrase(facts.freed_by)))
    if facts.uninit_origin:
        origin = facts.uninit_origin
        via = f", called from {origin[1]}" if len(origin) > 1 else ""
        rows.append(("Uninitialised value created in", f"{origin[0]}{via}"))
    return rows


def _lock_rows(facts: CrashFacts) -> list[tuple[str, str]]:
    # The locks, and the hung or stuck task with how long and what it held.
    stuck = facts.family == "soft-lockup"
    rows: list[tuple[str, str]] = []
    if len(facts.locks) > 1:
        # One line in the sentence's order: a small model given the two locks on two
        # lines swaps them.
        rows.append(("Lock order", f"took {facts.locks[0]} while holding {facts.locks[1]}"))
    elif facts.locks:
        rows.append(("Lock being taken", facts.locks[0]))
    if facts.hung_task:
        rows.append(("Stuck task" if stuck else "Hung task", _who(facts.hung_task)))
    if facts.hung_seconds and stuck:
        cpu = f", on CPU {facts.stall_cpus[0]}" if facts.stall_cpus else ""
        rows.append(("Stuck for", f"{facts.hung_seconds} seconds{cpu}"))
    elif facts.hung_seconds:
        rows.append(("Blocked for", f"more than {facts.hung_seconds} seconds"))
    if own := _held_by(facts)[0]:
        rows.append(("Locks the hung task held", ", ".join(own)))
    return rows


def _stall_rows(facts: CrashFacts) -> list[tuple[str, str]]:
    # An RCU stall's CPUs (a soft lockup's one CPU is told with how long it was stuck),
    # tasks and age.
    rows: list[tuple[str, str]] = []
    if facts.stall_cpus and facts.family != "soft-lockup":
        rows.append(("Stalled CPUs", ", ".join(map(str, facts.stall_cpus))))
    if facts.stall_tasks:
        rows.append(("Tasks blocking the grace period", ", ".join(map(str, facts.stall_tasks))))
    if facts.stall_jiffies:
        rows.append(("Grace period age", f"{facts.stall_jiffies} jiffies"))
    return rows


def _location_rows(facts: CrashFacts) -> list[tuple[str, str]]:
    # Where a WARNING or a BUG was raised, and whom the OOM killer killed.
    rows: list[tuple[str, str]] = []
    if facts.warning_location:
        rows.append(("Warning at", facts.warning_location))
    if facts.bug_location:
        rows.append(("BUG at", facts.bug_location))
    if facts.oom_victim:
        rows.append(("Killed task", facts.oom_victim.replace(" (pid ", ", pid ").rstrip(")")))
    return rows


def _task_rows(crash: Crash, facts: CrashFacts) -> list[tuple[str, str]]:
    # The task that hit the bug (not the reporter's, not a hung task told already), the
    # taint and the panic.
    rows: list[tuple[str, str]] = []
    if crash.task.comm and crash.task.comm not in _REPORTERS and not facts.hung_task:
        # No parentheses: the prose grammar takes one word inside them.
        cpu = f", on CPU {crash.task.cpu}" if crash.task.cpu is not None else ""
        pid = f", pid {crash.task.pid}" if crash.task.pid is not None else ""
        rows.append(("Task", f"{crash.task.comm}{pid}{cpu}"))
    if (taint := taint_phrase(crash)) != "unknown":
        rows.append(("Taint", taint))
    rows.append(("Panicked", "yes" if crash.panicked else "no"))
    return rows


#: The families whose instruction pointer is the bug's own place (not another CPU's, as
#: in a stall's or a hang's backtraces).
_IP_FAMILIES = frozenset({"other", "memory-safety", "warning"})


#: The words the paragraph may use besides the evidence's: a summary's, and how a kernel
#: engineer tells the path and the context (none of them claims a cause).
REPORT_WORDS = SUMMARY_WORDS | frozenset(
    """panic panicked tainted taint path runs ran went came led leads into entered entry
    allocated allocation inside beyond after earlier later then once so first next finally
    took take takes taking tried try trying already lasted raised killer time blocking faulted stuck
    system call instruction pointer grace period kworker""".split()  # noqa: SIM905
)


def taint_sentence(crash: Crash) -> str:
    """Return the paragraph's closing sentence: what the taint tells, and the panic.

    >>> taint_sentence(Crash("t", "T", "CPU: 0 PID: 1 Comm: a Not tainted 6.1 #1", 1, 1))
    'The kernel was not tainted and did not panic.'
    """
    told = taint_phrase(crash)
    panic = "panicked" if crash.panicked else "did not panic"
    if told == "unknown":
        return f"The kernel {panic}."
    if told == "none":
        return f"The kernel was not tainted and {panic}."
    return f"The kernel was tainted: {told}; it {panic}."


def happened_prompt(crash: Crash, rating: Rating) -> DraftPrompt:
    """Render the paragraph's prompt for a crash (with the names grammar of its facts).

    The worked example shows the crash's kinds of facts (its labels) and ends with the
    crash's own taint and panic sentence, which is true of both.
    """
    facts = happened_facts(crash, rating)
    return draft_prompt(
        PROMPT_NAME,
        facts=facts,
        labels={label for label, _ in facts},
        where_labels={"Crashing function", *_WHERE_LABEL.values()},
        freed="use-after-free" in kinds_named(crash.title),
        access=crash.crash_facts().access or "write",
        taint=taint_phrase(crash),
        panicked="yes" if crash.panicked else "no",
        taint_sentence=taint_sentence(crash),
    )


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
    pids |= {int(p) for row in facts.held_locks for p in re.findall(r"/(\d+):", row)}
    if facts.oom_victim:
        pids |= {int(p) for p in re.findall(r"pid (\d+)", facts.oom_victim)}
    return {
        "cpu": {crash.task.cpu, *facts.stall_cpus} - {None},  # type: ignore[dict-item]
        "pid": pids - {None},  # type: ignore[dict-item]
        "bytes": {facts.access_size, facts.object_size} - {None},  # type: ignore[dict-item]
        "secs": {facts.hung_seconds} - {None},  # type: ignore[dict-item]
    }


def number_claims(sentence: str, crash: Crash) -> list[str]:
    """Return the numbers a sentence binds to the wrong thing: a CPU that is not the
    report's, a PID of no task in it, a size or a time it does not give.

    >>> number_claims("Task 812 ran on CPU 5764.", Crash("t", "T", "", 1, 1))
    ["says Task 812, not one of the report's", "says CPU 5764, not one of the report's"]
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
    # The task names the report gives: the running task, the hung one, the stacks' tasks,
    # the holders of locks (``getty/3820``).
    names = {crash.task.comm or ""}
    if facts.hung_task:
        names.add(facts.hung_task.rpartition(":")[0])
    names |= {s.comm or "" for s in (facts.allocated_by, facts.freed_by) if s is not None}
    names |= {row.split(": ", 1)[0] for row in facts.held_locks}
    if facts.oom_victim:
        names.add(facts.oom_victim.split(" (", 1)[0])
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


_NOT_TAINTED = re.compile(r"\b(?:not|never|un)[- ]?tainted\b", re.I)
_TAINTED = re.compile(r"\btainted\b", re.I)
_NO_PANIC = re.compile(r"\b(?:not|never|no|without)\s+(?:\w+\s+)?panic", re.I)
_PANIC = re.compile(r"\bpanic(?:ked|s)?\b", re.I)


_VERBS = {
    "read": re.compile(r"\b(?:read|reads|reading)\b", re.I),
    "write": re.compile(r"\b(?:wrote|writes?|writing|written)\b", re.I),
}


def context_claims(sentence: str, crash: Crash) -> list[str]:
    """Return what a sentence says of the kernel's taint and panic, or of the bad access's
    direction, that the report does not.

    >>> c = Crash(title="t", type="T", report="CPU: 0 PID: 1 Comm: a Not tainted 6.1 #1",
    ...           start_line=1, end_line=1, panicked=True)
    >>> context_claims("The kernel was not tainted and did not panic.", c)
    ['says it did not panic, it panicked']
    """
    problems = []
    tainted = bool(crash.kernel.tainted)
    if _NOT_TAINTED.search(sentence):
        if tainted or not taint_known(crash):
            problems.append(
                "says the kernel was not tainted, "
                + ("it was" if tainted else "the report does not say")
            )
    elif _TAINTED.search(sentence) and not tainted:
        problems.append("says the kernel was tainted, it was not")
    if _NO_PANIC.search(sentence):
        if crash.panicked:
            problems.append("says it did not panic, it panicked")
    elif _PANIC.search(sentence) and not crash.panicked:
        problems.append("says it panicked, it did not")
    access = crash.crash_facts().access
    for verb, pattern in _VERBS.items():
        if access and access != verb and pattern.search(sentence):
            problems.append(f"says it was a {verb}, the report says {access}")
    return problems


_HOLDING = r"(?:hold|holds|held|holding)\s+(?:the\s+)?(?:lock\s+)?"
_TAKING = (
    r"(?:take|takes|took|taking|acquire|acquires|acquired|acquiring|trying to take|"
    r"trying to acquire)\s+(?:the\s+)?(?:lock\s+)?"
)


def lock_claims(sentence: str, crash: Crash) -> list[str]:
    """Return the locks a sentence puts in the wrong role: the lock being taken said to be
    held, the held one said to be taken, or a lock the hung task did not hold said to be its.

    >>> c = Crash("t", "T", "", 1, 1)
    >>> c.facts = CrashFacts(family="lockdep", locks=["&a->lock", "&b->lock"])
    >>> lock_claims("The task held &a->lock while taking &b->lock.", c)[0]
    'says it held `&a->lock`, the report says it was taking it'
    >>> lock_claims("The task took &a->lock while it held &b->lock.", c)
    []
    """
    facts = crash.crash_facts()
    problems = []
    wanted, held = [*facts.locks, None, None][:2]
    if wanted and re.search(_HOLDING + re.escape(wanted), sentence, re.I):
        problems.append(f"says it held `{wanted}`, the report says it was taking it")
    if held and re.search(_TAKING + re.escape(held), sentence, re.I):
        problems.append(f"says it took `{held}`, the report says it held it")
    own, others = _held_by(facts)
    for row in others:
        lock = row.split(": ", 1)[-1]
        holder = row.split(": ", 1)[0]
        if lock in own:
            continue
        if (
            re.search(r"\b(?:it|the hung task)\b[^.]*" + _HOLDING + re.escape(lock), sentence, re.I)
            and holder not in sentence
        ):
            problems.append(f"says the hung task held `{lock}`, {holder} did")
    return problems


def work_claims(sentence: str, facts: CrashFacts) -> list[str]:
    """Return the problem of a sentence about the workqueue that does not name the work
    item the report gives (a kworker "running process_one_work": that is the worker's
    own loop, not the work).

    >>> work_claims("The kworker was running f, on the q workqueue.", CrashFacts(workqueue="q g"))
    ["names the q workqueue's work as another function, the report says `g`"]
    >>> work_claims("The kworker was running g, on the q workqueue.", CrashFacts(workqueue="q g"))
    []
    """
    if not facts.workqueue or not re.search(r"\bworkqueue\b", sentence, re.I):
        return []
    queue, _, function = facts.workqueue.partition(" ")
    if re.search(rf"(?<![\w.]){re.escape(function)}(?![\w.])", sentence):
        return []
    return [f"names the {queue} workqueue's work as another function, the report says `{function}`"]


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
    return checked_draft(
        prompt,
        evidence,
        backend,
        sentence_check=happened_check(crash),
        min_sentences=MIN_SENTENCES,
    )


def happened_check(crash: Crash) -> SentenceCheck:
    """Return the paragraph's own check of one sentence (besides the shared checker's):
    a reader's (it adds to the title, it is English), and the report's bindings (a
    stack, a number, a task or a path in the wrong role)."""
    table = [crash.task.comm or "", crash.kernel.release or ""]
    facts = crash.crash_facts()
    said: set[str] = set()  # the names of the sentences kept so far

    def check(sentence: str) -> list[str]:
        problems = [
            *reader_problems(sentence, crash.title, table),
            *stack_claims(sentence, facts),
            *number_claims(sentence, crash),
            *role_claims(sentence, crash),
            *context_claims(sentence, crash),
            *lock_claims(sentence, crash),
            *work_claims(sentence, facts),
        ]
        names = set(names_of([("", sentence.rstrip("."))]))
        if names and names <= said:
            problems.append("says again what an earlier sentence said")
        if not problems:
            said.update(names)
        return problems

    return check
