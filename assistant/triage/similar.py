"""The same bug under other titles: a second, non-binding link between signatures.

A signature (title + type) stays the store's key. Crashes with other titles can still
be one bug (Mu et al., NDSS 2022: 47% of 2,526 syzbot bugs' titles duplicate another's,
and only about one in five labelled duplicate pairs share the guilty function), so
kassist links signatures, never merges them, and shows why:

- **call stacks alike**: each crash's frames normalised as satyr and ABRT's FAF do
  (:func:`normalise_frames`: ``.isra``/``.constprop``/``.part``/``.cold`` cut, reporting,
  sanitizer, scheduler, interrupt and syscall-entry boilerplate dropped, inline frames
  kept as frames of their own, the trace started at the guilty frame), compared with a
  Levenshtein distance over the function names (:func:`stack_distance`: a substitution
  costs the Jaro-Winkler distance of the two names, and frame ``i`` weighs
  :data:`DECAY` ``** i``: the innermost frames say the most); signatures are grouped by
  average linkage and cut at :data:`CUT` (FAF's 0.3);
- **the same allocation and free stacks** (KASAN, KFENCE: ``Allocated by task`` /
  ``Freed by task``, their first :data:`STACK_DEPTH` frames);
- **the same guilty source file** (symbolised reports), unless it is generic code;
- **the same kind of bug at the same access site**: the same crash type (KASAN
  use-after-free read, WARNING...) in the same guilty function (not boilerplate, and not
  in two different guilty files): syzbot's own notion of one bug, and Mu et al.'s
  observation that duplicates share the access site. It also compares a report that
  printed no call trace beyond its guilty frame, which the stacks cannot.

:func:`link` tells whether two crashes are probably one bug and why (an :class:`Evidence`);
:func:`clusters` groups many. Pure: no store, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from assistant.triage import rules
from assistant.triage.model import Crash

#: Distance at or below which two call stacks are alike (ABRT FAF's cut).
CUT = 0.3
#: Frames of a call stack compared (from the guilty frame on).
FRAMES = 8
#: Weight of frame ``i`` (0: the guilty frame) in a stack's distance: ``DECAY ** i``.
DECAY = 0.5
#: Frames of an allocation or free stack that must be equal.
STACK_DEPTH = 4
#: Fewest frames a stack needs to be compared at all (fewer says nothing).
MIN_FRAMES = 2

#: Compiler suffixes cut from a function name (``tcp_close.isra.0`` -> ``tcp_close``).
_SUFFIX = re.compile(r"\.(?:isra|constprop|part|cold|llvm|lto_priv|localalias)(?:\.\d+)*.*$")
#: Frames of the reporting, sanitizer, scheduler, interrupt and entry machinery: the same
#: in every report, so they say nothing of the bug.
BOILERPLATE = re.compile(
    "|".join(
        (
            *rules.GENERIC_SKIP,
            r"^dump_stack", r"^show_stack", r"^show_trace", r"^__dump_stack", r"^__warn",
            r"^warn_slowpath", r"^report_bug$", r"^handle_bug$", r"^exc_", r"^asm_exc_",
            r"^do_error_trap", r"^do_trap", r"^die$", r"^__die", r"^oops_", r"^no_context",
            r"^__bad_area", r"^bad_area", r"^page_fault", r"^do_page_fault", r"^do_user_addr_fault",
            r"^kernelmode_fixup_or_oops", r"^__schedule$", r"^schedule$", r"^schedule_timeout",
            r"^preempt_schedule", r"^schedule_preempt", r"^entry_SYSCALL", r"^do_syscall_",
            r"^__do_sys_", r"^__x64_sys_", r"^__ia32_sys_", r"^__se_sys_", r"^x64_sys_call$",
            r"^syscall_exit", r"^ret_from_fork", r"^kthread$", r"^worker_thread$",
            r"^process_one_work$", r"^asm_sysvec_", r"^sysvec_", r"^__sysvec_", r"irq_exit",
            r"^__do_softirq$", r"^handle_softirqs$", r"^do_softirq", r"^run_ksoftirqd$",
            r"^smpboot_thread_fn$", r"^lock_acquire$", r"^__lock_acquire$", r"^lock_release$",
            r"^_printk$", r"^printk", r"^vprintk", r"^__might_", r"^___might_",
            r"^rcu_core", r"^rcu_do_batch$", r"^native_", r"^default_idle", r"^do_idle$",
            r"^cpu_startup_entry$", r"^start_secondary$", r"^secondary_startup",
        )
    )
)  # fmt: skip
#: Guilty files that say nothing alone: generic code every bug passes through.
_GENERIC_FILES = re.compile("|".join(p.pattern for p in rules.GUILTY_FILE_IGNORES))


def function_name(name: str) -> str:
    """Return a frame's function without its compiler suffix.

    >>> function_name("tcp_close.isra.0"), function_name("kassist_level2.constprop.0")
    ('tcp_close', 'kassist_level2')
    """
    return _SUFFIX.sub("", name)


def normalise_frames(names: Sequence[str], guilty: str | None = None) -> tuple[str, ...]:
    """Return the frames compared: suffixes cut, boilerplate dropped, from the guilty
    frame on (when it is among them), at most :data:`FRAMES`.

    :param names: function names, innermost first (inline frames as frames of their own).
    :param guilty: the report's guilty frame (its title's ``in FRAME``).
    """
    cut = [function_name(n) for n in names]
    kept = [n for n in cut if n and not BOILERPLATE.search(n)]
    if guilty:
        g = function_name(guilty)
        # The report names it (a hang's title may name a frame its trace does not show).
        kept = kept[kept.index(g) :] if g in kept else [g, *kept]
    return tuple(kept[:FRAMES])


@lru_cache(maxsize=65536)
def _name_distance(a: str, b: str) -> float:
    if a == b:
        return 0.0
    from rapidfuzz.distance import JaroWinkler

    return float(JaroWinkler.normalized_distance(a, b))


def stack_distance(a: Sequence[str], b: Sequence[str], decay: float = DECAY) -> float:
    """Return the edit distance of two frame sequences (0: the same, 1: nothing alike).

    An inserted or deleted frame ``i`` costs its weight ``decay ** i``; a substituted one
    the Jaro-Winkler distance of the two names times their mean weight
    (``smp_call_function_many`` for ``smp_call_function_single`` costs little); the sum
    is divided by the heavier sequence's weight.

    >>> stack_distance(["a", "b", "c"], ["a", "b", "c"]), stack_distance(["a"], ["b"])
    (0.0, 1.0)
    """
    if not a or not b:
        return 0.0 if not a and not b else 1.0
    wa = [decay**i for i in range(len(a))]
    wb = [decay**j for j in range(len(b))]
    row = [0.0]
    for w in wb:
        row.append(row[-1] + w)
    for i, name in enumerate(a):
        prev, row = row, [row[0] + wa[i]]
        for j, other in enumerate(b):
            row.append(min(
                prev[j + 1] + wa[i],
                row[j] + wb[j],
                prev[j] + _name_distance(name, other) * (wa[i] + wb[j]) / 2,
            ))  # fmt: skip
    return row[-1] / max(sum(wa), sum(wb))


@dataclass(frozen=True)
class Features:
    """What two crashes are compared by (stored with each signature).

    :param frames: the normalised call stack (:func:`normalise_frames`).
    :param alloc: the allocation stack's first frames (KASAN, KFENCE), or empty.
    :param free: the free stack's first frames, or empty.
    :param guilty_file: the guilty source file of a symbolised report.
    :param kind: the crash's type (``KASAN-USE-AFTER-FREE-READ``...), or ``None``.
    """

    frames: tuple[str, ...] = ()
    alloc: tuple[str, ...] = ()
    free: tuple[str, ...] = ()
    guilty_file: str | None = None
    kind: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return them as JSON-ready data."""
        return {"frames": list(self.frames), "alloc": list(self.alloc),
                "free": list(self.free), "guilty_file": self.guilty_file,
                "kind": self.kind}  # fmt: skip

    @classmethod
    def from_dict(cls, doc: Any) -> Features:
        """Read them back (anything malformed reads as nothing)."""
        if not isinstance(doc, dict):
            return cls()

        def names(key: str) -> tuple[str, ...]:
            value = doc.get(key)
            return tuple(str(x) for x in value) if isinstance(value, list) else ()

        gf, kind = doc.get("guilty_file"), doc.get("kind")
        return cls(names("frames"), names("alloc"), names("free"),
                   gf if isinstance(gf, str) else None,
                   kind if isinstance(kind, str) else None)  # fmt: skip


