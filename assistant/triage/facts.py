"""What a crash report itself says, extracted per family, before any model reads it.

Each family's report has lines of its own, printed by the kernel in fixed formats:

- KASAN (``mm/kasan/report.c``): ``Read of size %zu at addr %px by task %s/%d``,
  ``Allocated by task %u:`` / ``Freed by task %u:`` and their stacks, ``The buggy
  address belongs to the object at %px\\n which belongs to the cache %s of size %d``;
- KFENCE (``mm/kfence/report.c``): ``Use-after-free read at 0x%p (in kfence-#%td):``,
  ``kfence-#%td: 0x%p-0x%p, size=%u, cache=%s``, ``allocated by task %d on cpu %d``;
- KMSAN (``mm/kmsan/report.c``): ``Uninit was created at:``, ``Uninit was stored to
  memory at:``, ``Bytes %d-%d of %d are uninitialized``;
- lockdep (``kernel/locking/lockdep.c``): ``%s/%d is trying to acquire lock:``, ``but
  task is already holding lock:``, ``-> #%d (%s){...}:`` for the chain;
- the hung-task detector (``kernel/hung_task.c``): ``INFO: task %s:%d blocked for more
  than %ld seconds.``, then ``Showing all locks held in the system:`` with ``%d lock(s)
  held by %s/%d:`` and `` #%d: %p (%s){...}`` rows;
- RCU (``kernel/rcu/tree_stall.h``): `` %d-...: (%lu ticks this GP)`` rows per CPU,
  ``(detected by %d, t=%ld jiffies, ...)``, ``P%d`` for blocked tasks;
- ``WARNING: CPU: %d PID: %d at %s:%d %pS`` (``kernel/panic.c``, ``__warn``);
- the OOM killer (``mm/oom_kill.c``): ``oom-kill:constraint=%s,...``, ``Out of memory:
  Killed process %d (%s)``, and the task table's ``[  pid  ]   uid  tgid total_vm
  rss ...`` rows.

:func:`extract_facts` is pure: it reads the report text and returns a
:class:`CrashFacts`; the field is part of a crash's ``kassist.triage/1`` JSON
(``crash.facts``, see the README's triage section).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from probes.printk_time import without_stamp

#: The most frames kept of an allocation or free stack (innermost first).
STACK_FRAMES = 6
#: The most lock holders, chain links and OOM consumers kept.
MAX_ITEMS = 8

#: A printk prefix: the timestamp and the caller id (``[ 12.345678][ T123] ``).
_FUNC = r"[A-Za-z_][\w.]*"
_FRAME = re.compile(
    rf"^\s*(?:\[<[0-9a-f]+>\]\s*)?(?:\?\s*)?({_FUNC})(?:\+0x[0-9a-f]+/0x[0-9a-f]+)?"
)
_ACCESS = re.compile(
    r"^(?P<kind>Read|Write) of size (?P<size>\d+) at addr (?P<addr>[0-9a-fx]+)"
    r"(?: by task (?P<task>\S+?)/(?P<pid>\d+))?"
)
_KFENCE_ACCESS = re.compile(
    r"^(?P<what>Use-after-free|Out-of-bounds|Invalid) (?P<kind>read|write) at (?P<addr>0x[0-9a-f]+)"
)
_KFENCE_OBJECT = re.compile(
    r"^kfence-#\d+: 0x[0-9a-f]+-0x[0-9a-f]+, size=(?P<size>\d+), cache=(?P<cache>\S+)"
)
_CACHE = re.compile(r"which belongs to the cache (?P<cache>\S+) of size (?P<size>\d+)")
_STACK_HEAD = re.compile(
    r"^(?P<which>Allocated|Freed|allocated|freed) by task (?P<pid>\d+)"
    r"(?: on cpu \d+)?(?: at [\d.]+s)?(?: \((?P<comm>[^)]*)\))?:?$"
)
_KMSAN_ORIGIN = re.compile(r"^(?P<what>Uninit was (?:created|stored to memory)) at:$")
_KMSAN_BYTES = re.compile(
    r"^Bytes (?P<first>\d+)-(?P<last>\d+) of (?P<total>\d+) are uninitialized"
)
_LOCK_CLASS = re.compile(r"\((?P<cls>.+?)\)\{[^}]*\}")
_LOCKDEP_TRYING = re.compile(r"^(?P<task>\S+)/(?P<pid>\d+)(?: \[.*\])? is trying to acquire")
_CHAIN_LINK = re.compile(r"^-> #\d+ \((?P<cls>.+?)\)\{[^}]*\}")
_HUNG = re.compile(
    r"^INFO: task (?P<task>.+?):(?P<pid>\d+) blocked for more than (?P<secs>\d+) seconds"
)
_HELD_BY = re.compile(r"^\d+ locks? held by (?P<holder>\S+?/\d+):")
_HELD_LOCK = re.compile(r"^#\d+:\s+(?:[0-9a-f]+\s+)?\((?P<cls>.+?)\)\{")
_RCU_CPU = re.compile(r"^(?:rcu:\s+)?(?P<cpu>\d+)-\.\.\.")
_RCU_DETECTED = re.compile(r"\(detected by (?P<cpu>\d+), t=(?P<jiffies>\d+) jiffies")
_RCU_TASK = re.compile(r"\bP(?P<pid>\d+)\b")
_SOFT_LOCKUP = re.compile(
    r"soft lockup - CPU#(?P<cpu>\d+) stuck for (?P<secs>\d+)s! \[(?P<task>.+?):(?P<pid>\d+)\]"
)
_WARNING = re.compile(r"^WARNING: CPU: \d+ PID: \d+ at (?P<file>\S+?):(?P<line>\d+)")
# Where the CPU was when it faulted, as each architecture's oops prints it: x86's
# ``RIP: 0010:f+0x1/0x2`` (kernel mode only: CS 0010) or ``IP: f+0x1/0x2``, arm's
# ``PC is at f+0x1/0x2``, arm64's ``pc : f+0x1/0x2``.
_FAULT_IP = re.compile(
    r"^(?:RIP: 0010:|IP:|PC is at|pc :)\s*(?:\[<[0-9a-f]+>\]\s*)*(?P<func>[A-Za-z_][\w.]*)\+0x"
)
# The address of a bad kernel access (arch/x86/mm/fault.c, arch/arm*/mm/fault.c, KASAN's
# shadow check for a general protection fault).
_FAULT_ADDRESS = re.compile(
    r"unable to handle (?:kernel )?(?:paging request|NULL pointer dereference|page fault)"
    r"(?: for address:| at(?: virtual address)?) (?P<addr>[0-9a-fx]+)"
    r"|probably for non-canonical address (?P<noncanon>0x[0-9a-f]+)"
    r"|KASAN: (?:null-ptr-deref|maybe wild-memory-access) in range "
    r"\[(?P<range>0x[0-9a-f]+-0x[0-9a-f]+)\]"
    r"|^Unhandled fault: .*? at (?P<arm>0x[0-9a-f]+)",
    re.IGNORECASE,
)
# ``kernel BUG at fs/ext4/inode.c:2345!`` (include/asm-generic/bug.h), a Rust panic's
# ``panicked at drivers/android/binder/node.rs:877:13:``.
_BUG_AT = re.compile(
    r"(?:kernel BUG at|rust_kernel: panicked at) (?P<file>[\w./-]+\.(?:c|h|rs)):(?P<line>\d+)"
)
# The running work item of a kworker (kernel/workqueue.c, print_worker_info).
_WORKQUEUE = re.compile(r"^Workqueue: (?P<wq>\S+) (?P<func>[A-Za-z_][\w.]*)")
_OOM_CONSTRAINT = re.compile(r"oom-kill:constraint=(?P<constraint>\w+)")
_OOM_KILLED = re.compile(
    r"(?:Out of memory|Memory cgroup out of memory)(?: \(oom_kill_allocating_task\))?: "
    r"Killed process (?P<pid>\d+) \((?P<comm>[^)]*)\)"
)
_OOM_ROW = re.compile(
    r"^\[\s*(?P<pid>\d+)\]\s+\d+\s+\d+\s+(?P<total_vm>\d+)\s+(?P<rss>\d+)\s+.*?\s(?P<name>\S+)$"
)


@dataclass
class AllocStack:
    """Where a bad object was allocated or freed (KASAN, KFENCE).

    :param task: the task's PID as the report names it (``Freed by task 3568``).
    :param comm: its command name, when the report gives one (KFENCE does not).
    :param frames: the stack's functions, innermost first, the allocator's own left out.
    """

    pid: int
    comm: str | None = None
    frames: list[str] = field(default_factory=list)


@dataclass
class CrashFacts:
    """What the crash report itself says, by family; a field is ``None`` or empty where
    the report does not say it.

    :param family: ``memory-safety``, ``lockdep``, ``hang``, ``rcu-stall``,
        ``soft-lockup``, ``warning``, ``oom`` or ``other``.
    :param access: ``read`` or ``write`` (KASAN, KFENCE).
    :param access_size: the bad access's size in bytes.
    :param address: the bad access's address, as printed.
    :param object_cache: the slab cache of the object (``kmalloc-128``).
    :param object_size: the object's size in bytes.
    :param allocated_by: where the object was allocated.
    :param freed_by: where it was freed.
    :param uninit_origin: KMSAN: the functions where the uninitialised value was created.
    :param uninit_bytes: KMSAN: ``"0-3 of 4"``.
    :param locks: lockdep: the lock being acquired, then the one already held.
    :param lock_chain: lockdep: the existing dependency chain's lock classes, as printed.
    :param hung_task: ``comm:pid`` of the hung or stuck task.
    :param hung_seconds: how long it was blocked or stuck, in seconds.
    :param held_locks: ``task/pid: lock class`` rows of ``Showing all locks held``
        (the hung-task detector's own ``rcu_read_lock`` left out).
    :param stall_cpus: RCU: the stalled CPUs.
    :param stall_tasks: RCU: the PIDs of the tasks blocking the grace period.
    :param stall_jiffies: RCU: how long the grace period has lasted, in jiffies.
    :param warning_location: ``file:line`` of a WARNING.
    :param fault_address: the address of a bad kernel access, as printed (an oops's
        ``paging request at``, a general protection fault's non-canonical address or
        KASAN's ``in range [a-b]``).
    :param fault_ip: the function the CPU was executing when it faulted (``RIP:``,
        ``IP:``, ``PC is at``, ``pc :``).
    :param bug_location: ``file:line`` of a ``kernel BUG at`` (or a Rust panic).
    :param workqueue: ``name function`` of the work item a kworker was running.
    :param oom_constraint: ``CONSTRAINT_NONE``, ``CONSTRAINT_MEMCG``...
    :param oom_victim: ``comm (pid N)`` of the killed task.
    :param oom_consumers: ``name (pid N): R pages rss`` of the largest tasks, largest first.
    """

    family: str = "other"
    access: str | None = None
    access_size: int | None = None
    address: str | None = None
    object_cache: str | None = None
    object_size: int | None = None
    allocated_by: AllocStack | None = None
    freed_by: AllocStack | None = None
    uninit_origin: list[str] = field(default_factory=list)
    uninit_bytes: str | None = None
    locks: list[str] = field(default_factory=list)
    lock_chain: list[str] = field(default_factory=list)
    hung_task: str | None = None
    hung_seconds: int | None = None
    held_locks: list[str] = field(default_factory=list)
    stall_cpus: list[int] = field(default_factory=list)
    stall_tasks: list[int] = field(default_factory=list)
    stall_jiffies: int | None = None
    warning_location: str | None = None
    fault_address: str | None = None
    fault_ip: str | None = None
    bug_location: str | None = None
    workqueue: str | None = None
    oom_constraint: str | None = None
    oom_victim: str | None = None
    oom_consumers: list[str] = field(default_factory=list)


#: The helpers a system call's body calls, named after it (``ksys_write``,
#: ``__sys_sendto``): they do the call's work, where the wrappers below only enter it.
SYSCALL_HELPERS = ("ksys", "__sys")
#: A system call's own frame, every prefix the kernel has named one with: the x86-64,
#: ia32 and arm64 wrappers (``__x64_sys_``, ``__ia32_sys_``, ``__arm64_sys_``, since 4.17),
#: ``SYSCALL_DEFINE``'s ``__se_sys_``/``__do_sys_`` and, before 4.17, ``SyS_``/``SYSC_``,
#: their compat twins, and the :data:`SYSCALL_HELPERS`; ``prefix`` is the prefix without
#: its ``_``, ``call`` the system call's name (a ``.cold``/``.isra`` suffix dropped).
SYSCALL_FRAME = re.compile(
    r"^(?P<prefix>__x64_sys|__ia32_sys|__ia32_compat_sys|__do_compat_sys|__se_compat_sys|"
    r"__do_sys|__se_sys|SyS|SYSC|compat_SyS|C_SYSC|__arm64_sys|__arm64_compat_sys|"
    + "|".join(SYSCALL_HELPERS)
    + r")_(?P<call>[a-z0-9]+(?:_[a-z0-9]+)*?)(?:\.\w+)*$"
)


def syscall_of(function: str) -> str | None:
    """Return the system call a frame's function implements (``SYSC_sendto`` →
    ``sendto``), or ``None`` when it is not a system call's frame."""
    m = SYSCALL_FRAME.match(function)
    return m.group("call") if m else None


def is_syscall_wrapper(function: str) -> bool:
    """Tell whether a frame only enters a system call (``__x64_sys_sendto``,
    ``SyS_sendto``): a system call's frame (:func:`syscall_of`) that is not one of the
    :data:`SYSCALL_HELPERS`, which do the call's work."""
    m = SYSCALL_FRAME.match(function)
    return m is not None and m.group("prefix") not in SYSCALL_HELPERS


#: Title prefix → family; the first matching row wins.
FAMILIES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("KASAN:", "KFENCE:", "KMSAN:", "BUG: KASAN", "UBSAN: array-index"), "memory-safety"),
    (
        ("BUG: corrupted list", "BUG: unable to handle kernel paging", "BUG: Object already free"),
        "memory-safety",
    ),
    (
        (
            "possible deadlock",
            "inconsistent lock state",
            "WARNING: possible circular",
            "BUG: bad unlock balance",
            "WARNING: bad unlock balance",
            "BUG: held lock freed",
            "WARNING: held lock freed",
            "WARNING: nested lock",
            "WARNING: still has locks held",
            "BUG: still has locks held",
            "WARNING: locking bug",
            "WARNING: lock held",
            "WARNING: suspicious RCU usage",
        ),
        "lockdep",
    ),
    (("INFO: task hung", "INFO: task can't die"), "hang"),
    (("INFO: rcu detected stall",), "rcu-stall"),
    (("BUG: soft lockup", "watchdog: BUG: soft lockup"), "soft-lockup"),
    (("WARNING",), "warning"),
    (("OOM kill", "Out of memory", "out of memory"), "oom"),
)


