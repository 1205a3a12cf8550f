"""The assessment of a crash, computed with its reasons: actionable, trigger, impact.

syzbot asks a cloud model whether a bug is actionable and what its impact is; what can
be computed from the report is computed here, deterministically, and the rest is
``unknown``:

- **actionable** follows syzbot's moderation rule for use-after-free reports: the
  access stack, the allocation stack and the free stack, one object cache, the guilty
  file in one MAINTAINERS section, and a report neither corrupted nor truncated. The
  rule is for memory-safety reports with an object; for the others it is ``unknown``.
- **trigger** is the attack surface the call trace passes through (a table of frame
  patterns, most specific first): network receive, USB, a file system's mount or image,
  a VM exit, a user syscall (and which).
- **impact** is a table by crash type, refined by the faulting access
  (:mod:`assistant.rootcause.fault`): memory corruption, read-only, denial of service,
  or a warning (a ``WARN_ON`` that guards an ``if`` handled its condition: syzbot's
  exception, checked on the source line where the source is at hand).
- **privileges** (root or a user namespace needed to reach it) stay ``unknown``: a
  report does not show them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from assistant.rootcause.fault import FaultAnalysis
from assistant.triage.facts import CrashFacts, syscall_of
from assistant.triage.model import Crash

if TYPE_CHECKING:
    from assistant.knowledge import KnowledgeBase

UNKNOWN = "unknown"


@dataclass
class Verdict:
    """One verdict and the facts it stands on.

    :param verdict: the answer (``yes``/``no``/``unknown``, a surface, an impact class).
    :param reasons: one line per fact, each naming where it comes from.
    """

    verdict: str
    reasons: list[str] = field(default_factory=list)


@dataclass
class Assessment:
    """The assessment of one crash (``crash.assessment`` in ``kassist.triage/1``).

    :param surfaces: every trigger surface the trace shows, most specific first.
    """

    actionable: Verdict
    trigger: Verdict
    impact: Verdict
    privileges: Verdict
    surfaces: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return it as JSON-ready data."""
        return asdict(self)

    def rows(self) -> list[tuple[str, str, str]]:
        """Return ``(what, verdict, first reason)`` rows for a short table."""
        return [
            (name, v.verdict, v.reasons[0] if v.reasons else "")
            for name, v in (
                ("Actionable", self.actionable),
                ("Trigger", self.trigger),
                ("Impact", self.impact),
                ("Privileges", self.privileges),
            )
        ]


# --- actionable: syzbot's rule for use-after-free reports ---------------------------

#: Types the rule is about: a bad access to an object of a slab cache.
_OBJECT_TYPES = re.compile(r"^(KASAN|KFENCE|KMSAN)-(USE-AFTER-FREE|READ|WRITE|INVALID-FREE)")


@dataclass(frozen=True)
class ObjectStacks:
    """Where the object's allocation and free stacks and cache came from.

    The report's own (KASAN, KFENCE), or a dump's (slub_debug's tracking, read with drgn).
    """

    cache: str | None
    allocated: Sequence[str]
    freed: Sequence[str]
    source: str


def _report_stacks(facts: CrashFacts) -> ObjectStacks:
    return ObjectStacks(
        cache=facts.object_cache,
        allocated=facts.allocated_by.frames if facts.allocated_by else (),
        freed=facts.freed_by.frames if facts.freed_by else (),
        source="the report",
    )