def features(crash: Crash) -> Features:
    """Return what a crash is compared by."""
    facts = crash.crash_facts()
    alloc = facts.allocated_by.frames if facts.allocated_by else []
    free = facts.freed_by.frames if facts.freed_by else []
    return Features(
        frames=normalise_frames([f.function for f in crash.call_trace], crash.frame),
        alloc=tuple(function_name(n) for n in alloc[:STACK_DEPTH]),
        free=tuple(function_name(n) for n in free[:STACK_DEPTH]),
        guilty_file=crash.guilty_file,
        kind=crash.type or None,
    )


@dataclass
class Evidence:
    """Why two crashes are probably one bug (empty: they are not).

    :param distance: the call stacks' distance (``None``: too short to compare).
    :param same_alloc_free: the allocation (and free) stacks are equal.
    :param same_file: the guilty source file they share.
    :param same_site: the guilty function where both are the same kind of bug.
    """

    distance: float | None = None
    same_alloc_free: bool = False
    same_file: str | None = None
    same_site: str | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def linked(self) -> bool:
        """Tell whether the evidence links them."""
        return bool(self.reasons)

    def text(self) -> str:
        """Return the evidence in a few words, for a person."""
        return "; ".join(self.reasons)


def link(a: Features, b: Features, cut: float = CUT) -> Evidence:
    """Tell whether two crashes are probably the same bug, and why."""
    ev = Evidence()
    if len(a.frames) >= MIN_FRAMES and len(b.frames) >= MIN_FRAMES:
        ev.distance = stack_distance(a.frames, b.frames)
        if ev.distance <= cut:
            ev.reasons.append(f"call stacks {100 * (1 - ev.distance):.0f}% alike")
    if a.alloc and a.alloc == b.alloc and a.free == b.free:
        ev.same_alloc_free = True
        what = "allocation and free stacks" if a.free else "allocation stack"
        ev.reasons.append(f"same {what} ({a.alloc[0]})")
    if (
        a.guilty_file
        and a.guilty_file == b.guilty_file
        and not _GENERIC_FILES.search(a.guilty_file)
    ):
        ev.same_file = a.guilty_file
        ev.reasons.append(f"same guilty file {a.guilty_file}")
    site = _same_site(a, b)
    if site is not None:
        ev.same_site = site
        ev.reasons.append(f"same kind of bug ({a.kind}) in {site}")
    return ev