def family_of(title: str) -> str:
    """Return the crash family of a title (see :class:`CrashFacts`)."""
    for prefixes, family in FAMILIES:
        if title.startswith(prefixes):
            return family
    return "other"


def _clean_lines(report: str) -> list[str]:
    return [without_stamp(line).strip() for line in report.splitlines()]


# Frames of the allocator and the sanitizer's own stack saving, left out of a stack.
_ALLOC_NOISE = re.compile(
    r"^(?:save_stack|kasan_\w+|__kasan_\w+|set_track|stack_trace_save|kmsan_\w+|__msan_\w+|"
    r"____kasan_\w+|kfence_\w+|__kfence_\w+|slab_\w+_hook|slab_post_alloc_hook|"
    r"trace_kmalloc|__kmalloc_track_caller|kmem_cache_alloc_trace|kasan_save_\w+)$"
)


def _stack(lines: list[str], start: int, skip_noise: bool = True) -> list[str]:
    frames: list[str] = []
    for line in lines[start:]:
        if not line or (line.endswith(":") and not line.startswith("?")):
            break
        m = _FRAME.match(line)
        if m is None:
            break
        name = m.group(1)
        if skip_noise and _ALLOC_NOISE.match(name):
            continue
        frames.append(name)
        if len(frames) >= STACK_FRAMES:
            break
    return frames


