"""The deterministic assessment of a crash: severity, next steps, recipients, documentation.

Nothing here comes from the model. Severity is a table by crash type, each row with
its reason; next steps are a table by crash family, filled in with the report's own
facts (:mod:`assistant.triage.facts`); maintainers and documentation come from the
offline knowledge base (:mod:`assistant.knowledge`) when one is built, and are one
notice line when not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from assistant.triage.facts import CrashFacts
from assistant.triage.model import Crash

if TYPE_CHECKING:
    from assistant.knowledge import KnowledgeBase

Severity = Literal["low", "medium", "high", "critical"]

_MEMORY_READ: tuple[Severity, str] = (
    "high",
    "a memory-safety bug: the kernel read memory it does not own, and the same bug "
    "can usually corrupt memory too",
)
_MEMORY_WRITE: tuple[Severity, str] = (
    "critical",
    "a memory-safety bug that writes: kernel memory is corrupted, which is often exploitable",
)
_OOPS: tuple[Severity, str] = (
    "high",
    "the kernel oopsed: the task was killed and kernel state may be inconsistent",
)

#: Crash or event type → (severity, reason). Types are syzkaller's names
#: (``assistant.triage.rules.TITLE_TO_TYPE``) and kassist's production events
#: (``assistant.triage.events``); a panic raises any row to critical.
SEVERITY: dict[str, tuple[Severity, str]] = {
    "KASAN-READ": _MEMORY_READ,
    "KASAN-USE-AFTER-FREE-READ": _MEMORY_READ,
    "KASAN-NULL-POINTER-DEREFERENCE-READ": _OOPS,
    "KASAN-NULL-POINTER-DEREFERENCE-WRITE": _OOPS,
    "KASAN-WRITE": _MEMORY_WRITE,
    "KASAN-USE-AFTER-FREE-WRITE": _MEMORY_WRITE,
    "KASAN-INVALID-FREE": (
        "critical",
        "a double or invalid free corrupts the allocator's state, which is often exploitable",
    ),
    "KASAN-UNKNOWN": _MEMORY_READ,
    "KFENCE-READ": _MEMORY_READ,
    "KFENCE-USE-AFTER-FREE-READ": _MEMORY_READ,
    "KFENCE-WRITE": _MEMORY_WRITE,
    "KFENCE-USE-AFTER-FREE-WRITE": _MEMORY_WRITE,
    "KFENCE-MEMORY-CORRUPTION": _MEMORY_WRITE,
    "KFENCE-INVALID-FREE": (
        "critical",
        "an invalid free corrupts the allocator's state, which is often exploitable",
    ),
    "KFENCE-UNKNOWN": _MEMORY_READ,
    "KMSAN-UNINIT-VALUE": (
        "high",
        "uninitialised memory decides what the kernel does, or leaks out of it",
    ),
    "KMSAN-INFO-LEAK": ("high", "uninitialised kernel memory is copied to user space or a device"),
    "KMSAN-USE-AFTER-FREE-READ": _MEMORY_READ,
    "KMSAN-UNKNOWN": _MEMORY_READ,
    "MEMORY_SAFETY_BUG": (
        "high",
        "a bad memory access or a corrupted list: kernel memory is not what the code expects",
    ),
    "MEMORY_SAFETY_UBSAN": ("high", "an array index out of bounds reads or writes past the array"),
    "NULL-POINTER-DEREFERENCE": _OOPS,
    "DoS": ("high", "the kernel faulted or a BUG fired: the task or the machine stops working"),
    "BUG": ("high", "a BUG() assertion fired: the kernel found its state impossible and stopped"),
    "REFCOUNT_WARNING": (
        "high",
        "a reference count went wrong, which usually leads to a use-after-free or a leak",
    ),
    "LOCKDEP": (
        "medium",
        "lockdep found a locking rule broken; the deadlock it predicts hangs the tasks involved",
    ),
    "ATOMIC_SLEEP": (
        "medium",
        "a function that may sleep ran in atomic context; it can deadlock or corrupt state",
    ),
    "HANG": (
        "high",
        "tasks or CPUs stopped making progress (hung task, RCU stall or soft lockup)",
    ),
    "WARNING": ("medium", "a WARN_ON: the kernel detected an unexpected state and went on"),
    "UBSAN": ("medium", "undefined behaviour in C: the result depends on the compiler"),
    "KCSAN-DATARACE": ("medium", "a data race: two CPUs access the same memory unsynchronised"),
    "KCSAN-ASSERT": ("medium", "a KCSAN assertion about exclusive access failed"),
    "KCSAN-UNKNOWN": ("medium", "a KCSAN report: a concurrency bug"),
    "LEAK": ("low", "a memory leak: memory is lost until reboot, harmful when it repeats"),
    "REBOOT": ("high", "the machine rebooted unexpectedly"),
    "SYZ_FAILURE": ("low", "the fuzzer's own failure, not a kernel bug"),
    "UNKNOWN": ("medium", "a kernel report of a kind kassist has no rule for: read it"),
    # production events, by their own rules
    "OOM-KILL": ("medium", "the OOM killer ended a task to free memory; the machine went on"),
    "IO-ERROR": ("high", "a block device failed a request: data may be lost"),
    "IO-TIMEOUT": ("medium", "a device did not answer in time; the request was retried or aborted"),
    "FS-ERROR": ("high", "a file system found corruption and may have gone read-only"),
    "HARDWARE-ERROR": ("critical", "the hardware reported an error (machine check)"),
    "PCIE-AER": ("medium", "a PCIe link reported an error (corrected ones are benign alone)"),
    "NETDEV-WATCHDOG": ("medium", "a network device's transmit queue stopped; traffic stalled"),
    "SEGFAULT": ("low", "a user-space program crashed; the kernel is fine"),
    "SOFT-LOCKUP": ("high", "a CPU ran kernel code without scheduling for many seconds"),
    "HARD-LOCKUP": ("critical", "a CPU stopped taking interrupts"),
    "THERMAL-THROTTLE": ("low", "a CPU was throttled for heat: slower, not broken"),
    "THERMAL-CRITICAL": ("critical", "a critical temperature was reached: the machine shuts down"),
}


@dataclass(frozen=True)
class Rating:
    """A crash's severity and why."""

    severity: Severity
    reason: str