def _same_site(a: Features, b: Features) -> str | None:
    # The guilty function both are the same kind of bug in, if any (not boilerplate, not
    # two functions of one name in different files).
    if not (a.frames and b.frames and a.kind and a.kind == b.kind):
        return None
    site = a.frames[0]
    if site != b.frames[0] or BOILERPLATE.search(site):
        return None
    if a.guilty_file and b.guilty_file and a.guilty_file != b.guilty_file:
        return None
    return site


def pair_distance(a: Features, b: Features, cut: float = CUT) -> float:
    """Return the distance clustering uses: 0 where other evidence links them, else the
    call stacks' distance (1 when they cannot be compared)."""
    ev = link(a, b, cut)
    if ev.same_alloc_free or ev.same_file or ev.same_site:
        return 0.0
    return ev.distance if ev.distance is not None else 1.0


def clusters(items: Sequence[Features], cut: float = CUT) -> list[int]:
    """Group crashes by average linkage over :func:`pair_distance`, cut at ``cut``;
    return each item's cluster number."""
    import numpy as np

    n = len(items)
    if n == 0:
        return []
    d = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            d[i, j] = d[j, i] = pair_distance(items[i], items[j], cut)
    np.fill_diagonal(d, np.inf)
    size = np.ones(n)
    label = list(range(n))
    alive = np.ones(n, dtype=bool)
    while True:
        flat = int(np.argmin(d))
        i, j = divmod(flat, n)
        if d[i, j] > cut:
            break
        # merge j into i (Lance-Williams, average linkage)
        merged = (size[i] * d[i] + size[j] * d[j]) / (size[i] + size[j])
        d[i, :] = merged
        d[:, i] = merged
        d[i, i] = np.inf
        d[j, :] = np.inf
        d[:, j] = np.inf
        size[i] += size[j]
        alive[j] = False
        label = [i if x == j else x for x in label]
    return label
