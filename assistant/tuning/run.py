"""One tuning run: observe the kernel, then run the scenario table against what others manage.

The CLI (``kassist tune``), the chat's tune tool and its health verdict all run the
scenarios this one way, so the three can never disagree on what a run reads.
"""

from __future__ import annotations

from actions.model import AgentStatus
from assistant.tuning.engine import TuneReport, analyse
from assistant.tuning.evidence import Observation, observe
from assistant.tuning.managed import managed_keys
from assistant.tuning.scenarios import READ_KEYS


def tune_run(
    status: AgentStatus | None,
    interval: float | None = None,
    *,
    cgroup: str | None = None,
    netns: str | None = None,
    trace: bool = False,
) -> tuple[TuneReport, Observation]:
    """Observe the kernel and run every scenario; keys someone else manages are reported.

    :param status: the agent's status (its overrides are left alone), or None without one.
    :param interval: seconds of the window; None: the counters since boot.
    :param cgroup: a cgroup path read too (see :func:`~assistant.tuning.evidence.observe`).
    :param netns: the namespace the caller has entered (recorded in the output).
    :param trace: run the ``syserrors`` eBPF probe for the window.
    :return: the report and the observation it was made from.
    """
    obs = observe(interval, sysctls=READ_KEYS, cgroup=cgroup, netns=netns, trace=trace)
    return analyse(obs, managed_keys(status)), obs
