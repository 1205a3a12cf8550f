"""``kassist vmcore``: one view of a vmcore (or the live kernel, or a QEMU guest) with drgn."""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from actions.text import printable_lines
from assistant.cli.common import debug_options, format_option, notice
from assistant.frames import frame_text
from assistant.vmcore import analyse_target, open_target
from probes.drgn import Analysis, BlockedTask, Findings, Frame, TaskRef, dmesg_lines

#: view → the analyses it needs.
VIEWS: dict[str, tuple[str, ...]] = {
    "info": ("crash", "modules", "sysctl"),
    "bt": ("crash", "stack"),
    "tasks": ("blocked", "runqueues"),
    "dmesg": ("dmesg",),
    "mem": ("memory",),
    "explain": ("crash", "dmesg"),
}


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _task(t: TaskRef | None) -> str:
    if t is None:
        return "none (live kernel)"
    return f"{t.comm} pid {t.pid} cpu {t.cpu if t.cpu is not None else '?'} state {t.state}"


def _frame(f: Frame) -> str:
    return f"#{f.index:<2} {frame_text(f, f.pc)}"


def _info(a: Analysis) -> list[str]:
    out = []
    c = a.crash
    if c is not None:
        out += [
            f"kernel    {c.release} {c.version or ''}".rstrip(),
            f"panic     {c.panic_message or '(none found in the log)'}",
            f"task      {_task(c.task)}",
            f"cpu       {c.cpu if c.cpu is not None else '?'}",
            f"tainted   {c.tainted.strip() or 'no'} (mask 0x{c.taint_mask:x})",
        ]
    if a.modules is not None:
        out.append(f"modules   {len(a.modules)}")
        for m in a.modules:
            debug = "" if m.debug_info else "  (no debug info)"
            out.append(f"  {m.name:<24} 0x{m.address:x} {m.size:>8} {m.state:<8} {m.taints}{debug}")
    if a.sysctl is not None:
        out.append("sysctl at crash time")
        out += [f"  {s.key} = {s.value}" for s in a.sysctl]
    return out


def _bt(a: Analysis) -> list[str]:
    s = a.stack
    if s is None:
        return ["no crashed thread (a live kernel, or the dump holds none)"]
    out = [f"crashed task: {_task(s.task)}"]
    for f in s.frames:
        out.append(_frame(f) + ("   <== faulted here" if f.index == s.guilty else ""))
        for var in f.locals:
            value = var.value if var.value is not None else "<optimized out>"
            out.append(f"      {var.name} = {value}  ({var.type})")
    return out


def _blocked(b: BlockedTask) -> list[str]:
    since = f", {b.blocked_ns / 1e9:.1f} s since it last ran" if b.blocked_ns is not None else ""
    return [f"{_task(b.task)}{since}"] + ["    " + _frame(f) for f in b.frames]


def _tasks(a: Analysis) -> list[str]:
    out = [f"tasks in D state: {len(a.blocked or [])}"]
    for b in a.blocked or []:
        out += _blocked(b)
    out.append("run queues")
    for rq in a.runqueues or []:
        out.append(f"  cpu {rq.cpu}: {rq.nr_running} running, current {_task(rq.current)}")
        out += [f"    queued {_task(t)}" for t in rq.queued]
    return out


def _dmesg(a: Analysis) -> list[str]:
    return dmesg_lines(a.dmesg or [])


def _mem(a: Analysis) -> list[str]:
    m = a.memory
    if m is None:
        return ["memory summary not available"]
    out = [
        f"total       {_mib(m.total)}",
        f"free        {_mib(m.free)}",
        f"page cache  {_mib(m.page_cache)}",
        f"slab        {_mib(m.slab_reclaimable + m.slab_unreclaimable)}"
        f" (reclaimable {_mib(m.slab_reclaimable)}, unreclaimable {_mib(m.slab_unreclaimable)})",
        f"top slab caches        {'bytes':>12} {'active':>8} {'total':>8} {'size':>6}",
    ]
    for c in m.top_slab_caches:
        counts = f"{c.active_objects:>8} {c.total_objects:>8} {c.object_size:>6}"
        out.append(f"  {c.name:<20} {c.bytes:>12} {counts}")
    return out


