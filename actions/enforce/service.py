"""The agent daemon's use of enforcement: start it beside the server, audit each refusal.

The server calls :func:`start_for_agent` once before it listens, :func:`reload_policy`
on SIGHUP, and :func:`stop_for_agent` on exit; everything else stays here, so the
daemon's own code gains a few lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actions.audit import Audit
from actions.enforce.build import DEFAULT_CACHE
from actions.enforce.enforcer import (
    DEFAULT_PIN_ROOT,
    DEFAULT_STATE,
    Enforcer,
    EnforceUnavailable,
    Refusal,
)
from actions.errors import ActionError
from actions.policy import Policy, load_policy


@dataclass(frozen=True)
class EnforceSettings:
    """Where the agent enforces its policy in the kernel.

    :param lockdown: cgroup v2 directories whose tasks may write no sysctl.
    :param guard: cgroup v2 directories whose tasks may write managed keys only in policy.
    :param pin_root: the bpffs directory for the pinned links and rules map.
    :param state_file: what ``kassist agent enforce status`` reads (recent refusals).
    :param cache_dir: where the compiled BPF object is kept.
    """

    lockdown: tuple[Path, ...] = ()
    guard: tuple[Path, ...] = ()
    pin_root: Path = DEFAULT_PIN_ROOT
    state_file: Path = DEFAULT_STATE
    cache_dir: Path = DEFAULT_CACHE

    @property
    def wanted(self) -> bool:
        """Tell whether any cgroup was named."""
        return bool(self.lockdown or self.guard)


#: At most this many refusals a second become audit lines; the rest are counted.
AUDIT_PER_SECOND = 200


def audit_refusal(audit: Audit, per_second: int = AUDIT_PER_SECOND) -> Callable[[Refusal], None]:
    """Return a callback that audits a refusal like the agent's own decisions.

    A process looping on refused writes must not fill the disk: past ``per_second``
    refusals in one second, the rest of that second is one ``enforce-refusals-suppressed``
    line with their count (the kernel refuses them all the same).
    """
    window = {"start": 0.0, "count": 0, "suppressed": 0}

    def record(refusal: Refusal) -> None:
        now = time.monotonic()
        if now - window["start"] >= 1.0:
            if window["suppressed"]:
                audit.record("enforce-refusals-suppressed", count=window["suppressed"])
            window.update(start=now, count=0, suppressed=0)
        window["count"] += 1
        if window["count"] > per_second:
            window["suppressed"] += 1
            return
        audit.record("enforce-refusal", **refusal.to_dict())

    return record


def start_for_agent(
    table: Sequence[Mapping[str, Any]],
    audit: Audit,
    settings: EnforceSettings,
    log: Callable[[str], None],
) -> Enforcer | None:
    """Start enforcement for the agent, or say in one line each why not and return ``None``.

    The agent runs on either way: its user-space checks do not depend on this.

    :param table: the agent's :meth:`actions.policy.Policy.table`.
    """
    if not settings.wanted:
        return None
    enforcer = Enforcer(
        settings.pin_root, settings.cache_dir, audit_refusal(audit), settings.state_file
    )
    try:
        compiled = enforcer.start(table, settings.lockdown, settings.guard)
    except EnforceUnavailable as exc:
        for line in exc.problems:
            log(f"in-kernel enforcement off: {line}")
        audit.record("enforce-unavailable", problems=list(exc.problems))
        return None
    except (ActionError, OSError) as exc:
        line = exc.one_line() if isinstance(exc, ActionError) else str(exc)
        log(f"in-kernel enforcement off: {line}")
        audit.record("enforce-unavailable", problems=[line])
        return None
    lockdown = [str(p) for p in settings.lockdown]
    guard = [str(p) for p in settings.guard]
    audit.record(
        "enforce-start", lockdown=lockdown, guard=guard, rules=len(compiled.rules),
        generation=enforcer.generation, pin=str(enforcer.status().get("pin")),
        agent_cgroup=enforcer.agent_cgroup, notices=enforcer.notices,
    )  # fmt: skip
    for notice in enforcer.notices:
        log(f"in-kernel enforcement: {notice}")
    log(
        f"enforcing in the kernel: lockdown {', '.join(lockdown) or '-'}; "
        f"guard {', '.join(guard) or '-'} ({len(compiled.rules)} rules)"
    )
    return enforcer


def stop_for_agent(audit: Audit, enforcer: Enforcer | None) -> None:
    """Detach and unpin everything, and audit it (no-op without enforcement)."""
    if enforcer is None:
        return
    enforcer.stop()
    audit.record("enforce-stop", refusals=len(enforcer.recent), dropped=enforcer.dropped)


def reload_policy(old: Policy, audit: Audit, enforcer: Enforcer | None) -> Policy:
    """Read the agent's policy file again and swap the kernel's rules to it, whole.

    The kernel's map is swapped first: when the new policy cannot be compiled, neither
    the agent nor the kernel changes (the old policy stays everywhere).

    :raises ActionError: the file no longer reads or no longer compiles, in one line.
    """
    new = load_policy(None if old.source == Policy.source else old.source)
    generation = None
    if enforcer is not None:
        enforcer.reload(new.table())
        generation = enforcer.generation
    audit.record("policy-reload", policy=new.source, generation=generation)
    return new
