"""The bug report's vmcore section: what drgn read from the dump, as Markdown.

Rendered from the typed :class:`assistant.vmcore.VmcoreSection`; every piece of
text that came from the dump (task names, panic message, locals) is data and
is escaped so that it cannot change the Markdown around it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from assistant.drafters.markdown import md_code_block, md_inline
from assistant.frames import frame_text

if TYPE_CHECKING:  # drgn is loaded only when there is a vmcore
    from probes.drgn import BlockedTask, CrashContext, CrashedStack, Findings, KernelModule

#: The marker of the frame that faulted, as ``kassist vmcore bt`` prints it.
FAULTED = "   <== faulted here"


def _panic_line(crash: CrashContext) -> str:
    task = crash.task
    who = f"`{md_inline(task.comm)}` pid {task.pid}" if task else "unknown"
    return (
        f"Panic: `{md_inline(crash.panic_message or '?')}` · task {who} · CPU {crash.cpu}"
        f" · tainted `{crash.tainted.strip() or 'no'}`\n"
    )


def _stack(stack: CrashedStack) -> str:
    lines = []
    for f in stack.frames:
        mark = FAULTED if f.index == stack.guilty else ""
        lines.append(f"#{f.index:<2} {frame_text(f, f.pc)}{mark}")
        for v in f.locals:
            value = v.value if v.value is not None else "<optimized out>"
            lines.append(f"      {v.name} = {value}  ({v.type})")
    return f"### Stack of the crashed task, with locals\n\n{md_code_block(chr(10).join(lines))}"


def _blocked(blocked: list[BlockedTask]) -> str:
    lines = []
    for b in blocked:
        lines.append(f"{b.task.comm} pid {b.task.pid} (D)")
        lines += [f"    #{f.index:<2} {frame_text(f, f.pc)}" for f in b.frames]
    body = "\n".join(lines) or "(none)"
    return f"### Tasks blocked in D state ({len(blocked)})\n\n{md_code_block(body)}"


def _modules(modules: list[KernelModule]) -> str:
    rows = "\n".join(
        f"| `{md_inline(m.name)}` | 0x{m.address:x} | {m.size} | {m.taints or '-'} |"
        for m in modules
    )
    head = "| module | address | size | taints |\n|---|---|---|---|"
    return f"### Loaded modules\n\n{head}\n{rows}\n"


def vmcore_markdown(vmcore: Findings) -> str:
    """Return the report's vmcore section: panic, crashed stack with locals, blocked tasks.

    :param vmcore: ``TriageResult.vmcore`` (drgn's analyses of the dump).
    """
    out = ["\n## From the vmcore (drgn)\n"]
    if vmcore.crash:
        out.append(_panic_line(vmcore.crash))
    if vmcore.stack:
        out.append(_stack(vmcore.stack))
    if vmcore.blocked is not None:
        out.append(_blocked(vmcore.blocked))
    if vmcore.modules:
        out.append(_modules(vmcore.modules))
    return "\n".join(out)
