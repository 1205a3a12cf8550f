"""The agent's entry point for fault-injection tests: ``python -m tests.agent_entry serve ...``.

It runs the agent's own command line (:func:`actions.cli.main`) with a step hook
installed; the production entry point installs none and reads no variable for it.
``KASSIST_AGENT_FAULT`` says what to do at which step of an apply or a rollback
(``validated``, ``applying``, ``write:<i>``, ``applied``, ``verified``,
``rolling_back``, ``undo:<i>``, ``rolled_back``):

- ``<step>``: SIGKILL the agent there (after an audit line ``fault-injection``);
- ``pause:<step>``: sleep ``KASSIST_AGENT_PAUSE`` seconds there (default 1);
- ``fill:<step>``: fill the file systems of the directories in ``KASSIST_AGENT_FILL``
  (``:``-separated) there, once, with a file ``.fill`` in each, until ``ENOSPC``.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from pathlib import Path

from actions.agent import Agent, StepHook
from actions.cli import main

FAULT_ENV = "KASSIST_AGENT_FAULT"
FILL_NAME = ".fill"


def fill(directory: Path) -> int:
    """Fill the file system of ``directory`` with ``directory/.fill`` until it is full.

    :return: the bytes written.
    """
    done = 0
    fd = os.open(directory / FILL_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            block = b"\0" * size
            while True:
                try:
                    done += os.write(fd, block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return done


def align_audit(agent: Agent, page: int = 4096) -> None:
    """Pad the audit log to a page boundary with ``fault-pad`` lines.

    A file system is full when no page is left, but a file's last page keeps room for
    a few more lines: aligned, the log's very next line meets ``ENOSPC``.
    """
    for _ in range(8):
        gap = -agent.audit.path.stat().st_size % page
        if not gap:
            return
        base = len('{"ts": 1796625608.265904, "event": "fault-pad", "pad": ""}\n')
        agent.audit.record(
            "fault-pad", pad="x" * (gap - base if gap >= base + 8 else gap + page - base)
        )


def fault_hook(agent: Agent, fault: str, dirs: list[Path], pause: float) -> StepHook:
    """Return the step hook that does ``fault`` (see the module's docstring)."""
    what, step = ("", fault)
    if fault.startswith(("pause:", "fill:")):
        what, _, step = fault.partition(":")
    filled: list[str] = []

    def hook(at: str, cs_id: int) -> None:
        if at != step:
            return
        if what == "pause":
            time.sleep(pause)
        elif what == "fill" and not filled:
            where = [str(d) for d in dirs]
            agent.audit.record("fault-injection", changeset=cs_id, step=at, fill=where)
            filled.append(at)
            if agent.audit.path.parent in dirs:
                align_audit(agent)
            for d in dirs:
                fill(d)
        elif not what:
            agent.audit.record("fault-injection", changeset=cs_id, step=at)
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def install(agent: Agent) -> None:
    """Install the hook ``KASSIST_AGENT_FAULT`` asks for (none when it is unset)."""
    fault = os.environ.get(FAULT_ENV, "")
    if not fault:
        return
    dirs = [Path(d) for d in os.environ.get("KASSIST_AGENT_FILL", "").split(":") if d]
    pause = float(os.environ.get("KASSIST_AGENT_PAUSE", "1"))
    agent.on_step = fault_hook(agent, fault, dirs, pause)


if __name__ == "__main__":
    sys.exit(main(prepare=install))
