"""``kassist vmcore explain``: triage a dump's printk buffer and explain its first crash.

Apart from :mod:`assistant.rootcause.explain` because it reads the dump through
:mod:`assistant.vmcore`, which imports triage, which the log's analysis
(:mod:`assistant.rootcause.report`) is registered in: explain itself must not import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from assistant.rootcause.explain import Explanation, explain_target
from assistant.rootcause.registers import pc_frame
from assistant.triage.model import Crash

if TYPE_CHECKING:
    import drgn

    from probes.drgn import Target


def crash_modules(prog: drgn.Program, crash: Crash | None) -> set[str]:
    """Return the modules a crash involves: those its report's frames name, and those
    holding the PCs of the crashed thread's stack as far as it unwinds without them."""
    from probes.drgn.explain import stack_modules

    names = {f.module for f in crash.call_trace if f.module} if crash else set()
    if crash is not None:
        pc = pc_frame(crash.report)
        if pc is not None and pc.module:
            names.add(pc.module)
    return names | stack_modules(prog)


def explain_vmcore(target: Target) -> Explanation:
    """Triage an opened dump's printk buffer and explain its first crash.

    The debug info of the modules the crash involves is loaded here (the target may have
    been opened with the kernel's alone: ``open_target(..., modules=())``).

    :raises InputError: nothing could be read from the dump.
    """
    from assistant.vmcore import analyse_target, triage_analysis
    from probes.drgn.program import load_modules

    result = triage_analysis(analyse_target(target, ("dmesg",), with_locals=False))
    crash = result.crashes[0] if result.crashes else None
    missing = load_modules(target, crash_modules(target.prog, crash))
    out = explain_target(target, crash, crash.report if crash else None)
    if missing:
        out.notes.insert(0, "no debug info for modules: " + ", ".join(missing))
    out.notes = [*result.warnings, *out.notes]
    return out