def severity_of(crash_type: str, panicked: bool = False) -> Rating:
    """Rate a crash from its type (see :data:`SEVERITY`); a panic is always critical.

    :param crash_type: the crash's or event's ``type``.
    """
    severity, reason = SEVERITY.get(crash_type, SEVERITY["UNKNOWN"])
    if panicked:
        return Rating("critical", f"the kernel panicked (the machine went down); {reason}")
    return Rating(severity, reason)


# --- next steps: a table by family, filled in with the report's facts ---

StepRule = Callable[[Crash, CrashFacts], list[str]]

_DECODE = (
    "Symbolise the trace with the matching vmlinux: "
    "`./scripts/decode_stacktrace.sh vmlinux < report.txt`."
)
_BISECT = (
    "If an older release did not crash, bisect between the last good and the first bad "
    "release (`git bisect start BAD GOOD`) with the reproducer."
)


def _decode(crash: Crash) -> list[str]:
    # A trace that already names files and lines needs no decoding.
    return [] if any(f.file for f in crash.call_trace) else [_DECODE]


def _guilty(crash: Crash) -> str:
    where = f"`{crash.frame}`" if crash.frame else "the guilty function"
    return where + (f" ({crash.guilty_file})" if crash.guilty_file else "")


def _memory_steps(crash: Crash, f: CrashFacts) -> list[str]:
    steps = []
    if f.freed_by and f.freed_by.frames:
        steps.append(
            f"Compare the free path (`{' < '.join(f.freed_by.frames[:3])}`, task "
            f"{f.freed_by.pid}) with the use in {_guilty(crash)}: find which reference "
            "outlives the free."
        )
    elif crash.type.startswith("KMSAN") and f.uninit_origin:
        steps.append(
            f"Find the field left uninitialised where the value was created "
            f"(`{f.uninit_origin[0]}`) and initialise it, or check the length copied."
        )
    elif crash.type.startswith(("KASAN", "KFENCE")):
        steps.append(
            "The report holds no free stack: reproduce on a kernel with `CONFIG_KASAN=y` and "
            "`CONFIG_STACKTRACE=y` to get the *Allocated by* and *Freed by* stacks, then "
            f"compare the free path with the use in {_guilty(crash)}."
        )
    else:
        steps.append(
            f"Read the bad access in {_guilty(crash)} at the RIP/pc of the report, then "
            "reproduce on a kernel with `CONFIG_KASAN=y` to catch the first bad access."
        )
    if f.object_cache:
        steps.append(
            f"Check the object's size and lifetime in cache `{f.object_cache}`: boot with "
            f"`slub_debug=FZPU,{f.object_cache}` to poison and check it on every free."
        )
    return [*steps, *_decode(crash), _BISECT]


