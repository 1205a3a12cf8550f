"""The agent daemon's use of enforcement: start it beside the server, audit each refusal.

The server calls :func:`start_for_agent` once before it listens, :func:`reload_policy`
on SIGHUP, and :func:`stop_for_agent` on exit; everything else stays here, so the
daemon's own code gains a few lines.

Enforcement that was requested and cannot run stops the agent: :func:`start_for_agent`
raises one :class:`ActionError` line (the agent exits non-zero). Only with
``--enforce-best-effort`` (off by default) does the agent serve without some of it,
and then ``kassist agent status`` lists every cgroup that is not enforced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
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
    Unguarded,
    remove_stale_runs,
)
from actions.enforce.maps import SpecOf
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
    :param best_effort: serve even when some of the enforcement asked for cannot run
        (``--enforce-best-effort``; off by default: then the agent refuses to start).
    """

    lockdown: tuple[Path, ...] = ()
    guard: tuple[Path, ...] = ()
    pin_root: Path = DEFAULT_PIN_ROOT
    state_file: Path = DEFAULT_STATE
    cache_dir: Path = DEFAULT_CACHE
    best_effort: bool = False

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


def spec_lookup(policy: Policy) -> SpecOf:
    """Return the validator's spec of a dotted key as plain data (for :func:`compile_rules`)."""

    def spec_of(key: str) -> Mapping[str, Any] | None:
        spec = policy.spec(key, ".")
        return spec.to_dict() if spec is not None else None

    return spec_of


def start_for_agent(
    policy: Policy,
    audit: Audit,
    settings: EnforceSettings,
    log: Callable[[str], None],
) -> Enforcer | None:
    """Start enforcement for the agent; fail closed when it was asked for and cannot run.

    Without enforcement asked for, runs an earlier agent left pinned are removed (one
    line each). With ``settings.best_effort``, what cannot run is logged one line per
    cgroup and the returned enforcer's ``status()`` lists it.

    :return: the enforcer, or ``None`` when no cgroup was named.
    :raises ActionError: enforcement was asked for and cannot run (one line).
    """
    if not settings.wanted:
        for line in remove_stale_runs(settings.pin_root):
            log(f"in-kernel enforcement: {line}")
            audit.record("enforce-stale-run", line=line)
        return None
    enforcer = Enforcer(
        settings.pin_root, settings.cache_dir, audit_refusal(audit), settings.state_file,
        best_effort=settings.best_effort,
    )  # fmt: skip
    try:
        compiled = enforcer.start(
            policy.table(), settings.lockdown, settings.guard, spec_of=spec_lookup(policy)
        )
    except (ActionError, OSError) as exc:
        problems = (
            list(exc.problems) if isinstance(exc, EnforceUnavailable)
            else [exc.message if isinstance(exc, ActionError) else str(exc)]
        )  # fmt: skip
        audit.record("enforce-unavailable", problems=problems, best_effort=settings.best_effort)
        if not settings.best_effort:
            raise ActionError(
                "in-kernel enforcement was requested and cannot run: " + "; ".join(problems),
                "fix it, or serve with --enforce-best-effort to run without it",
            ) from None
        why = "; ".join(problems)
        enforcer.unguarded = [Unguarded("lockdown", str(c), why) for c in settings.lockdown]
        enforcer.unguarded += [Unguarded("guard", str(c), why) for c in settings.guard]
        for u in enforcer.unguarded:
            log(f"in-kernel enforcement (best effort): {u.line()}")
        return enforcer
    lockdown = [str(p) for p in settings.lockdown]
    guard = [str(p) for p in settings.guard]
    audit.record(
        "enforce-start", lockdown=lockdown, guard=guard, rules=len(compiled.rules),
        globs=len(compiled.globs), generation=enforcer.generation,
        pin=str(enforcer.status().get("pin")), agent=enforcer.agent,
        notices=enforcer.notices, unguarded=[u.line() for u in enforcer.unguarded],
        unfit=[list(u) for u in compiled.unfit],
    )  # fmt: skip
    for notice in enforcer.notices:
        log(f"in-kernel enforcement: {notice}")
    for u in enforcer.unguarded:
        log(f"in-kernel enforcement (best effort): {u.line()}")
    for pattern, why in compiled.unfit:
        log(f"in-kernel enforcement (best effort): policy rule {pattern} is NOT enforced: {why}")
    log(
        f"enforcing in the kernel: lockdown {', '.join(lockdown) or '-'}; "
        f"guard {', '.join(guard) or '-'} ({len(compiled.rules)} rules, "
        f"{len(compiled.globs)} globs)"
    )
    return enforcer


def stop_for_agent(audit: Audit, enforcer: Enforcer | None) -> None:
    """Detach and unpin everything, and audit it (no-op without enforcement)."""
    if enforcer is None or not enforcer.running:
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
    if enforcer is not None and enforcer.running:
        enforcer.reload(new.table(), spec_lookup(new))
        generation = enforcer.generation
    audit.record("policy-reload", policy=new.source, generation=generation)
    return new
