"""In-kernel enforcement of the agent's policy: a ``BPF_PROG_TYPE_CGROUP_SYSCTL`` program.

The RFC's kernel-side agent. *Lockdown* refuses every sysctl write by the tasks of a
cgroup (the assistant's own: only the agent writes); *guard* refuses a write to a key
the policy manages unless it keeps the policy's type, range or words (keys it does not
manage pass). Each refusal comes back through a BPF ring buffer (the RFC's completion
queue) as a :class:`Refusal`. Start with :class:`Enforcer`; see ``enforcer.py`` for
the reload and pinning design, ``maps.py`` for how the policy becomes a map.
"""

from actions.enforce.capability import problems
from actions.enforce.enforcer import (
    Attachment,
    Enforcer,
    EnforceUnavailable,
    Refusal,
    pinned_status,
)
from actions.enforce.maps import Compiled, Rule, compile_rules

__all__ = [
    "Attachment",
    "Compiled",
    "EnforceUnavailable",
    "Enforcer",
    "Refusal",
    "Rule",
    "compile_rules",
    "pinned_status",
    "problems",
]