def _lockdep_steps(crash: Crash, f: CrashFacts) -> list[str]:
    steps = []
    if len(f.locks) == 2:
        steps.append(
            f"Find the code paths that take `{f.locks[1]}` then `{f.locks[0]}` and the ones "
            "that take them in the other order; make one order the rule."
        )
    steps.append(
        "Read the dependency chain in the report (`-> #N` entries): each link names where "
        "a lock was taken."
    )
    steps.append("Reproduce with `CONFIG_PROVE_LOCKING=y` to check the fix.")
    return [*steps, *_decode(crash)]


def _hang_steps(crash: Crash, f: CrashFacts) -> list[str]:
    steps = []
    task = f"task {f.hung_task}" if f.hung_task else "the hung task"
    if f.held_locks:
        steps.append(
            f"Find who holds what {task} waits for: the report's `Showing all locks held` "
            f"lists {len(f.held_locks)} holder(s), e.g. `{f.held_locks[0]}`."
        )
    steps.append(
        f"Get every blocked task's stack at the moment: `echo w > /proc/sysrq-trigger` "
        f"(as root), and read where {task} sleeps ({_guilty(crash)})."
    )
    steps.append(
        "If it recurs, `kernel.hung_task_panic=1` with kdump gives a vmcore to inspect "
        "with `kassist vmcore`."
    )
    return steps


def _stall_steps(crash: Crash, f: CrashFacts) -> list[str]:
    cpus = ", ".join(str(c) for c in f.stall_cpus) if f.stall_cpus else "the stalled CPU"
    return [
        f"Read the backtrace of CPU {cpus} in the report: the loop that never reaches a "
        f"quiescent state is in {_guilty(crash)} or its callers.",
        "Look for a long loop without `cond_resched()`, or interrupts or preemption "
        "disabled for long, on that path.",
        *_decode(crash),
    ]


def _warning_steps(crash: Crash, f: CrashFacts) -> list[str]:
    where = f"`{f.warning_location}`" if f.warning_location else "the WARN_ON's line"
    return [
        f"Read the condition of the WARN_ON at {where} and find how the caller reached it.",
        *_decode(crash),
        _BISECT,
    ]


def _oom_steps(crash: Crash, f: CrashFacts) -> list[str]:
    steps = []
    if f.oom_constraint == "CONSTRAINT_MEMCG":
        steps.append("The limit was a memory cgroup's: check its `memory.max` against its use.")
    if f.oom_consumers:
        steps.append(f"Check the largest consumer first: {f.oom_consumers[0]}.")
    steps.append(
        "Check whether memory use grows over time (a leak) with `slabtop` and `/proc/meminfo`."
    )
    return steps


