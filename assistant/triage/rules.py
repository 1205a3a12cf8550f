"""The tables of crash triage: oops definitions, title formats, frames to skip, crash types.

kassist names kernel crashes the way syzbot does, so that a crash found here
can be matched by title against syzbot and lore.kernel.org. These tables are a
Python re-statement of the Linux tables of syzkaller's ``pkg/report``
(``linux.go``, ``report.go``, ``crash/title_to_type.go``; Copyright 2016-2025
syzkaller project authors, Apache License 2.0, https://github.com/google/syzkaller).
The engine that reads them lives in :mod:`assistant.triage.parse`.

Everything here is data: an oops is a header substring plus formats tried from
the most specific to the most generic; a format is a title regex, an optional
report regex, a title template, the frames to pick and skip, and flags.
Regexes use the shorthands ``{{ADDR}}``, ``{{PC}}``, ``{{FUNC}}`` and ``{{SRC}}``
(see :func:`compile_re`). Templates use ``{N}`` for the N-th (1-based) argument:
the groups of the report (or title) regex followed by the extracted frames.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from probes import printk_time

# ---------------------------------------------------------------------------
# Regex shorthands
# ---------------------------------------------------------------------------

#: shorthand → regex, expanded by :func:`compile_re`.
SHORTHANDS: dict[str, str] = {
    "{{ADDR}}": r"0x[0-9a-f]+",
    "{{PC}}": r"\[\<?(?:0x)?[0-9a-f]+\>?\]",
    "{{FUNC}}": r"([a-zA-Z0-9_]+)(?:\.|\+)",
    "{{SRC}}": r"([a-zA-Z0-9\-_/.]+\.[a-z]+:[0-9]+)",
}


def compile_re(pattern: str) -> re.Pattern[str]:
    """Compile a rule regex after expanding the shorthands (ASCII classes, like RE2)."""
    for short, full in SHORTHANDS.items():
        pattern = pattern.replace(short, full)
    return re.compile(pattern, re.ASCII)


#: The marker part of a stack format that means "parse a stack trace from here".
PARSE_STACK_TRACE = re.compile(r"\A\Z(?#parseStackTrace)")

RIP_FRAME = compile_re(
    r"(?:IP|NIP|pc |PC is at):? (?:(?:[0-9]+:)?(?:{{PC}} +){0,2}{{FUNC}}|(?:[0-9]+:)?0x[0-9a-f]+|"
    r"(?:[0-9]+:)?{{PC}} +\[< *\(null\)>\] +\(null\)|[0-9]+: +\(null\))"
)
CALL_TRACE = compile_re(r"(?:Call (?:T|t)race:)|(?:Backtrace:)")


@dataclass(frozen=True)
class StackFmt:
    """How to find the guilty frame of a report.

    :param parts: regexes matched line by line in order; a capturing one yields a
        frame; :data:`PARSE_STACK_TRACE` parses a call trace from there.
    :param parts2: tried when ``parts`` finds no frame.
    :param skip: frame patterns to skip for this format (besides the generic ones).
    :param extractor: a named custom frame chooser: ``"stall"`` or ``"hang"``.
    """

    parts: tuple[re.Pattern[str], ...]
    parts2: tuple[re.Pattern[str], ...] = ()
    skip: tuple[str, ...] = ()
    extractor: str | None = None


@dataclass(frozen=True)
class OopsFormat:
    """One title format of an oops, tried from the most specific to the most generic.

    :param title: the regex that recognises this format anywhere in the report.
    :param fmt: the title template, ``{N}`` being the N-th argument (1-based).
    :param report: if set, must also match; its groups replace the title's.
    :param alt: alternative title templates.
    :param stack: how to extract the frame appended to the arguments.
    :param no_stack_trace: the report has no call trace by nature.
    :param corrupted: a title matched by this format means a damaged report.
    """

    title: re.Pattern[str]
    fmt: str
    report: re.Pattern[str] | None = None
    alt: tuple[str, ...] = ()
    stack: StackFmt | None = None
    no_stack_trace: bool = False
    corrupted: bool = False


@dataclass(frozen=True)
class Oops:
    """An oops family: a header substring, its formats and the lines that only look like it."""

    header: str
    formats: tuple[OopsFormat, ...]
    suppressions: tuple[re.Pattern[str], ...] = field(default_factory=tuple)


def _c(*patterns: str) -> tuple[re.Pattern[str], ...]:
    return tuple(compile_re(p) for p in patterns)


def _stack(
    *parts: re.Pattern[str] | str,
    skip: tuple[str, ...] = (),
    extractor: str | None = None,
    parts2: tuple[re.Pattern[str] | str, ...] = (),
) -> StackFmt:
    def conv(p: re.Pattern[str] | str) -> re.Pattern[str]:
        return compile_re(p) if isinstance(p, str) else p

    return StackFmt(tuple(conv(p) for p in parts), tuple(conv(p) for p in parts2), skip, extractor)


def _warning_stack(*skip: str) -> StackFmt:
    """The stack of a WARNING: after the RIP line (newer kernels) or after Call Trace."""
    rip_or_interrupt = compile_re("(?:" + RIP_FRAME.pattern + "|--- interrupt: [0-9]+ at {{FUNC}})")
    return StackFmt(
        (rip_or_interrupt, PARSE_STACK_TRACE), (CALL_TRACE, PARSE_STACK_TRACE), tuple(skip)
    )


_TRACE = (CALL_TRACE, PARSE_STACK_TRACE)
_RIP_TRACE = (RIP_FRAME, CALL_TRACE, PARSE_STACK_TRACE)


def F(  # noqa: N802 - a table constructor, read as a row
    title: str,
    fmt: str,
    *,
    report: str | None = None,
    alt: tuple[str, ...] = (),
    stack: StackFmt | None = None,
    no_stack: bool = False,
    corrupted: bool = False,
) -> OopsFormat:
    """Build one :class:`OopsFormat` row."""
    return OopsFormat(
        compile_re(title),
        fmt,
        compile_re(report) if report else None,
        alt,
        stack,
        no_stack,
        corrupted,
    )


#: SLUB's own frames in the stack of a consistency-check report.
_SLUB_INTERNALS = (
    "slab_err",
    "object_err",
    "slab_bug",
    "print_trailer",
    "free_to_partial_list",
    "free_debug_processing",
    "free_consistency_checks",
    "on_freelist",
    "check_slab",
    "__slab_free",
    "do_slab_free",
    "slab_free",
    "kmem_cache_free",
    "kfree",
    "__kmem_cache_free",
)
#: SLUB's report line up to its reason: "BUG <cache> (<taint>): ".
_SLUB_BUG = r"BUG \S+ \((?:Not tainted|Tainted: [^)]*)\): "
#: The reasons of SLUB's consistency checks (mm/slub.c: slab_err, object_err,
#: check_bytes_and_report).
_SLUB_REASONS = (
    r"Object already free|Freechain corrupt|Freepointer corrupt|Freelist Pointer check fails"
    r"|Padding overwritten|(?:Object padding|Left Redzone|Right Redzone|Redzone|Alignment"
    r" padding|Poison|End Poison) overwritten|Not a valid slab page|Wrong number of objects"
    r"|Wrong object count|Invalid object pointer|Attempt to free object|Slab has \d+ allocated"
    r" objects but \d+ are to be freed|Bulk free expected"
)
#: The page allocator's own frames in the stack of a page-poisoning report.
_PAGE_ALLOC_INTERNALS = (
    "unpoison_page",
    "check_poison_mem",
    "post_alloc_hook",
    "prep_new_page",
    "get_page_from_freelist",
    "__alloc_pages",
    "alloc_pages",
    "__get_free_pages",
)
_KASAN_FREE = "BUG: KASAN: (?:double-free or invalid-free|double-free|invalid-free) in {{FUNC}}"
_KFENCE_HEAD = compile_re("BUG: KFENCE: (?:[a-z\\- ]+) in {{FUNC}}")
_LOCK_AT = "at: (?:{{PC}} +)?{{FUNC}}"

# ---------------------------------------------------------------------------
# The oops table: header → formats (specific first) → suppressions
# ---------------------------------------------------------------------------

OOPSES: tuple[Oops, ...] = (
    Oops(
        "BUG:",
        (
            F(
                "BUG: KASAN:",
                "KASAN: {1} {3} in {4}",
                report="BUG: KASAN: ([a-z\\-]+) in {{FUNC}}(?:.*\\n)+?.*(Read|Write) "
                "(?:of size|at addr) (?:[0-9a-f]+)",
                alt=("bad-access in {4}",),
                stack=_stack(
                    "BUG: KASAN: (?:[a-z\\-]+) in {{FUNC}}",
                    CALL_TRACE,
                    PARSE_STACK_TRACE,
                    skip=("kernel_fault", "tag_check", "mem_abort", "^el1_", "^el1h_"),
                ),
            ),
            F(
                "BUG: KASAN:",
                "KASAN: invalid-free in {2}",
                report=_KASAN_FREE,
                alt=("invalid-free in {2}",),
                stack=_stack(
                    _KASAN_FREE,
                    CALL_TRACE,
                    PARSE_STACK_TRACE,
                    skip=("slab_", "kfree", "vunmap", "vfree"),
                ),
            ),
            F(
                "BUG: KASAN: ([a-z\\-]+) on address(?:.*\\n)+?.*(Read|Write) of size ([0-9]+)",
                "KASAN: {1} {2}",
            ),
            F("BUG: KASAN: (.*)", "KASAN: {1}", corrupted=True),
            F(
                "BUG: KMSAN: kernel-usb-infoleak",
                "KMSAN: kernel-usb-infoleak in {2}",
                report="BUG: KMSAN: kernel-usb-infoleak in {{FUNC}}",
                alt=("KMSAN origin in {3}",),
                stack=_stack(
                    PARSE_STACK_TRACE,
                    "(Local variable .* created at:|Uninit was created at:)",
                    PARSE_STACK_TRACE,
                    skip=(
                        "alloc_skb",
                        "usb_submit_urb",
                        "usb_start_wait_urb",
                        "usb_bulk_msg",
                        "usb_interrupt_msg",
                        "usb_control_msg",
                    ),
                ),
                no_stack=True,
            ),
            F(
                "BUG: KMSAN:",
                "KMSAN: {1} in {3}",
                report="BUG: KMSAN: ([a-z\\-]+) in {{FUNC}}",
                alt=("bad-access in {3}",),
                stack=_stack(
                    PARSE_STACK_TRACE,
                    "(Local variable .* created at:|Uninit was created at:)",
                    PARSE_STACK_TRACE,
                    skip=(
                        "alloc_skb",
                        "netlink_ack",
                        "netlink_rcv_skb",
                        "_encrypt$",
                        "^(?:crypto|cipher|drbg|rng)_",
                    ),
                ),
                no_stack=True,
            ),
            F("BUG: KCSAN: data-race", "KCSAN: {1}", report="BUG: KCSAN: (.*)", no_stack=True),
            F("BUG: KCSAN:", "KCSAN: {1}", report="BUG: KCSAN: (.*)", no_stack=True),
            F(
                "BUG: KFENCE: (use-after-free|out-of-bounds) (read|write) in {{FUNC}}",
                "KFENCE: {1} {2} in {4}",
                alt=("bad-access in {4}",),
                stack=StackFmt((_KFENCE_HEAD, PARSE_STACK_TRACE)),
            ),
            F(
                "BUG: KFENCE: invalid free in {{FUNC}}",
                "KFENCE: invalid free in {2}",
                alt=("invalid-free in {2}",),
                no_stack=True,
                stack=StackFmt((_KFENCE_HEAD, PARSE_STACK_TRACE)),
            ),
            F(
                "BUG: KFENCE: invalid (read|write) in {{FUNC}}",
                "KFENCE: invalid {1} in {3}",
                alt=("bad-access in {3}",),
                stack=StackFmt((_KFENCE_HEAD, PARSE_STACK_TRACE)),
            ),
            F(
                "BUG: KFENCE: memory corruption in {{FUNC}}",
                "KFENCE: memory corruption in {2}",
                no_stack=True,
                stack=StackFmt((_KFENCE_HEAD, PARSE_STACK_TRACE)),
            ),
            F(
                "BUG: (?:unable to handle kernel paging request|unable to handle page fault for "
                "address|Unable to handle kernel data access)",
                "BUG: unable to handle kernel paging request in {1}",
                alt=("bad-access in {1}",),
                stack=StackFmt(_RIP_TRACE),
            ),
            F(
                "BUG: (?:unable to handle kernel NULL pointer dereference|kernel NULL pointer "
                "dereference|Kernel NULL pointer dereference)",
                "BUG: unable to handle kernel NULL pointer dereference in {1}",
                alt=("bad-access in {1}",),
                stack=StackFmt(_RIP_TRACE),
            ),
            # The second half of this header is a separate printk and may be lost.
            F(
                "BUG: (?:unable to handle kernel|Unable to handle kernel)",
                "BUG: unable to handle kernel",
                corrupted=True,
            ),
            F(
                "BUG: (spinlock|rwlock) (lockup suspected|already unlocked|recursion"
                "|cpu recursion|bad magic|wrong owner|wrong CPU|trylock failure on UP)",
                "BUG: {1} {2} in {3}",
                stack=StackFmt(_TRACE, skip=("spin_", "_lock", "_unlock")),
            ),
            F(
                "BUG: soft lockup",
                "BUG: soft lockup in {1}",
                alt=("stall in {1}",),
                stack=StackFmt(_RIP_TRACE, extractor="stall"),
            ),
            F(
                "BUG: .*still has locks held!",
                "BUG: still has locks held in {1}",
                report="BUG: .*still has locks held!(?:.*\\n)+?.*{{PC}} +{{FUNC}}",
            ),
            F(
                "BUG: scheduling while atomic",
                "BUG: scheduling while atomic in {1}",
                stack=StackFmt(_TRACE, skip=("schedule",)),
            ),
            F(
                "BUG: lock held when returning to user space",
                "BUG: lock held when returning to user space in {1}",
                report="BUG: lock held when returning to user space(?:.*\\n)+?.*leaving the kernel "
                "with locks still held(?:.*\\n)+?.*at: (?:{{PC}} +)?{{FUNC}}",
                no_stack=True,
            ),
            F(
                "BUG: bad unlock balance detected!",
                "BUG: bad unlock balance in {1}",
                stack=_stack("{{PC}} +{{FUNC}}", CALL_TRACE, PARSE_STACK_TRACE),
            ),
            F(
                "BUG: held lock freed!",
                "BUG: held lock freed in {1}",
                report="BUG: held lock freed!(?:.*\\n)+?.*{{PC}} +{{FUNC}}",
            ),
            F("BUG: Bad rss-counter state", "BUG: Bad rss-counter state", no_stack=True),
            F(
                "BUG: non-zero nr_ptes on freeing mm",
                "BUG: non-zero nr_ptes on freeing mm",
                no_stack=True,
            ),
            F(
                "BUG: non-zero nr_pmds on freeing mm",
                "BUG: non-zero nr_pmds on freeing mm",
                no_stack=True,
            ),
            # Block device names (loop0/1/2) and fs types make duplicates: left out.
            F(
                "BUG: Dentry .* still in use",
                "BUG: Dentry still in use in {1}",
                report="BUG: Dentry .* still in use \\([0-9]+\\) \\[(unmount) of ([^\\]]+)\\]",
                alt=("BUG: Dentry still in use [{1} of {2}]",),
            ),
            F(
                "BUG: Bad page (state|cache)",
                "BUG: Bad page {1} in {2}",
                stack=_stack(
                    "page last allocated",
                    PARSE_STACK_TRACE,
                    skip=(
                        "(free|put|get|update|release)_page",
                        "free_unref",
                        "^_*folio",
                        "truncate_inode_pages",
                        "page_frag_free",
                        "alloc",
                        "vmap",
                        "page_owner",
                    ),
                ),
            ),
            F("BUG: Bad page map", "BUG: Bad page map"),
            F("BUG: workqueue lockup", "BUG: workqueue lockup", no_stack=True),
            F(
                "BUG: sleeping function called from invalid context at (.*)",
                "BUG: sleeping function called from invalid context in {2}",
                stack=StackFmt(_TRACE),
            ),
            F(
                "BUG: using ([a-z_]+)\\(\\) in preemptible",
                "BUG: using {1}() in preemptible code in {2}",
                stack=StackFmt(
                    _TRACE,
                    skip=(
                        "dump_stack",
                        "preemption",
                        "preempt",
                        "debug_",
                        "processor_id",
                        "this_cpu",
                    ),
                ),
            ),
            F(
                "BUG: workqueue leaked lock or atomic",
                "BUG: workqueue leaked lock or atomic in {1}",
                report="BUG: workqueue leaked lock or atomic(?:.*\\n)+?"
                ".*last function: ([a-zA-Z0-9_]+)\\n",
                no_stack=True,
            ),
            F(
                "BUG: memory leak",
                "memory leak in {1}",
                stack=_stack(
                    "backtrace(?: \\(crc [0-9a-fA-F]*\\))?:",
                    PARSE_STACK_TRACE,
                    skip=(
                        "kmemleak",
                        "mmap",
                        "kmem",
                        "slab",
                        "alloc",
                        "create_object",
                        "idr_get",
                        "list_lru_init",
                        "kasprintf",
                        "kvasprintf",
                        "pcpu_create",
                        "strdup",
                        "strndup",
                        "memdup",
                    ),
                ),
            ),
            F(
                "BUG: .*stack guard page was hit at",
                "BUG: stack guard page was hit in {1}",
                alt=("stack-overflow in {1}",),
                stack=StackFmt(_RIP_TRACE, extractor="stall"),
            ),
            # arm/arm64 print this differently from amd64; the amd64 title keeps them together.
            F(
                "BUG: Invalid wait context",
                "WARNING: locking bug in {1}",
                stack=StackFmt(_TRACE, skip=("lock_sock", "release_sock")),
            ),
            F("BUG:\\s*(?:\\n|$)", "BUG: corrupted", corrupted=True),
        ),
        _c(
            "ODEBUG:",
            "Boot_DEBUG:",
            "xlog_status:",
            "DEBUG:",
            "BUG: no syscalls can create resource",
        ),
    ),
    Oops(
        "WARNING:",
        (
            F(
                "WARNING: .*lib/debugobjects\\.c.* (?:debug_print|debug_check|at)",
                "WARNING: ODEBUG bug in {1}",
                stack=_warning_stack(
                    "debug_",
                    "rcu",
                    "hrtimer_",
                    "timer_",
                    "work_",
                    "percpu_",
                    "vunmap",
                    "vfree",
                    "__free_",
                    "debug_check",
                    "kobject_",
                ),
            ),
            F(
                "WARNING: .*mm/usercopy\\.c.* (?:usercopy_warn|at)",
                "WARNING: bad usercopy in {1}",
                stack=_warning_stack("usercopy", "__check"),
            ),
            F(
                "WARNING: .*lib/kobject\\.c.* (?:kobject_|at)",
                "WARNING: kobject bug in {1}",
                stack=_warning_stack("kobject_"),
            ),
            F(
                "WARNING: .*fs/proc/generic\\.c.* (?:proc_register|at)",
                "WARNING: proc registration bug in {1}",
                stack=_warning_stack("proc_"),
            ),
            F(
                "WARNING: .*lib/refcount\\.c.* (?:refcount_|at)",
                "WARNING: refcount bug in {1}",
                stack=_warning_stack("refcount", "kobject_"),
            ),
            F(
                "WARNING: .*kernel/locking/lockdep\\.c.*lock_",
                "WARNING: locking bug in {1}",
                stack=_warning_stack("lock_sock", "release_sock"),
            ),
            F(
                "WARNING: .*still has locks held!",
                "WARNING: still has locks held in {1}",
                report="WARNING: .*still has locks held!(?:.*\\n)+?.*at: {{FUNC}}",
            ),
            F(
                "WARNING: Nested lock was not taken",
                "WARNING: nested lock was not taken in {1}",
                stack=_warning_stack(),
            ),
            F(
                "WARNING: lock held when returning to user space",
                "WARNING: lock held when returning to user space in {1}",
                report="WARNING: lock held when returning to user space(?:.*\\n)+?.*leaving the "
                "kernel with locks still held(?:.*\\n)+?.*at: (?:{{PC}} +)?{{FUNC}}",
                no_stack=True,
            ),
            F(
                "WARNING: .*mm/.*\\.c.* k?.?malloc",
                "WARNING: kmalloc bug in {1}",
                stack=_warning_stack("kmalloc", "krealloc", "slab", "kmem"),
            ),
            F(
                "WARNING: .*mm/vmalloc.c.*__vmalloc_node",
                "WARNING: zero-size vmalloc in {1}",
                stack=_warning_stack(),
            ),
            F(
                "WARNING: .* usb_submit_urb",
                "WARNING in {1}/usb_submit_urb",
                stack=_warning_stack(
                    "usb_submit_urb",
                    "usb_start_wait_urb",
                    "usb_bulk_msg",
                    "usb_interrupt_msg",
                    "usb_control_msg",
                ),
            ),
            # The format of v6.19+: "WARNING: file.c:123 at 0x..., CPU#0: comm/pid".
            F("WARNING: {{SRC}} at 0x\\d+, CPU#\\d+", "WARNING in {2}", stack=_warning_stack()),
            F("WARNING: .* at {{SRC}} {{FUNC}}", "WARNING in {3}", stack=_warning_stack()),
            F("WARNING: {{SRC}} at {{FUNC}}", "WARNING in {3}", stack=_warning_stack()),
            F("WARNING: \\[.*\\] {{SRC}} at {{FUNC}}.*", "WARNING in {3}", stack=_warning_stack()),
            F(
                "WARNING: possible circular locking dependency detected",
                "possible deadlock in {1}",
                report="WARNING: possible circular locking dependency detected(?:.*\\n)+?.*is "
                "trying to acquire lock",
                # Workqueue functions take locks of work items: such deadlocks are theirs.
                stack=_stack(
                    _LOCK_AT,
                    _LOCK_AT,
                    PARSE_STACK_TRACE,
                    skip=(
                        "process_one_work",
                        "flush_workqueue",
                        "drain_workqueue",
                        "destroy_workqueue",
                    ),
                ),
            ),
            F(
                "WARNING: possible irq lock inversion dependency detected",
                "possible deadlock in {1}",
                report="WARNING: possible irq lock inversion dependency detected(?:.*\\n)+?.*just "
                "changed the state of lock(?:.*\\n)+?.*at: (?:{{PC}} +)?{{FUNC}}",
            ),
            F(
                "WARNING: .*-safe -> .*-unsafe lock order detected",
                "possible deadlock in {1}",
                stack=_stack("which became (?:.*) at:", PARSE_STACK_TRACE),
            ),
            F(
                "WARNING: possible recursive locking detected",
                "possible deadlock in {1}",
                report="WARNING: possible recursive locking detected(?:.*\\n)+?.*is trying to "
                "acquire lock(?:.*\\n)+?.*at: (?:{{PC}} +)?{{FUNC}}",
            ),
            F(
                "WARNING: inconsistent lock state",
                "inconsistent lock state in {2}",
                report="WARNING: inconsistent lock state(?:.*\\n)+?.*takes(?:.*\\n)+?.*at: "
                "(?:{{PC}} +)?{{FUNC}}",
                stack=StackFmt(_TRACE),
            ),
            F(
                "WARNING: suspicious RCU usage",
                "WARNING: suspicious RCU usage in {2}",
                report="WARNING: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}",
                stack=StackFmt(_TRACE, skip=("rcu", "kmem", "slab")),
            ),
            F(
                "WARNING: kernel stack regs at [0-9a-f]+ in [^ ]* has bad '([^']+)' value",
                "WARNING: kernel stack regs has bad '{1}' value",
                no_stack=True,
            ),
            F(
                "WARNING: kernel stack frame pointer at [0-9a-f]+ in [^ ]* has bad value",
                "WARNING: kernel stack frame pointer has bad value",
                no_stack=True,
            ),
            F(
                "WARNING: bad unlock balance detected!",
                "WARNING: bad unlock balance in {1}",
                stack=_stack("{{PC}} +{{FUNC}}", CALL_TRACE, PARSE_STACK_TRACE),
            ),
            F(
                "WARNING: held lock freed!",
                "WARNING: held lock freed in {1}",
                report="WARNING: held lock freed!(?:.*\\n)+?.*at:(?: {{PC}})? +{{FUNC}}",
            ),
            F(
                "WARNING: kernel stack regs .* has bad 'bp' value",
                "WARNING: kernel stack regs has bad value",
                no_stack=True,
            ),
            F(
                "WARNING: kernel stack frame pointer .* has bad value",
                "WARNING: kernel stack regs has bad value",
                no_stack=True,
            ),
            F("WARNING:\\s*(?:\\n|$)", "WARNING: corrupted", corrupted=True),
        ),
        _c(
            "WARNING: /etc/ssh/moduli does not exist, using fixed modulus",
            "WARNING: workqueue cpumask: online intersect > possible intersect",
            "WARNING: [Tt]he mand mount option",
            "WARNING: Unsupported flag value\\(s\\) of 0x%x in DT_FLAGS_1",
            "WARNING: Unprivileged eBPF is enabled with eIBRS",
            "WARNING: fbcon: Driver '(.*)' missed to adjust virtual screen size",
            "WARNING: See https.* for mitigation options.",
            "WARNING: kernel not compiled with CPU_SRSO",
            "EXT4-[Ff][Ss](?: \\(.*\\))?:",
            "(?i)warning: .* uses (deprecated v2 capabilities|wireless extensions)",
            "XFS \\(\\w+\\): WARNING",
        ),
    ),
    Oops(
        "INFO:",
        (
            F(
                "INFO: possible circular locking dependency detected",
                "possible deadlock in {1}",
                report="INFO: possible circular locking dependency detected \\](?:.*\\n)+?.*is "
                "trying to acquire lock(?:.*\\n)+?.*at: {{PC}} +{{FUNC}}",
            ),
            F(
                "INFO: possible irq lock inversion dependency detected",
                "possible deadlock in {1}",
                report="INFO: possible irq lock inversion dependency detected \\](?:.*\\n)+?.*just "
                "changed the state of lock(?:.*\\n)+?.*at: {{PC}} +{{FUNC}}",
            ),
            F(
                "INFO: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected",
                "possible deadlock in {1}",
                report="INFO: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected \\](?:.*\\n)+?"
                ".*is trying to acquire(?:.*\\n)+?.*at: {{PC}} +{{FUNC}}",
            ),
            F(
                "INFO: possible recursive locking detected",
                "possible deadlock in {1}",
                report="INFO: possible recursive locking detected \\](?:.*\\n)+?.*is trying to "
                "acquire lock(?:.*\\n)+?.*at: {{PC}} +{{FUNC}}",
            ),
            F(
                "INFO: inconsistent lock state",
                "inconsistent lock state in {1}",
                report="INFO: inconsistent lock state \\](?:.*\\n)+?.*takes(?:.*\\n)+?.*at: "
                "{{PC}} +{{FUNC}}",
            ),
            F(
                "INFO: rcu_(?:preempt|sched|bh) (?:self-)?detected(?: expedited)? stall",
                "INFO: rcu detected stall in {1}",
                alt=("stall in {1}",),
                stack=_stack(
                    "apic_timer_interrupt",
                    RIP_FRAME,
                    PARSE_STACK_TRACE,
                    parts2=(
                        "(?:apic_timer_interrupt|Exception stack|el1h_64_irq)",
                        PARSE_STACK_TRACE,
                    ),
                    skip=("apic_timer_interrupt", "rcu"),
                    extractor="stall",
                ),
            ),
            F(
                "INFO: trying to register non-static key",
                "INFO: trying to register non-static key in {1}",
                stack=StackFmt(_TRACE, skip=("stack", "lock", "IRQ")),
            ),
            F(
                "INFO: suspicious RCU usage",
                "INFO: suspicious RCU usage in {2}",
                report="INFO: suspicious RCU usage(?:.*\n)+?.*?{{SRC}}",
                stack=StackFmt(_TRACE, skip=("rcu", "kmem", "slab")),
            ),
            F(
                # v6.16+ says "blocked in I/O wait for more than" for tasks in io_schedule().
                "INFO: task .* blocked (?:in I/O wait )?for more than [0-9]+ seconds",
                "INFO: task hung in {1}",
                alt=("hang in {1}",),
                stack=StackFmt(_TRACE, extractor="hang"),
            ),
            F(
                "INFO: task .* can't die for more than .* seconds",
                "INFO: task can't die in {1}",
                alt=("hang in {1}",),
                stack=StackFmt(_TRACE, skip=("schedule",)),
            ),
            # Captured for damaged old-style KASAN reports.
            F("INFO: (Freed|Allocated) in (.*)", "INFO: {1} in {2}", corrupted=True),
            F("INFO:\\s*(?:\\n|$)", "INFO: corrupted", corrupted=True),
        ),
        _c(
            "INFO: lockdep is turned off",
            "INFO: Stall ended before state dump start",
            "INFO: NMI handler",
            "INFO: recovery required on readonly filesystem",
            "(handler|interrupt).*took too long",
            "INFO: sys_.* is not present in /proc/kallsyms",
            "INFO: no syscalls can create resource",
            "rmt_storage:INFO:",
            "_INFO:",
        ),
    ),
    Oops(
        "Unable to handle kernel",
        (
            F(
                "Unable to handle kernel (paging request|NULL pointer dereference|access to user "
                "memory)",
                "BUG: unable to handle kernel {1} in {2}",
                alt=("bad-access in {2}",),
                stack=StackFmt(_RIP_TRACE),
            ),
        ),
    ),
    Oops(
        "general protection fault",
        (
            F(
                "general protection fault.*:",
                "general protection fault in {1}",
                alt=("bad-access in {1}",),
                stack=StackFmt(_RIP_TRACE),
            ),
        ),
        _c("general protection fault .* error:\\d+ in "),
    ),
    Oops(
        "stack segment: ",
        (F("stack segment: ", "stack segment fault in {1}", stack=StackFmt(_RIP_TRACE)),),
    ),
    Oops(
        "Kernel panic",
        (
            F(
                "Kernel panic - not syncing: stack-protector:",
                "kernel panic: stack is corrupted in {1}",
                report="Kernel panic - not syncing: stack-protector: Kernel stack is corrupted "
                "in: {{FUNC}}",
                no_stack=True,
            ),
            F(
                "Kernel panic - not syncing: stack-protector:",
                "kernel panic: stack is corrupted in {1}",
                report="Kernel panic - not syncing: stack-protector: Kernel stack is corrupted "
                "in: [a-f0-9]+",
                stack=StackFmt(_TRACE, skip=("stack_chk",)),
            ),
            F(
                "Kernel panic - not syncing: corrupted stack end",
                "kernel panic: corrupted stack end in {1}",
                report="Kernel panic - not syncing: corrupted stack end detected inside scheduler",
                alt=("stack-overflow in {1}",),
                stack=StackFmt(_TRACE, skip=("schedule", "retint_kernel"), extractor="stall"),
            ),
            F(
                "Kernel panic - not syncing: kernel stack overflow",
                "kernel stack overflow in {1}",
                alt=("stack-overflow in {1}",),
                stack=StackFmt(_TRACE, skip=("bad_stack",), extractor="stall"),
            ),
            F(
                "Kernel panic - not syncing: Attempted to kill init!",
                "kernel panic: Attempted to kill init!",
            ),
            F(
                "Kernel panic - not syncing: Couldn't open N_TTY ldisc for [^ ]+ --- error -[0-9]+",
                "kernel panic: Couldn't open N_TTY ldisc",
            ),
            # These follow another report: seeing them as the title means its header was lost.
            F(
                "Kernel panic - not syncing: Fatal exception",
                "kernel panic: Fatal exception",
                corrupted=True,
            ),
            F(
                "Kernel panic - not syncing: panic_on_warn set",
                "kernel panic: panic_on_warn set",
                corrupted=True,
            ),
            F(
                "Kernel panic - not syncing: hung_task: blocked tasks",
                "kernel panic: hung_task: blocked tasks",
                corrupted=True,
            ),
            F("Kernel panic - not syncing: (.*)", "kernel panic: {1}"),
        ),
    ),
    Oops(
        "PANIC: double fault",
        (F("PANIC: double fault", "PANIC: double fault in {1}", stack=StackFmt((RIP_FRAME,))),),
    ),
    Oops(
        "rust_kernel: panicked",
        (
            F(
                "rust_kernel: panicked",
                "{1} in {2}",
                report="rust_kernel: panicked at [^\n]*?\n(.+?)\n",
                stack=StackFmt(_TRACE, skip=(re.escape("__rustc::rust_begin_unwind"),)),
            ),
        ),
    ),
    Oops(
        "kernel BUG",
        (
            F(
                "kernel BUG at mm/usercopy.c",
                "BUG: bad usercopy in {1}",
                stack=StackFmt(_TRACE, skip=("usercopy", "__check")),
            ),
            F(
                "kernel BUG at lib/list_debug.c",
                "BUG: corrupted list in {1}",
                alt=("bad-access in {1}",),
                stack=StackFmt(_TRACE),
            ),
            # skb wrappers hold many BUG_ONs, but the bug is almost always in the caller.
            F(
                "kernel BUG at (.*)",
                "kernel BUG in {2}",
                stack=StackFmt(_RIP_TRACE, skip=("^skb_",)),
            ),
        ),
    ),
    Oops("Kernel BUG", (F("Kernel BUG (.*)", "kernel BUG {1}"),)),
    Oops(
        "BUG kmalloc-",
        (F("BUG kmalloc-.*: Object already free", "BUG: Object already free"),),
    ),
    # SLUB's consistency checks (slub_debug=F, mm/slub.c:slab_bug): "BUG <cache> (<taint>):
    # <what>", for any cache; a double free is "Object already free" or, once its slab was
    # emptied, "Slab has 0 allocated objects but 1 are to be freed".
    *(
        Oops(
            header,
            (
                F(_SLUB_BUG + "Object already free", "BUG: Object already free"),
                F(
                    _SLUB_BUG + r"(?:Slab has \d+ allocated objects but \d+ are to be freed)",
                    "BUG: slab double free in {1}",
                    stack=StackFmt(_TRACE, skip=_SLUB_INTERNALS),
                ),
                F(
                    _SLUB_BUG + "(" + _SLUB_REASONS + ")",
                    "BUG: slab {1} in {2}",
                    stack=StackFmt(_TRACE, skip=_SLUB_INTERNALS),
                ),
            ),
            # the header is a substring of other lines too (KASAN's old "kasan: bad access
            # detected" used slab_bug's line): only SLUB's own checks start a report
            _c("^(?!.*" + _SLUB_BUG + "(?:" + _SLUB_REASONS + "))"),
        )
        for header in ("(Not tainted): ", "(Tainted: ")
    ),
    # Page poisoning (page_poison=1, mm/page_poison.c:check_poison_mem): a freed page was
    # written to; the report's stack is the allocation that found it.
    Oops(
        "pagealloc: memory corruption",
        (
            F(
                "pagealloc: memory corruption",
                "pagealloc: memory corruption in {1}",
                stack=StackFmt(_TRACE, skip=_PAGE_ALLOC_INTERNALS),
            ),
        ),
    ),
    Oops(
        "pagealloc: single bit error",
        (
            F(
                "pagealloc: single bit error",
                "pagealloc: single bit error in {1}",
                stack=StackFmt(_TRACE, skip=_PAGE_ALLOC_INTERNALS),
            ),
        ),
    ),
    Oops(
        "divide error:",
        (F("divide error: ", "divide error in {1}", stack=StackFmt((RIP_FRAME,))),),
    ),
    # The misspelling of v5.8's IDTENTRY conversion.
    Oops(
        "divide_error:",
        (F("divide_error: ", "divide error in {1}", stack=StackFmt((RIP_FRAME,))),),
    ),
    Oops(
        "invalid opcode:",
        (F("invalid opcode: ", "invalid opcode in {1}", stack=StackFmt((RIP_FRAME,))),),
    ),
    Oops(
        "UBSAN:",
        (
            F(
                "UBSAN:",
                "UBSAN: undefined-behaviour in {1}",
                report="UBSAN: Undefined behaviour in",
                stack=StackFmt(_TRACE, skip=("ubsan", "overflow")),
            ),
            F(
                "UBSAN: array-index-out-of-bounds in",
                "UBSAN: array-index-out-of-bounds in {1}",
                alt=("bad-access in {1}",),
                stack=StackFmt(_TRACE, skip=("ubsan", "overflow")),
            ),
            F(
                "UBSAN:",
                "UBSAN: {1} in {2}",
                report="UBSAN: (.*?) in",
                stack=StackFmt(_TRACE, skip=("ubsan", "overflow")),
            ),
        ),
    ),
    Oops(
        "Booting the kernel.",
        (F("^Booting the kernel", "unexpected kernel reboot", no_stack=True),),
        # A boot message echoed back as a bad mount option is no reboot.
        _c("Parsing ELF|Decompressing Linux|Unknown parameter '"),
    ),
    Oops(
        "unregister_netdevice: waiting for",
        (
            F(
                "unregister_netdevice: waiting for (?:.*) to become free",
                "unregister_netdevice: waiting for DEV to become free",
                no_stack=True,
            ),
        ),
    ),
    Oops(
        "VFS: Close: file count is 0",
        (
            F(
                "VFS: Close: file count is 0",
                "VFS: Close: file count is zero (use-after-free)",
                no_stack=True,
            ),
        ),
    ),
    Oops(
        "VFS: Busy inodes after unmount",
        (
            F(
                "VFS: Busy inodes after unmount",
                "VFS: Busy inodes after unmount (use-after-free)",
                no_stack=True,
            ),
        ),
    ),
    Oops(
        "Internal error:",
        (
            F(
                "Internal error:",
                "Internal error in {1}",
                alt=("bad-access in {1}",),
                stack=StackFmt(_RIP_TRACE),
            ),
        ),
    ),
    Oops(
        "Unhandled fault:",
        (
            F(
                "Unhandled fault:",
                "Unhandled fault in {1}",
                alt=("bad-access in {1}",),
                stack=StackFmt(_RIP_TRACE),
            ),
        ),
    ),
    Oops(
        "Alignment trap:",
        (F("Alignment trap:", "Alignment trap in {1}", stack=StackFmt(_RIP_TRACE)),),
    ),
    Oops(
        "trusty: panic",
        (
            F(
                "trusty: panic.* ASSERT FAILED",
                "trusty: ASSERT FAILED: {1}",
                report="trusty: panic \\(.*?\\):(?: DEBUG)? ASSERT FAILED at \\(.*?\\): (.+)",
                no_stack=True,
            ),
            F(
                "trusty: panic.* ASSERT FAILED.*: *(.*)",
                "trusty: ASSERT FAILED: {1}",
                corrupted=True,
            ),
            F(
                "trusty: panic",
                "trusty: panic: {1}",
                report="trusty: panic \\(.*?\\): (.+)",
                no_stack=True,
            ),
        ),
    ),
    Oops(
        "fatal error:",
        (F("fatal error:", "go runtime error", no_stack=True),),
        _c("ALSA", "fatal error: cannot create timer"),
    ),
    # Printed by syzkaller's own executor and fuzzer.
    Oops("SYZFAIL:", (F("SYZFAIL:(.*)", "SYZFAIL:{1}", no_stack=True),)),
    Oops(
        "SYZFATAL:",
        (F("SYZFATAL:(.*)()", "SYZFATAL:{1}", alt=("SYZFATAL{2}",), no_stack=True),),
    ),
    Oops(
        "panic:",
        (
            F(
                "panic: Sentry detected .* stuck task",
                "panic: Sentry detected stuck tasks",
                no_stack=True,
            ),
            F("panic:(.*)", "panic:{1}", no_stack=True),
        ),
        _c("_panic:", "xlog_status:", "ddb\\.onpanic:", "evtlog_status:"),
    ),
)

#: Headers that do not start a new report when seen inside one.
REPORT_START_IGNORES = _c(
    "invalid opcode: 0000",
    "Kernel panic - not syncing",
    "unregister_netdevice: waiting for",
    # A double fault can come from the page fault handling of a report in progress.
    "PANIC: double fault",
    "Internal error:",
)

#: Messages that are not bugs but carry a stack trace: inside a report, they end it.
INFO_MESSAGES_WITH_STACK = (
    "vmalloc: allocation failure:",
    "FAULT_INJECTION: forcing a failure",
    "FAULT_FLAG_ALLOW_RETRY missing",
)

#: Output that means the crash is the test harness's, not the kernel's (whole log).
SUPPRESSIONS = _c(
    "panic: failed to start executor binary",
    "panic: executor failed: pthread_create failed",
    "panic: failed to create temp dir",
    "fatal error: unexpected signal during runtime execution",
    "signal SIGBUS: bus error",
    "SYZFAIL: SIGBUS",
    "Out of memory: Kill process .* \\(syz-executor\\)",
    "Out of memory: Kill process .* \\(sshd\\)",
    "Killed process .* \\(syz-executor\\)",
    "Killed process .* \\(sshd\\)",
    "lowmemorykiller: Killing 'syz-executor'",
    "lowmemorykiller: Killing 'sshd'",
    "INIT: PANIC: segmentation violation!",
    "\\*\\*\\* stack smashing detected \\*\\*\\*: terminated",
    "fatal error: runtime: out of memory",
    "fatal error: runtime: cannot allocate memory",
    "fatal error: out of memory",
    "fatal error: newosproc",
    "panic: .*cannot allocate memory",
)
#: Substrings one of which every suppression line holds (the cheap pre-filter).
SUPPRESSION_NEEDLES = (
    "panic: ",
    "fatal error:",
    "signal SIGBUS",
    "SYZFAIL: SIGBUS",
    "Out of memory: Kill process",
    "Killed process",
    "lowmemorykiller: Killing",
    "INIT: PANIC",
    "stack smashing detected",
)

#: A panic this long (seconds, by printk stamps) after the report before it has ended (its
#: end marker, else its last line) is a crash of its own: panic_on_oops and panic_on_warn
#: panic within milliseconds, while a panic a second later has another cause (a sysrq, a
#: watchdog, init dying) that syzkaller reports apart.
PANIC_JOIN_SECONDS = 1.0

#: The kernel's lines about a *user-space* fault: the task's comm (at most 15 bytes of any
#: text, chosen by whoever named the task) then ``[pid]``. They are events, never crash
#: headers, whatever the comm says (a task named "WARNING: CPU: 0" that segfaults).
#: arch/x86/mm/fault.c:show_signal_msg, arch/x86/kernel/traps.c:show_signal and the CLI/STI
#: emulation, arch/x86/kernel/umip.c, arch/arm64/kernel/traps.c:arm64_show_signal.
USER_FAULTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.ASCII | re.DOTALL), kind)
    for pattern, kind in (
        (
            r"(?P<comm>.{0,15}?)\[(?P<pid>\d+)\]: segfault at (?P<address>[0-9a-f]+) ip "
            r"(?P<ip>[0-9a-f]+) sp [0-9a-f]+ error (?P<error>[0-9a-f]+)"
            r"(?: in (?P<object>[^\[ ]+))?",
            "segfault",
        ),
        (
            r"traps: (?P<comm>.{0,15}?)\[(?P<pid>\d+)\] (?P<trap>general protection fault|trap "
            r"[\w ]+?) ip:(?P<ip>[0-9a-f]+) sp:[0-9a-f]+ error:(?P<error>[0-9a-f]+)",
            "trap",
        ),
        (r"traps: (?P<comm>.{0,15}?)\[(?P<pid>\d+)\] attempts to use CLI/STI", "trap"),
        (r"umip: (?P<comm>.{0,15}?)\[(?P<pid>\d+)\] ip:(?P<ip>[0-9a-f]+) sp:", "umip"),
        (r"(?P<comm>.{0,15}?)\[(?P<pid>\d+)\]: unhandled exception: ", "trap"),
    )
)
#: What every user-fault line holds after its ``[pid]`` (a cheap test before the table).
USER_FAULT_HINT = re.compile(
    r"\[\d+\](?:: segfault at |: unhandled exception: | general protection fault ip:"
    r"| trap | attempts to use CLI| ip:)",
    re.ASCII,
)

#: Other kernel lines that quote a name some task chose (its comm, at most 15 bytes, or a
#: path), found anywhere in a line: the ``name`` span is never searched for a crash header,
#: so a task named "Kernel panic - " that trips one of them forges nothing. Each is
#: reachable by any local user (a misaligned vsyscall, a bad sigreturn frame, a split lock,
#: an OOM in a memory cgroup, an executable stack, anything audited).
#: arch/x86/entry/vsyscall/vsyscall_64.c:warn_bad_vsyscall, arch/x86/kernel/signal.c:
#: signal_fault, arch/x86/kernel/cpu/bus_lock.c, mm/oom_kill.c, fs/exec.c, kernel/audit.c.
TASK_NAMED: tuple[re.Pattern[str], ...] = tuple(
    re.compile(pattern, re.ASCII | re.DOTALL)
    for pattern in (
        r"(?P<name>.{0,15}?)\[\d+\] .*? ip:[0-9a-f]+ cs:[0-9a-f]+ sp:[0-9a-f]+ ax:[0-9a-f]+ si:",
        r"(?P<name>.{0,15}?)\[\d+\] bad frame in \w+ frame:",
        r"#(?:AC|DB): (?P<name>.{0,15}?)/\d+ took a \w+ trap at address",
        r"(?P<name>.{0,15}?) invoked oom-killer: gfp_mask=",
        r"[Kk]illed process \d+ \((?P<name>.{0,15}?)\) total-vm:",
        r"oom_reaper: reaped process \d+ \((?P<name>.{0,15}?)\), now anon-rss:",
        r"oom-kill:constraint=.*?,task=(?P<name>.{0,15}?),pid=\d+,uid=",
        r"process '(?P<name>.*)' started with executable stack",
        r"audit: type=\d+ (?P<name>.*)",
        r"INFO: task (?P<name>.{0,15}?):\d+ blocked for more than",
        # the kernel's idioms "%s (%d): ..." and "%s[%d]: ..." at a message's start (stack
        # depth, drop_caches, deprecated calls, syslog access): whatever follows
        r"(?:^|(?<=\] )|(?<=kernel: ))(?P<name>.{0,15}?)(?: \(\d+\)|\[\d+\]):? \w",
    )
)
#: What each :data:`TASK_NAMED` line holds (a cheap test before the table).
TASK_NAMED_HINT = re.compile(
    r"\] \S.*? ip:[0-9a-f]+ cs:|\] bad frame in | took a \w+ trap at | invoked oom-killer: "
    r"|illed process \d+ \(|reaped process \d+ \(|,task=| with executable stack|audit: type="
    r"|INFO: task .*?:\d+ blocked| \(\d+\):? \w|\[\d+\]:? \w",
    re.ASCII,
)

#: nbcon prints this after a line cut short by a console takeover, then the line again.
REPLAY_MARKER = "** replaying previous printk message **"

#: A console hang-up right after a panic: the report is probably cut short.
CONSOLE_HANGUP = "serialport: VM disconnected."
PANICKED = "Kernel panic - not syncing"

# ---------------------------------------------------------------------------
# Console prefixes, stack parsing, corruption
# ---------------------------------------------------------------------------

#: A printk line: optional dropped-messages note and login prompt, ``<level>``,
#: ``[ time]`` and the ``[T123]``/``[C1]`` caller id (CONFIG_PRINTK_CALLER).
CONSOLE_OUTPUT = re.compile(
    r"^(?:\*\* [0-9]+ printk messages dropped \*\* )?(?:.* login: )?(?:\<[0-9]+\>)?"
    + printk_time.PATTERN
    + r"(\[ *(?:C|T)[0-9]+\])? ",
    re.ASCII,
)
TASK_CONTEXT = re.compile(r"\[ *T[0-9]+\]")
CPU_CONTEXT = re.compile(r"\[ *C[0-9]+\]")
QUESTIONABLE_FRAME = re.compile(r"(\[\<[0-9a-f]+\>\])? \? ")
EOI = "<EOI>"

STACK_START = (
    re.compile(r"Call (?:T|t)race"),
    re.compile(r"Allocated:"),
    re.compile(r"Allocated by task [0-9]+:"),
    re.compile(r"Freed:"),
    re.compile(r"Freed by task [0-9]+:"),
    # "backtrace:" but not "stack backtrace:"; kmemleak may add a crc.
    re.compile(r"[^k] backtrace(?: \(crc [0-9a-fA-F]*\))?:"),
    re.compile(r"Backtrace:"),
    re.compile(r"Uninit was stored to memory at"),
    # RISC-V's show_regs() ends with this line before an unmarked stack dump.
    re.compile(r"status: [0-9a-f]{16} badaddr: [0-9a-f]{16} cause: [0-9a-f]{16}"),
)
RISCV_STACK_START = STACK_START[-1]

FRAME_RES = (
    compile_re(r"^ *(?:{{PC}} ){0,2}{{FUNC}}"),
    # arm: "[<pc>] (func) from [<pc>] (caller+0x..)": both the current and the next frame.
    compile_re(r"^ *{{PC}} \(([a-zA-Z0-9_.]+)\) from {{PC}} \({{FUNC}}"),
)

#: Fault-injection stacks are often interleaved with reports.
CORRUPTED_LINES = (
    compile_re(r"^(?: +\[\<?(?:0x)?[0-9a-f]+\>?\])? +should_fail(slab)?(\.[a-z0-9.]+)?\+0x"),
)

#: A timestamp merged into a title means interleaved output.
CORRUPTED_TITLES = (printk_time.STAMP,)

#: Syscall-wrapper prefixes that differ between architectures; the shortest strip wins.
STRIP_FRAME_PREFIXES = (
    "SYSC_",
    "SyS_",
    "sys_",
    "__x64_",
    "__ia32_",
    "__arm64_",
    "____sys_",
    "___sys_",
    "__sys_",
    "__se_",
    "__se_sys_",
    "__do_sys_",
    "compat_SYSC_",
    "compat_SyS_",
    "ksys_",
)

#: Frames that name the messenger (sanitizer, allocator, lock, printk, list and string
#: helpers, ...) rather than the culprit; matched anywhere in the function name.
GENERIC_SKIP: tuple[str, ...] = (
    "__sanitizer",
    "__asan",
    "kasan",
    "hwasan",
    "__msan",
    "kmsan",
    "kcsan_setup_watchpoint",
    "check_memory_region",
    "check_heap_object",
    "check_object",
    "read_word_at_a_time",
    "(read|write)_once_.*nocheck",
    "print_address_description",
    "panic",
    "invalid_op",
    "report_bug",
    "fixup_bug",
    "print_report",
    "print_usage_bug",
    "do_error",
    "invalid_op",
    "_trap$|do_trap",
    "show_stack",
    "dump_stack",
    "walk_stack",
    "dump_backtrace",
    "warn_slowpath",
    "warn_alloc",
    "warn_bogus",
    "__warn",
    "alloc_page",
    "k?v?(?:m|z|c)alloc",
    "krealloc",
    "kmem_cache",
    "allocate_slab",
    "__alloc_frozen_pages_noprof",
    "folio_(?:alloc|unlock)",
    "filemap_alloc_folio",
    "__filemap_get_folio",
    "find_or_create_page",
    "do_read_cache_folio",
    "read_cache_page",
    "pagecache_get_page",
    "grab_cache_page_write_begin",
    "slab_",
    "debug_object",
    "timer_is_static_object",
    "work_is_static_object",
    "__might_fault",
    "print_unlock",
    "imbalance_bug",
    "lockdep",
    "bh_enable",
    "bh_disable",
    "perf_trace",
    "lock_acquire",
    "lock_release",
    "lock_class",
    "mark_lock",
    "(reacquire|mark)_held_locks",
    "raw_spin_rq",
    "spin_lock",
    "spin_trylock",
    "spin_unlock",
    "read_lock",
    "read_trylock",
    "write_lock",
    "write_trylock",
    "read_unlock",
    "write_unlock",
    "^down$",
    "down_read",
    "down_write",
    "down_read_trylock",
    "down_write_trylock",
    "down_trylock",
    "up_read",
    "up_write",
    "^mutex_",
    "^__mutex_",
    "^rt_mutex_",
    "owner_on_cpu",
    "osq_lock",
    "osq_unlock",
    "atomic(64)?_(dec|inc|read|set|or|xor|and|add|sub|fetch|xchg|cmpxchg|try)",
    "(set|clear|change|test)_bit",
    "__wake_up",
    "^refcount_",
    "^kref_",
    "ref_tracker",
    "seqprop_assert",
    "memcpy",
    "memcmp",
    "memset",
    "memchr",
    "memmove",
    "memdup",
    "strcmp",
    "strncmp",
    "strcpy",
    "strlcpy",
    "strncpy",
    "strscpy",
    "strlen",
    "strstr",
    "strnstr",
    "strnlen",
    "strchr",
    "strdup",
    "strndup",
    "copy_to_user",
    "copy_from_user",
    "copy_to_iter",
    "copy_from_iter",
    "copy_page_to_iter",
    "copy_page_from_iter",
    "copy_folio_to_iter",
    "^copyin$",
    "^copyout$",
    "put_user",
    "get_user",
    "might_fault",
    "might_sleep",
    "list_add",
    "list_del",
    "list_replace",
    "list_move",
    "list_splice",
    "^rb_",
    "^__rb_",
    "_indirect_thunk_",
    "string",
    "pointer",
    "snprintf",
    "scnprintf",
    "kasprintf",
    "kvasprintf",
    "printk",
    "va_format",
    "dev_info",
    "dev_notice",
    "dev_warn",
    "dev_err",
    "dev_alert",
    "dev_crit",
    "dev_emerg",
    "program_check_exception",
    "program_check_common",
    "del_timer",
    "flush_work",
    "__cancel_work_timer",
    "cancel_work_sync",
    "try_to_grab_pending",
    "flush_workqueue",
    "drain_workqueue",
    "destroy_workqueue",
    "queue_work",
    "finish_wait",
    "kthread_stop",
    "kobject_",
    "add_uevent_var",
    "get_device_parent",
    "device_add",
    "device_del",
    "device_unregister",
    "device_destroy",
    "device_release",
    "devres_release_all",
    "hwrng_unregister",
    "i2c_del_adapter",
    "__unregister_client",
    "device_for_each_child",
    "rollback_registered",
    "unregister_netdev",
    "sysfs_remove",
    "device_remove_file",
    "tty_unregister_device",
    "dummy_urb_enqueue",
    "usb_kill_urb",
    "usb_kill_anchored_urbs",
    "usb_control_msg",
    "usb_hcd_submit_urb",
    "usb_submit_urb",
    "^complete$",
    "wait_for_completion",
    "^kv?free$",
    "kfree_skb",
    "readb$",
    "readw$",
    "readl$",
    "readq$",
    "writeb$",
    "writew$",
    "writel$",
    "writeq$",
    "logic_in",
    "logic_out",
    "^crc\\d+",
    "crc_itu_t",
    "__might_resched",
    "assertfail",
    "^iput$",
    "^iput_final$",
    "^ihold$",
    "hex_dump_to_buffer",
    "print_hex_dump",
    "^klist_",
    "(trace|lockdep)_(hard|soft)irq",
    "^(un)?lock_page",
    "stack_trace_consume_entry",
    "arch_stack_walk",
    "stack_trace_save",
    "insert_work",
    "__queue_delayed_work",
    "queue_delayed_work_on",
    "ida_free",
    # arm64 translation-fault handling
    "do_(kernel|translation)_fault",
    "do_mem_abort",
    "el1_abort",
    "el1h_64_sync(?:_handler)?",
    "print_tainted",
    "xas_(?:start|load|find)",
    "find_lock_entries",
    "truncate_inode_pages_range",
    "__phys_addr",
    "__fortify_report",
    "cleanup_srcu_struct",
    "rhashtable_lookup",
    "extract_(user|iter)_to_sg",
    "drop_nlink",
    "^get_taint$",
    "^put_device$",
    "lock_timer_base",
    "__timer_delete_sync",
    "sk_stop_timer_sync",
    "__mod_timer",
    "fast_dput",
    "dput",
)

#: Where stalls and lockups spin, the representative frame is the one before these.
STALL_ANCHOR_FRAMES = tuple(
    re.compile(p)
    for p in (
        "process_one_work",
        "do_syscall_",
        "do_fast_syscall_",
        "sysenter_dispatch",
        "tracesys_phase2",
        "el0_svc_handler",
        "invoke_syscall",
        "ret_fast_syscall",
        "netif_receive_skb",
        "do_softirq",
        "call_timer_fn",
        "_run_timers",
        "run_timer_softirq",
        "hrtimer_run",
        "run_ksoftirqd",
        "smpboot_thread_fn",
        "^kthread$",
        "start_secondary",
        "cpu_startup_entry",
        "ret_from_fork",
        # discriminating syscalls (file_operations callbacks, ...)
        "vfs_write",
        "vfs_read",
        "vfs_iter_read",
        "vfs_iter_write",
        "do_iter_read",
        "do_iter_write",
        "call_read_iter",
        "call_write_iter",
        "new_sync_read",
        "new_sync_write",
        "vfs_ioctl",
        "ksys_ioctl",
        "compat_ioctl",
        "compat_sys_ioctl",
        "blkdev_driver_ioctl",
        "blkdev_ioctl",
        "^call_read_iter",
        "^call_write_iter",
        "do_iter_readv_writev",
        "^call_mmap",
        "mmap_region",
        "do_mmap",
        "do_dentry_open",
        "vfs_open",
        # socket operations
        "^sock_sendmsg",
        "^sock_recvmsg",
        "^sock_release",
        "^__sock_release",
        "^setsockopt$",
        "kernel_setsockopt",
        "sock_common_setsockopt",
        "^listen$",
        "kernel_listen",
        "sk_common_release",
        "^sock_mmap",
        "^accept$",
        "kernel_accept",
        "^sock_do_ioctl",
        "^sock_ioctl",
        "^compat_sock_ioctl",
        "^nfnetlink_rcv_msg",
        "^rtnetlink_rcv_msg",
        "^netlink_dump",
        "^(sys_)?(socketpair|connect|ioctl)",
        # page-fault entry points
        "__do_fault",
        "do_page_fault",
        "^page_fault$",
        # exit_to_usermode_loop callbacks
        "__fput",
        "task_work_run",
        "exit_to_usermode",
        "smp_call_function",
        "tasklet_action",
        "tasklet_hi_action",
    )
)

#: Hung tasks wait on a victim stack: these anchors group them (frame → title frame).
HANG_ANCHORS: dict[str, str] = {
    "rtnl_lock": "",
    "synchronize_rcu": "synchronize_rcu",
    "synchronize_srcu": "synchronize_rcu",
    "synchronize_net": "synchronize_rcu",
    "synchronize_sched": "synchronize_rcu",
}
HANG_SKIP = (
    "sched",
    "_lock",
    "_slowlock",
    "down",
    "rwsem",
    "completion",
    "kthread",
    "wait",
    "synchronize",
    "context_switch",
    "__switch_to",
    "cancel_delayed_work",
    "rcu_barrier",
)

# ---------------------------------------------------------------------------
# Titles: normalisation, guilty files, types
# ---------------------------------------------------------------------------

#: Applied repeatedly, in order, to every title: what varies between two runs of a bug.
TITLE_REPLACEMENTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.ASCII), r)
    for p, r in (
        (r"syz-executor\.?[0-9]+((/|:)[0-9]+)?", "syz-executor"),
        (r"syzkaller[0-9]+((/|:)[0-9]+)?", "syzkaller"),
        (r"([^a-zA-Z0-9])(?:0x)?[0-9a-f]{6,}", r"\1ADDR"),
        (r"([0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3})", "IP"),
        (r"(\.\w+)(:[0-9]+)+", r"\1:LINE"),
        (r"([a-zA-Z][a-zA-Z0-9_.]+)\+0x[0-9a-z]+/0x[0-9a-z]+", r"\1"),
        (r"CPU#[0-9]+", "CPU"),
        (r"(\W)(\d+)(\W|$)", r"\1NUM\3"),
        (r"(\d+){7,}", "NUM"),
    )
)
MAX_TITLE_LEN = 120
REPORT_FRAME = re.compile(r".* in ((?:<[a-zA-Z0-9_: ]+>)?[a-zA-Z0-9_:]+)")

#: A source file and line (``net/ipv4/tcp.c:2357``). The match starts where a path does
#: (nothing of a path before it): tried from every position of a long run of letters, the
#: nested ``[...]*[...]+`` took cubic time (a 2,500-byte word: 25 s).
FILENAME = re.compile(r"(?<![a-zA-Z0-9_\-\./])([a-zA-Z0-9_\-\./]*[a-zA-Z0-9_\-]\.(c|h)):[0-9]+")
DEEPER_PATH = re.compile(r"^/[a-zA-Z0-9_\-\./]+/[a-zA-Z0-9_\-]+\.(c|h)$")
#: Source files that are rarely to blame: headers, libraries, allocators, locking, ...
GUILTY_FILE_IGNORES = tuple(
    re.compile(p)
    for p in (
        r".*\.h",
        r"^lib/.*",
        r"^virt/lib/.*",
        r"^mm/kasan/.*",
        r"^mm/kmsan/.*",
        r"^kernel/kcov.c",
        r"^mm/sl.b.c",
        r"^mm/filemap.c",
        r"^mm/folio-compat.c",
        r"^mm/truncate.c",
        r"^mm/memory.c",
        r"^mm/percpu.*",
        r"^mm/vmalloc.c",
        r"^mm/page_alloc.c",
        r"^mm/mempool.c",
        r"^mm/util.c",
        r"^kernel/rcu/.*",
        r"^arch/.*/kernel/traps.c",
        r"^arch/.*/kernel/unwind.*.c",
        r"^arch/.*/mm/fault.c",
        r"^arch/.*/mm/physaddr.c",
        r"^arch/.*/kernel/stacktrace.c",
        r"^arch/.*/kernel/apic/apic.c",
        r"^arch/arm64/kernel/entry.*.c",
        r"^arch/arm64/kernel/process\.c",
        r"^kernel/locking/.*",
        r"^kernel/panic.c",
        r"^kernel/printk/printk.*.c",
        r"^kernel/softirq.c",
        r"^kernel/kthread.c",
        r"^kernel/sched/.*.c",
        r"^kernel/stacktrace.c",
        r"^kernel/time/timer.c",
        r"^kernel/workqueue.c",
        r"^net/core/dev.c",
        r"^net/core/sock.c",
        r"^net/core/skbuff.c",
        r"^fs/proc/generic.c",
        r"^trusty/",
        r"^drivers/usb/core/urb.c",
        r"^arch/.*/lib/crc.*",
    )
)
GUILTY_LINE_IGNORE = re.compile(
    r"(hardirqs|softirqs)\s+last\s+(enabled|disabled)|^Register r\d+ information"
)
#: Where an RCU stall's own frames end and the interrupted code begins.
STALL_INTERRUPT_ENDS = ("apic_timer_interrupt+0x", "el1h_64_irq+0x", "Exception stack")

#: Title prefix → crash type (syzkaller's names); the first row with a matching prefix wins.
TITLE_TO_TYPE: tuple[tuple[tuple[str, ...], str], ...] = (
    (("KFENCE: use-after-free write",), "KFENCE-USE-AFTER-FREE-WRITE"),
    (("KFENCE: use-after-free read", "KFENCE: use-after-free"), "KFENCE-USE-AFTER-FREE-READ"),
    (("KFENCE: invalid write", "KFENCE: out-of-bounds write"), "KFENCE-WRITE"),
    (
        ("KFENCE: invalid read", "KFENCE: out-of-bounds read", "KFENCE: out-of-bounds"),
        "KFENCE-READ",
    ),
    (("KFENCE: memory corruption",), "KFENCE-MEMORY-CORRUPTION"),
    (("KFENCE: invalid free",), "KFENCE-INVALID-FREE"),
    (("KMSAN: uninit-value",), "KMSAN-UNINIT-VALUE"),
    (
        (
            "KMSAN: kernel-infoleak-after-free",
            "KMSAN: kernel-usb-infoleak-after-free",
            "KMSAN: use-after-free",
        ),
        "KMSAN-USE-AFTER-FREE-READ",
    ),
    (("KMSAN: kernel-infoleak", "KMSAN: kernel-usb-infoleak"), "KMSAN-INFO-LEAK"),
    (("KASAN: null-ptr-deref Write",), "KASAN-NULL-POINTER-DEREFERENCE-WRITE"),
    (("KASAN: null-ptr-deref Read",), "KASAN-NULL-POINTER-DEREFERENCE-READ"),
    (
        ("BUG: unable to handle kernel NULL pointer dereference in",),
        "NULL-POINTER-DEREFERENCE",
    ),
    (
        (
            "KASAN: global-out-of-bounds Write",
            "KASAN: out-of-bounds Write",
            "KASAN: slab-out-of-bounds Write",
            "KASAN: stack-out-of-bounds Write",
            "KASAN: user-memory-access Write",
            "KASAN: vmalloc-out-of-bounds Write",
            "KASAN: wild-memory-access Write",
        ),
        "KASAN-WRITE",
    ),
    (
        (
            "KASAN: global-out-of-bounds Read",
            "KASAN: invalid-access Read",
            "KASAN: out-of-bounds Read",
            "KASAN: slab-out-of-bounds Read",
            "KASAN: slab-out-of-bounds",
            "KASAN: stack-out-of-bounds Read",
            "KASAN: stack-out-of-bounds",
            "KASAN: unknown-crash Read",
            "KASAN: user-memory-access Read",
            "KASAN: vmalloc-out-of-bounds Read",
            "KASAN: wild-memory-access Read",
            "KASAN: wild-memory-access",
        ),
        "KASAN-READ",
    ),
    (("KASAN: double-free or invalid-free", "KASAN: invalid-free"), "KASAN-INVALID-FREE"),
    (
        ("KASAN: slab-use-after-free Write", "KASAN: use-after-free Write"),
        "KASAN-USE-AFTER-FREE-WRITE",
    ),
    (
        (
            "KASAN: slab-use-after-free Read",
            "KASAN: use-after-free Read",
            "KASAN: use-after-free",
        ),
        "KASAN-USE-AFTER-FREE-READ",
    ),
    (
        (
            "BUG: corrupted list",
            "BUG: unable to handle kernel paging request",
            "BUG: slab ",
            "pagealloc: memory corruption",
        ),
        "MEMORY_SAFETY_BUG",
    ),
    (("pagealloc: single bit error",), "HARDWARE-ERROR"),
    (("WARNING: refcount bug",), "REFCOUNT_WARNING"),
    (("UBSAN: array-index-out-of-bounds",), "MEMORY_SAFETY_UBSAN"),
    (("KCSAN: data-race",), "KCSAN-DATARACE"),
    (("KCSAN: assert: race in",), "KCSAN-ASSERT"),
    (
        (
            "BUG: bad unlock balance in",
            "BUG: held lock freed in",
            "BUG: rwlock",
            "BUG: spinlock",
            "BUG: still has locks held in",
            "BUG: using",
            "WARNING: bad unlock balance in",
            "WARNING: held lock freed in",
            "WARNING: lock held",
            "WARNING: locking bug in",
            "WARNING: nested lock was not taken in",
            "WARNING: still has locks held in",
            "WARNING: suspicious RCU usage in",
            "inconsistent lock state in",
            "possible deadlock in",
        ),
        "LOCKDEP",
    ),
    (
        (
            "BUG: scheduling while atomic in",
            "BUG: sleeping function called from invalid context in",
        ),
        "ATOMIC_SLEEP",
    ),
    (("memory leak in",), "LEAK"),
    (("BUG: bad usercopy in", "kernel BUG"), "BUG"),
    (("WARNING in",), "WARNING"),
    (
        (
            "BUG: stack guard page was hit in",
            "WARNING: corrupted",
            "WARNING: kernel stack frame pointer has bad value",
            "WARNING: kernel stack regs has bad",
        ),
        "",
    ),
    (
        (
            "BUG: soft lockup in",
            "INFO: rcu detected stall in",
            "INFO: task can't die in",
            "INFO: task hung in",
        ),
        "HANG",
    ),
    (
        (
            "Alignment trap in",
            "BUG: Object already free",
            "Internal error in",
            "PANIC: double fault",
            "Unhandled fault in",
            "VFS: Busy inodes after unmount (use-after-free)",
            "VFS: Close: file count is zero (use-after-free)",
            "divide error in",
            "general protection fault in",
            "go runtime error",
            "invalid opcode in",
            "kernel panic:",
            "kernel stack overflow",
            "panic:",
            "rust_kernel panicked",
            "stack segment fault in",
            "trusty:",
            "unregister_netdevice: waiting for DEV to become free",
        ),
        "DoS",
    ),
    (("unexpected kernel reboot",), "REBOOT"),
    (("SYZFAIL", "SYZFATAL:"), "SYZ_FAILURE"),
    # defaults
    (("WARNING:",), "WARNING"),
    (("BUG:",), ""),
    (("INFO:",), ""),
    (("KASAN:",), "KASAN-UNKNOWN"),
    (("KFENCE:",), "KFENCE-UNKNOWN"),
    (("KMSAN:",), "KMSAN-UNKNOWN"),
    (("UBSAN:",), "UBSAN"),
    (("KCSAN:",), "KCSAN-UNKNOWN"),
)

#: The type kassist reports when syzkaller has none for a title.
UNKNOWN_TYPE = "UNKNOWN"


def title_to_type(title: str) -> str:
    """Return the crash type of a title (``""`` where syzkaller names none)."""
    for prefixes, ctype in TITLE_TO_TYPE:
        if title.startswith(prefixes):
            return ctype
    return ""
