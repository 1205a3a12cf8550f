"""The agent's policy as tune sees it: may a key change, and within which floor and ceiling.

tune never proposes what the agent would refuse for its range: a value below the
policy's floor becomes the floor, one above its ceiling the ceiling, and the finding
says so (the agent takes a move up to its floor in one change, whatever ``max_step``).
A key the policy does not allow is reported, not recommended.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from actions.errors import ActionError
from actions.limits import Machine as PolicyMachine
from actions.policy import Policy, load_policy
from assistant.tuning.scenarios import Proposal
from assistant.tuning.values import Machine


def agent_policy(path: str | None = None) -> tuple[Policy | None, str]:
    """Load the agent's policy: ``path``, else the configured one (``[agent] policy``).

    An empty path is the built-in default policy.

    :return: the policy and its source, or ``None`` and why it cannot be read.
    """
    from assistant.config import load_config

    try:
        policy = load_policy(load_config().agent.policy if path is None else path)
    except ActionError as exc:
        return None, f"the agent's policy cannot be read: {exc.message}"
    return policy, policy.source


def for_machine(policy: Policy, m: Machine) -> Policy:
    """Return the policy with its machine-relative caps taken for ``m`` (RAM, CPUs)."""
    return replace(policy, machine=PolicyMachine(m.ram, m.cpus, m.page_size))


def refusal(policy: Policy, key: str) -> str | None:
    """Say why the policy never lets the agent change ``key``, or return None."""
    if (glob := policy.denied_by(key, ".")) is not None:
        return f"the agent's policy denies it ({glob})"
    if policy.allowed_by(key, ".") is None:
        return "the agent's policy does not allow it"
    return None


@dataclass(frozen=True)
class Clamped:
    """A proposed value brought within the policy's range.

    :param value: the value to propose; ``None`` when the range leaves no move in the
        direction wanted (the key is reported, not recommended).
    :param note: what was changed and why (empty when the value was in range).
    """

    value: int | list[int] | None
    note: str = ""


def _shown(value: int | list[int]) -> str:
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def clamp(policy: Policy, p: Proposal) -> Clamped:
    """Bring a proposed value within the policy's floor and ceiling for its key.

    The move must keep its direction (``up`` stays up): a range that allows none leaves
    no value to propose.
    """
    key, current, value = p.key, p.current, p.value
    spec = policy.spec(key, ".")
    if spec is None or spec.type == "choice" or (spec.min is None and spec.max is None):
        return Clamped(value)
    low, high = spec.min, spec.max

    def one(v: int) -> int:
        v = v if low is None else max(v, low)
        return v if high is None else min(v, high)

    new = one(value) if isinstance(value, int) else [one(v) for v in value]
    if new == value:
        return Clamped(value)
    where = f"{'-' if low is None else low}..{'-' if high is None else high} ({spec.source})"
    if new == current or Proposal(key, current, new).direction != p.direction:
        return Clamped(
            None, f"{key}: the agent's range {where} leaves no move from {_shown(current)}"
        )
    if isinstance(value, int) and low is not None and value < low:
        why = f"{value} is below the agent's floor {low} ({spec.source})"
    elif isinstance(value, int) and high is not None:
        why = f"{value} is above the agent's ceiling {high} ({spec.source})"
    else:
        why = f"{_shown(value)} lies outside the agent's range {where}"
    return Clamped(new, f"{key}: {why}: proposing {_shown(new)}")