def actionable(
    crash: Crash, sections: Sequence[str] | None, stacks: ObjectStacks | None = None
) -> Verdict:
    """Apply syzbot's moderation rule for use-after-free reports.

    :param sections: the MAINTAINERS sections of the guilty file, most specific first
        (``None``: not known: no guilty file or no knowledge base).
    :param stacks: the object's stacks from a dump; default: the report's.
    """
    if crash.corrupted:
        return Verdict("no", [f"the report is corrupted ({crash.corrupted_reason or 'triage'})"])
    facts = crash.crash_facts()
    stacks = stacks or _report_stacks(facts)
    if not _OBJECT_TYPES.match(crash.type) and not stacks.allocated and not stacks.freed:
        return Verdict(
            UNKNOWN,
            [f"syzbot's rule is for use-after-free reports; this is {crash.type}"],
        )
    # An out-of-bounds access has no free stack to show: the object is alive.
    freed = "USE-AFTER-FREE" in crash.type or "INVALID-FREE" in crash.type or bool(stacks.freed)
    needed = (
        ("access stack", bool(crash.call_trace)),
        ("allocation stack", bool(stacks.allocated)),
        ("free stack", bool(stacks.freed) or not freed),
        ("object cache", bool(stacks.cache)),
    )
    missing = [name for name, have in needed if not have]
    if missing:
        return Verdict("no", [f"{stacks.source} lacks the {', '.join(missing)}"])
    free_text = f", free stack ({stacks.freed[0]}...)" if stacks.freed else ""
    reasons = [
        f"access stack ({len(crash.call_trace)} frames), allocation stack "
        f"({stacks.allocated[0]}...){free_text} in {stacks.source}",
        f"one object cache: {stacks.cache}",
    ]
    if sections is None:
        why = (
            "no guilty file: the report has no file:line (symbolise it with --vmlinux)"
            if not crash.guilty_file
            else "no knowledge base: `kassist kb build`"
        )
        return Verdict(UNKNOWN, [*reasons, f"MAINTAINERS section not known ({why})"])
    specific = [s for s in sections if s != "THE REST"]
    if not specific:
        return Verdict("no", [*reasons, f"{crash.guilty_file} is in no MAINTAINERS section"])
    return Verdict(
        "yes", [*reasons, f"{crash.guilty_file or crash.frame}: MAINTAINERS section {specific[0]}"]
    )


def needs_maintainers(crash: Crash) -> bool:
    """Return whether a crash's "actionable" turns on its guilty file's MAINTAINERS
    sections: it has a guilty file and all else syzbot's rule asks (so that the knowledge
    base is opened only for such crashes)."""
    return bool(crash.guilty_file) and actionable(crash, ["any section"]).verdict == "yes"


def maintainer_sections(crash: Crash, kb: KnowledgeBase | None) -> list[str] | None:
    """Return the MAINTAINERS sections of a crash's guilty file, most specific first.

    :return: ``None`` when not known: no knowledge base, or no guilty file (a report
        without file:line; symbolised with ``--vmlinux`` it has one).
    """
    if kb is None or not crash.guilty_file:
        return None
    return [s.name for s in kb.maintainers(crash.guilty_file)]


# --- trigger surface ----------------------------------------------------------------

#: Surface → frame patterns, most specific first; the first row with a matching frame wins.
SURFACES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("VM (KVM exit or ioctl)", re.compile(r"^(vmx_handle_exit|svm_handle_exit|kvm_\w+|vcpu_run)$")),
    ("USB device", re.compile(r"^(hub_event|usb_\w+|hub_port_connect\w*|usb_probe_interface)$")),
    (
        "network receive",
        re.compile(
            r"^(__netif_receive_skb\w*|netif_receive_skb\w*|napi_poll|__napi_poll|"
            r"net_rx_action|ip_rcv\w*|ipv6_rcv|ip6_rcv\w*|tcp_v[46]_rcv|udp_rcv|"
            r"udpv6_rcv|process_backlog|gro_\w+|netif_rx\w*)$"
        ),
    ),
    (
        "file-system mount or image",
        re.compile(
            r"^(\w+_fill_super|mount_bdev|get_tree_bdev|vfs_get_tree|do_new_mount|"
            r"path_mount|legacy_get_tree)$"
        ),
    ),
)
_SYSCALL_ENTRY = re.compile(r"^(entry_SYSCALL_64\w*|do_syscall_64|el0_svc\w*|invoke_syscall)$")
_KERNEL_CONTEXT: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("kernel worker (workqueue)", re.compile(r"^(process_one_work|worker_thread)$")),
    ("interrupt or softirq", re.compile(r"^(__do_softirq|irq_exit\w*|handle_irq_event\w*)$")),
    ("kernel thread", re.compile(r"^(kthread|ret_from_fork)$")),
)