def _memory_safety(lines: list[str], facts: CrashFacts) -> None:
    for i, line in enumerate(lines):
        if facts.access is None and (m := _ACCESS.match(line)):
            facts.access = m.group("kind").lower()
            facts.access_size = int(m.group("size"))
            facts.address = m.group("addr")
        elif facts.access is None and (m := _KFENCE_ACCESS.match(line)):
            facts.access = m.group("kind")
            facts.address = m.group("addr")
        elif facts.object_cache is None and (
            m := _CACHE.search(line) or _KFENCE_OBJECT.match(line)
        ):
            facts.object_cache = m.group("cache")
            facts.object_size = int(m.group("size"))
        elif m := _STACK_HEAD.match(line):
            stack = AllocStack(int(m.group("pid")), m.group("comm"), _stack(lines, i + 1))
            if not stack.frames:
                continue  # a header with no stack under it (a cut or corrupted report)
            if m.group("which").lower() == "allocated" and facts.allocated_by is None:
                facts.allocated_by = stack
            elif m.group("which").lower() == "freed" and facts.freed_by is None:
                facts.freed_by = stack
        elif not facts.uninit_origin and _KMSAN_ORIGIN.match(line):
            facts.uninit_origin = _stack(lines, i + 1)
        elif facts.uninit_bytes is None and (m := _KMSAN_BYTES.match(line)):
            facts.uninit_bytes = f"{m.group('first')}-{m.group('last')} of {m.group('total')}"


