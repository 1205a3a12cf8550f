"""Tasks: the ones blocked in D state (with their stacks) and each CPU's run queue."""

from __future__ import annotations

from dataclasses import dataclass, field

import drgn
from drgn.helpers.linux.cpumask import for_each_online_cpu
from drgn.helpers.linux.pid import for_each_task
from drgn.helpers.linux.sched import (
    cpu_rq,
    rq_for_each_fair_task,
    rq_for_each_rt_task,
    task_since_last_arrival_ns,
    task_state_to_char,
)

from probes.drgn.crash import TaskRef, task_ref
from probes.drgn.stack import Frame, stack_frames


@dataclass
class BlockedTask:
    """A task in uninterruptible sleep (D state) and where it sleeps.

    :param task: the task.
    :param blocked_ns: nanoseconds since it last arrived on a run queue, or ``None``.
    :param frames: its stack, innermost first (no locals).
    """

    task: TaskRef
    blocked_ns: int | None = None
    frames: list[Frame] = field(default_factory=list)


@dataclass
class RunQueue:
    """One CPU's run queue.

    :param cpu: the CPU.
    :param nr_running: ``rq->nr_running``.
    :param current: the task on the CPU (``rq->curr``).
    :param queued: the tasks waiting on it (CFS and RT), current excluded.
    """

    cpu: int
    nr_running: int
    current: TaskRef
    queued: list[TaskRef] = field(default_factory=list)


def blocked_tasks(prog: drgn.Program, with_stacks: bool = True) -> list[BlockedTask]:
    """Return every task in D state (``TASK_UNINTERRUPTIBLE``, not ``TASK_NOLOAD`` idle).

    :param with_stacks: unwind each one's stack.
    """
    out = []
    for task in for_each_task(prog):
        if task_state_to_char(task) != "D":
            continue
        try:
            since: int | None = task_since_last_arrival_ns(task)
        except (AttributeError, LookupError):
            since = None
        frames = stack_frames(prog, prog.stack_trace(task), False) if with_stacks else []
        out.append(BlockedTask(task_ref(task), since, frames))
    return out


def run_queues(prog: drgn.Program) -> list[RunQueue]:
    """Return the run queue of each online CPU."""
    out = []
    for cpu in for_each_online_cpu(prog):
        rq = cpu_rq(prog, cpu)
        curr = rq.curr
        queued = [
            task_ref(t)
            for t in (*rq_for_each_rt_task(rq), *rq_for_each_fair_task(rq))
            if t.value_() != curr.value_()
        ]
        out.append(RunQueue(cpu, rq.nr_running.value_(), task_ref(curr), queued))
    return out