def _frames(crash: Crash) -> list[str]:
    return [f.function for f in crash.call_trace]


def trigger(crash: Crash) -> tuple[Verdict, list[str]]:
    """Name the trigger surface from the call trace, with the frame that shows it.

    :return: the verdict, and every surface found (most specific first).
    """
    frames = _frames(crash)
    found: list[tuple[str, str]] = []
    for surface, pattern in SURFACES:
        hit = next((f for f in frames if pattern.match(f)), None)
        if hit:
            found.append((surface, f"frame {hit}"))
    syscall = next((call for f in frames if (call := syscall_of(f))), None)
    if syscall:
        found.append((f"user syscall ({syscall})", f"frame of syscall {syscall}"))
    elif any(_SYSCALL_ENTRY.match(f) for f in frames):
        found.append(("user syscall", "the syscall entry is in the trace, not which syscall"))
    if not found:
        for context, pattern in _KERNEL_CONTEXT:
            hit = next((f for f in frames if pattern.match(f)), None)
            if hit:
                found.append((context, f"frame {hit}: no user-controlled entry in the trace"))
                break
    if not found:
        why = "no call trace" if not frames else "no frame of a known surface in the trace"
        return Verdict(UNKNOWN, [why]), []
    surface, reason = found[0]
    others = [s for s, _ in found[1:]]
    reasons = [reason] + ([f"also: {', '.join(others)}"] if others else [])
    return Verdict(surface, reasons), [s for s, _ in found]


# --- impact class -------------------------------------------------------------------

CORRUPTION = "memory corruption"
READ_ONLY = "read-only"
DOS = "denial of service"
WARNING = "warning"

#: Crash type pattern → (impact, reason); the first matching row wins.
IMPACT: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"^(KASAN|KFENCE)-INVALID-FREE$"), CORRUPTION, "a double or invalid free"),
    (
        re.compile(r"^(KASAN|KFENCE)-(USE-AFTER-FREE-)?WRITE$"),
        CORRUPTION,
        "a write to memory the code does not own",
    ),
    (re.compile(r"^KFENCE-MEMORY-CORRUPTION$"), CORRUPTION, "KFENCE found its canary overwritten"),
    (
        re.compile(r"^(KASAN|KFENCE|KMSAN)-(USE-AFTER-FREE-)?READ$"),
        READ_ONLY,
        "a read of memory the code does not own (an information leak at worst)",
    ),
    (
        re.compile(r"^KMSAN-(UNINIT-VALUE|INFO-LEAK)$"),
        READ_ONLY,
        "an uninitialised value was used or copied out",
    ),
    (
        re.compile(r"^(KASAN-)?NULL-POINTER-DEREFERENCE"),
        DOS,
        "a NULL pointer dereference: the first page is never mapped (mmap_min_addr)",
    ),
    (
        re.compile(r"^REFCOUNT_WARNING$"),
        CORRUPTION,
        "a reference count went wrong: the object can be used after its free",
    ),
    (
        re.compile(r"^(BUG|HANG|LOCKDEP|ATOMIC_SLEEP|LEAK|SOFT-LOCKUP|HARD-LOCKUP)$"),
        DOS,
        "the kernel stopped the task or the machine, or will hang or run out",
    ),
    (re.compile(r"^WARNING$"), WARNING, "a WARN_ON fired and the kernel went on"),
)
_CORRUPT_TITLES = re.compile(
    r"^(BUG: corrupted list|BUG: Object already free|BUG \S+ .*Poison "
    r"overwritten|BUG: Bad page|.*double[- ]free)",
    re.I,
)
#: ``if (WARN_ON(...))``, ``if (unlikely(WARN_ON_ONCE(...)))``, ``if (WARN(...))``.
_WARN_IN_IF = re.compile(r"\bif\s*\(\s*!?\s*(?:unlikely\s*\(\s*)?WARN(?:_ON)?(?:_ONCE)?\s*\(")
_WARN_BARE = re.compile(r"^\s*WARN(?:_ON)?(?:_ONCE)?\s*\(")