_ALREADY_HOLDING = ("but task is already holding", "and this task is already holding")


def _lock_after(lines: list[str], i: int) -> str | None:
    for line in lines[i + 1 : i + 3]:
        if m := _LOCK_CLASS.search(line):
            return m.group("cls")
    return None


def _lockdep(lines: list[str], facts: CrashFacts) -> None:
    wanted = held = None
    for i, line in enumerate(lines):
        if wanted is None and _LOCKDEP_TRYING.match(line):
            wanted = _lock_after(lines, i)
        elif held is None and line.startswith(_ALREADY_HOLDING):
            held = _lock_after(lines, i)
        elif (
            (m := _CHAIN_LINK.match(line))
            and len(facts.lock_chain) < MAX_ITEMS
            and m.group("cls") not in facts.lock_chain
        ):
            facts.lock_chain.append(m.group("cls"))
    facts.locks = [lock for lock in (wanted, held) if lock]


def _held_locks(lines: list[str], facts: CrashFacts) -> None:
    try:
        start = lines.index("Showing all locks held in the system:")
    except ValueError:
        return
    holder = None
    for line in lines[start + 1 :]:
        if m := _HELD_BY.match(line):
            holder = m.group("holder")
        elif holder and (m := _HELD_LOCK.match(line)):
            row = f"{holder}: {m.group('cls')}"
            if holder.startswith("khungtaskd/") and m.group("cls") == "rcu_read_lock":
                continue  # the detector's own lock while it prints this list
            if row not in facts.held_locks:
                facts.held_locks.append(row)
            if len(facts.held_locks) >= MAX_ITEMS:
                return
        elif line.startswith("=") or line.startswith("NMI backtrace"):
            return