_RENDER: dict[str, Callable[[Analysis], list[str]]] = {
    "info": _info,
    "bt": _bt,
    "tasks": _tasks,
    "dmesg": _dmesg,
    "mem": _mem,
}


@click.command()
@click.argument("view", type=click.Choice(list(VIEWS)))
@click.argument("path", metavar="FILE")
@debug_options
@click.option(
    "--ko",
    "extra",
    multiple=True,
    type=click.Path(),
    help="A module .ko with debug info (repeatable).",
)
@format_option("text", "json")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def vmcore(
    view: str,
    path: str,
    vmlinux: str | None,
    debug_dir: str | None,
    extra: tuple[str, ...],
    fmt: str,
    quiet: bool,
) -> None:
    """Show one view of a vmcore: info, bt (stack with locals), tasks, dmesg, mem, or
    explain (the verdict, then each fact behind it: faulting instruction, registers, struct
    member, object state and stacks, trace agreement, assessment; JSON kassist.explain/1).

    FILE is a vmcore (kdump-compressed, flattened or ELF), /proc/kcore for the
    running kernel, or qmp:SOCKET for a QEMU guest (QEMU's -qmp unix:SOCKET).
    Debug info comes from --vmlinux, --debug-dir, --ko, or /usr/lib/debug.
    """
    # explain loads the debug info of the modules its crash involves, not of every one.
    only = () if view == "explain" else None
    target = open_target(path, vmlinux, debug_dir, extra, None if quiet else notice, only)
    if view == "explain":
        from assistant.rootcause.dump import explain_vmcore
        from assistant.rootcause.explain import explanation_markdown

        explanation = explain_vmcore(target)
        if fmt == "json":
            click.echo(json.dumps(explanation.to_dict(), indent=2))
        else:
            click.echo(printable_lines(explanation_markdown(explanation)), nl=False)
        return
    analysis = analyse_target(target, VIEWS[view], with_locals=view == "bt")
    if not quiet:
        for warning in [*analysis.warnings, *analysis.errors]:
            click.echo(f"kassist: {warning}", err=True)
    if fmt == "json":
        data = analysis.to_dict()
        click.echo(json.dumps({k: v for k, v in data.items() if v is not None}, indent=2))
    else:
        click.echo("\n".join(_RENDER[view](analysis)))


# Scheduler frames at the top of every sleeping task's stack: skipped to show where it waits.
_SCHED_PREFIXES = (
    "context_switch",
    "__schedule",
    "schedule",
    "io_schedule",
    "do_wait_for_common",
    "__wait_for_common",
    "wait_for_common",
    "__mutex_lock",
    "mutex_lock",
    "rwsem_down",
    "down_",
)


def _waits_in(b: BlockedTask) -> str:
    inner = next((f for f in b.frames if not (f.function or "").startswith(_SCHED_PREFIXES)), None)
    return frame_text(inner, inner.pc) if inner else "?"


def vmcore_text(vmcore: Findings) -> str:
    """Return the few lines ``kassist triage`` prints about a vmcore's drgn analyses."""
    lines = ["  vmcore:"]
    crash = vmcore.crash
    if crash:
        task = crash.task
        who = f"task {task.comm} pid {task.pid}" if task else "task ? pid ?"
        lines.append(
            f"    panic: {crash.panic_message or '?'} · {who} · cpu {crash.cpu}"
            f" · tainted {crash.tainted.strip() or 'no'}"
        )
    stack = vmcore.stack
    if stack and stack.guilty is not None:
        frame = stack.frames[stack.guilty]
        locals_ = ", ".join(f"{v.name}={v.value}" for v in frame.locals if v.value is not None)
        lines.append(
            f"    faulted in {frame_text(frame, frame.pc)}" + (f" ({locals_})" if locals_ else "")
        )
    blocked = vmcore.blocked or []
    lines.append(f"    tasks in D state: {len(blocked)}")
    lines += [f"      {b.task.comm} pid {b.task.pid} in {_waits_in(b)}" for b in blocked[:5]]
    return "\n".join(lines)