#: Reads a source line: (file as the report names it, line) → its text, or ``None``.
SourceLines = Callable[[str, int], str | None]


def _warning_impact(facts: CrashFacts, source: SourceLines | None) -> Verdict:
    where = facts.warning_location
    if not where or source is None:
        return Verdict(
            WARNING,
            [
                "a WARN_ON fired and the kernel went on",
                "whether it guards an if is unknown: " + ("no source" if where else "no location"),
            ],
        )
    path, _, line = where.rpartition(":")
    text = source(path, int(line)) if line.isdigit() else None
    if text is None:
        return Verdict(WARNING, ["a WARN_ON fired", f"{where}: the source line is not at hand"])
    if _WARN_IN_IF.search(text):
        return Verdict(
            WARNING,
            [f"{where} is `{text.strip()}`: the WARN_ON guards an if, the condition is handled"],
        )
    if _WARN_BARE.search(text):
        return Verdict(
            UNKNOWN,
            [
                f"{where} is `{text.strip()}`: a bare WARN_ON, the code goes on with the state it "
                "warned about"
            ],
        )
    return Verdict(WARNING, [f"{where} is `{text.strip()}`"])


def _fault_impact(fault: FaultAnalysis) -> Verdict | None:
    insn = fault.instruction
    kind = fault.address_kind
    if insn is None or insn.access is None or kind is None:
        return None
    what = f"`{insn.text}` {insn.access}s {fault.expression} = 0x{fault.address or 0:x}"
    if kind.kind in ("null", "near-null"):
        return Verdict(DOS, [f"{what}: {kind.meaning} (never mapped: mmap_min_addr)"])
    if insn.access == "write":
        return Verdict(CORRUPTION, [f"{what}: a wild write ({kind.meaning})"])
    return Verdict(READ_ONLY, [f"{what}: a wild read ({kind.meaning})"])


def impact(
    crash: Crash, fault: FaultAnalysis | None = None, source: SourceLines | None = None
) -> Verdict:
    """Class the crash's impact from its type, title and faulting access.

    :param fault: the log's faulting-instruction analysis (refines page faults and GPFs).
    :param source: reads a source line (the WARN_ON-in-an-if exception); ``None``: none.
    """
    if _CORRUPT_TITLES.match(crash.title):
        return Verdict(
            CORRUPTION, [f"the title says the kernel's memory is corrupted: {crash.title}"]
        )
    if crash.type == "WARNING":
        return _warning_impact(crash.crash_facts(), source)
    for pattern, verdict, reason in IMPACT:
        if pattern.match(crash.type):
            out = Verdict(verdict, [f"{crash.type}: {reason}"])
            if crash.panicked:
                out.reasons.append("the kernel panicked: the machine went down too")
            return out
    if fault is not None:
        refined = _fault_impact(fault)
        if refined is not None:
            return refined
    if crash.panicked:
        return Verdict(DOS, ["the kernel panicked; what the bug itself does is not known"])
    return Verdict(UNKNOWN, [f"{crash.type}: neither the type nor the faulting access says"])


def assess(
    crash: Crash,
    fault: FaultAnalysis | None = None,
    sections: Sequence[str] | None = None,
    stacks: ObjectStacks | None = None,
    source: SourceLines | None = None,
) -> Assessment:
    """Assess a crash: actionable, trigger surface, impact class, privileges.

    >>> assess(crash).impact.verdict  # doctest: +SKIP
    'memory corruption'

    :param fault: its faulting-instruction analysis
        (:func:`assistant.rootcause.fault.analyse_report`).
    :param sections: the guilty file's MAINTAINERS sections, ``None`` when not known.
    :param stacks: the object's cache and stacks read from a dump, if any.
    :param source: reads a source line, for the WARN_ON-in-an-if exception.
    """
    trig, surfaces = trigger(crash)
    return Assessment(
        actionable=actionable(crash, sections, stacks),
        trigger=trig,
        impact=impact(crash, fault, source),
        privileges=Verdict(
            UNKNOWN, ["the report does not show the privileges or namespaces needed to reach it"]
        ),
        surfaces=surfaces,
    )