def _hang(lines: list[str], facts: CrashFacts) -> None:
    for line in lines:
        if m := _HUNG.match(line):
            facts.hung_task = f"{m.group('task')}:{m.group('pid')}"
            facts.hung_seconds = int(m.group("secs"))
            break
    _held_locks(lines, facts)


def _rcu_stall(lines: list[str], facts: CrashFacts) -> None:
    for line in lines:
        if m := _RCU_CPU.match(line):
            cpu = int(m.group("cpu"))
            if cpu not in facts.stall_cpus:
                facts.stall_cpus.append(cpu)
        elif m := _RCU_DETECTED.search(line):
            facts.stall_jiffies = facts.stall_jiffies or int(m.group("jiffies"))
        elif line.startswith("Tasks blocked on") or "blocking rcu_node" in line:
            for pid in _RCU_TASK.findall(line):
                if int(pid) not in facts.stall_tasks:
                    facts.stall_tasks.append(int(pid))
    _held_locks(lines, facts)


def _soft_lockup(lines: list[str], facts: CrashFacts) -> None:
    for line in lines:
        if m := _SOFT_LOCKUP.search(line):
            facts.hung_task = f"{m.group('task')}:{m.group('pid')}"
            facts.hung_seconds = int(m.group("secs"))
            facts.stall_cpus = [int(m.group("cpu"))]
            return