def _other_steps(crash: Crash, f: CrashFacts) -> list[str]:
    return [
        f"Read the faulting code in {_guilty(crash)} at the RIP/pc of the report.",
        *_decode(crash),
        _BISECT,
    ]


NEXT_STEPS: dict[str, StepRule] = {
    "memory-safety": _memory_steps,
    "lockdep": _lockdep_steps,
    "hang": _hang_steps,
    "rcu-stall": _stall_steps,
    "soft-lockup": _stall_steps,
    "warning": _warning_steps,
    "oom": _oom_steps,
    "other": _other_steps,
}


def next_steps(crash: Crash) -> list[str]:
    """Return the next steps for a crash, from :data:`NEXT_STEPS` and its facts."""
    facts = crash.crash_facts()
    return NEXT_STEPS.get(facts.family, _other_steps)(crash, facts)


# --- the knowledge base: recipients and documentation ---

#: Words that find a family's documentation in the knowledge base.
DOC_QUERIES: dict[str, str] = {
    "memory-safety": "KASAN use-after-free out-of-bounds report",
    "lockdep": "lockdep lock dependency validator deadlock",
    "hang": "hung task detection khungtaskd blocked",
    "rcu-stall": "RCU CPU stall warning",
    "soft-lockup": "softlockup watchdog hardlockup",
    "warning": "WARN_ON kernel warning panic_on_warn",
    "oom": "out of memory OOM killer",
    "other": "oops bug hunting decode stack trace",
}
#: Documentation sections cited at most.
DOC_HITS = 3


@dataclass
class DocRef:
    """A documentation section cited by a report.

    :param cite: ``Documentation/path.rst#anchor``.
    :param title: the section's title.
    :param text: the section's text (a prompt may quote its first sentences).
    """

    cite: str
    title: str
    text: str


@dataclass
class Knowledge:
    """What the knowledge base says about a crash (empty, with a notice, without one).

    :param to: the maintainers and reviewers of the guilty file.
    :param cc: its mailing lists.
    :param subsystems: the MAINTAINERS entries that cover it.
    :param docs: the cited documentation sections.
    :param kernel_version: the kernel version the knowledge base describes.
    :param notice: why something is missing (no knowledge base, no guilty file).
    """

    to: list[str] = field(default_factory=list)
    cc: list[str] = field(default_factory=list)
    subsystems: list[str] = field(default_factory=list)
    docs: list[DocRef] = field(default_factory=list)
    kernel_version: str = ""
    notice: str = ""


def open_knowledge() -> KnowledgeBase | None:
    """Open the knowledge base, or return ``None`` when it is not built."""
    from assistant.knowledge import try_open

    return try_open()


def _translation(cite: str) -> bool:
    return "/translations/" in f"/{cite}"


def _cite(cite: str) -> str:
    return cite if cite.startswith("Documentation/") else f"Documentation/{cite}"


def crash_knowledge(crash: Crash, kb: KnowledgeBase | None) -> Knowledge:
    """Look up a crash's recipients and documentation in the knowledge base."""
    if kb is None:
        return Knowledge(
            notice="no knowledge base: maintainers and documentation are not shown "
            "(build it with `kassist kb build`)"
        )
    out = Knowledge(kernel_version=str(getattr(kb, "kernel_version", "") or ""))
    if crash.guilty_file:
        out.to, out.cc = kb.recipients(crash.guilty_file)
        out.subsystems = [s.name for s in kb.maintainers(crash.guilty_file)]
    else:
        out.notice = "no guilty file in the report: no maintainers to name"
    family = crash.crash_facts().family
    query = DOC_QUERIES.get(family, DOC_QUERIES["other"])
    # Translations repeat the English sections: cite the originals.
    hits = [h for h in kb.search(query, limit=3 * DOC_HITS) if not _translation(h.cite)]
    out.docs = [DocRef(_cite(h.cite), h.title, h.text) for h in hits[:DOC_HITS]]
    return out