def _warning(lines: list[str], facts: CrashFacts) -> None:
    for line in lines:
        if m := _WARNING.match(line):
            facts.warning_location = f"{m.group('file')}:{m.group('line')}"
            return


def _oops(lines: list[str], facts: CrashFacts) -> None:
    # The lines every family's report may hold: where the CPU was, the bad address, a
    # BUG()'s location, a kworker's work item. The first of each is kept.
    for line in lines:
        if facts.fault_ip is None and (m := _FAULT_IP.match(line)):
            facts.fault_ip = m.group("func")
        elif facts.fault_address is None and (m := _FAULT_ADDRESS.search(line)):
            facts.fault_address = next(g for g in m.groups() if g)
        elif facts.bug_location is None and (m := _BUG_AT.search(line)):
            facts.bug_location = f"{m.group('file')}:{m.group('line')}"
        elif facts.workqueue is None and (m := _WORKQUEUE.match(line)):
            facts.workqueue = f"{m.group('wq')} {m.group('func')}"


def _oom(lines: list[str], facts: CrashFacts) -> None:
    consumers: list[tuple[int, str]] = []
    for line in lines:
        if facts.oom_constraint is None and (m := _OOM_CONSTRAINT.search(line)):
            facts.oom_constraint = m.group("constraint")
        elif facts.oom_victim is None and (m := _OOM_KILLED.search(line)):
            facts.oom_victim = f"{m.group('comm')} (pid {m.group('pid')})"
        elif m := _OOM_ROW.match(line):
            rss = int(m.group("rss"))
            consumers.append((rss, f"{m.group('name')} (pid {m.group('pid')}): {rss} pages rss"))
    consumers.sort(key=lambda c: -c[0])
    facts.oom_consumers = [text for _, text in consumers[:MAX_ITEMS]]


#: Family → its extractor (the OOM one runs for every family: a report may hold one).
EXTRACTORS: dict[str, Callable[[list[str], CrashFacts], None]] = {
    "memory-safety": _memory_safety,
    "lockdep": _lockdep,
    "hang": _hang,
    "rcu-stall": _rcu_stall,
    "soft-lockup": _soft_lockup,
    "warning": _warning,
    "oom": _oom,
}


def extract_facts(title: str, report: str) -> CrashFacts:
    """Extract what a crash report says about its own family.

    :param title: the crash's title (it decides the family).
    :param report: the report's text, printk prefixes and all.

    >>> f = extract_facts("KASAN: use-after-free Read in f", "Read of size 8 at addr ff")
    >>> (f.family, f.access, f.access_size)
    ('memory-safety', 'read', 8)
    """
    facts = CrashFacts(family=family_of(title))
    lines = _clean_lines(report)
    extractor = EXTRACTORS.get(facts.family)
    if extractor is not None:
        extractor(lines, facts)
    if facts.family != "oom" and any("invoked oom-killer" in line for line in lines):
        _oom(lines, facts)
    if facts.family == "other":
        _warning(lines, facts)  # a BUG or oops that follows a WARNING names where
    _oops(lines, facts)
    return facts
