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

from actions.agent import Agent
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
from actions.enforce.maps import Compiled, SpecOf, compile_rules
from actions.enforce.queues import KernelCheck, Queues, Verdict
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
    :param queues: validate in the kernel, through the BPF queues (``--bpf-queues``); where
        they cannot run, one line says so and user space validates as before.
    :param queue_rate: entries one extension may submit per second (0: unlimited).
    :param queue_burst: ...and at once.
    """

    lockdown: tuple[Path, ...] = ()
    guard: tuple[Path, ...] = ()
    pin_root: Path = DEFAULT_PIN_ROOT
    state_file: Path = DEFAULT_STATE
    cache_dir: Path = DEFAULT_CACHE
    best_effort: bool = False
    queues: bool = False
    queue_rate: int = 100
    queue_burst: int = 200

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
    line with their count (the kernel refuses them all the same). Any user may cause them
    (an unprivileged one writes its own ``net.*`` keys in a user namespace), so they are
    bounded records (:meth:`Audit.bounded`): within the audit log's rate and size caps,
    the rest counted, never an unbounded stream of kept lines.
    """
    window = {"start": 0.0, "count": 0, "suppressed": 0}

    def record(refusal: Refusal) -> None:
        now = time.monotonic()
        if now - window["start"] >= 1.0:
            if window["suppressed"]:
                audit.bounded("enforce-refusals-suppressed", "enforce-refusals-suppressed",
                              count=window["suppressed"])  # fmt: skip
            window.update(start=now, count=0, suppressed=0)
        window["count"] += 1
        if window["count"] > per_second:
            window["suppressed"] += 1
            return
        audit.bounded("enforce-refusal", f"enforce-refusal {refusal.reason}",
                      who={"uid": refusal.uid}, **refusal.to_dict())  # fmt: skip

    return record


def spec_lookup(policy: Policy) -> SpecOf:
    """Return the validator's spec of a dotted key as plain data (for :func:`compile_rules`)."""

    def spec_of(key: str) -> Mapping[str, Any] | None:
        spec = policy.spec(key, ".")
        return spec.to_dict() if spec is not None else None

    return spec_of


class KernelSide:
    """What the agent runs in the kernel: the guard and the BPF queues (either may be off).

    :param enforcer: the guard (``None``: not asked for).
    :param queues: the BPF queues and their validator (``None``: not asked for, or off).
    """

    def __init__(self, enforcer: Enforcer | None, queues: Queues | None) -> None:
        self.enforcer = enforcer
        self.queues = queues

    def status(self) -> dict[str, Any]:
        """Return the guard's status, with the queues' under ``queues``."""
        out: dict[str, Any] = {"enabled": False}
        if self.enforcer is not None:
            out = self.enforcer.status()
        if self.queues is not None:
            out["queues"] = self.queues.status()
        return out


def start_for_agent(
    agent: Agent, settings: EnforceSettings, log: Callable[[str], None]
) -> KernelSide | None:
    """Start what the agent runs in the kernel: the guard (fail closed), the BPF queues.

    :return: ``None`` when neither was asked for.
    :raises ActionError: the guard was asked for and cannot run (one line).
    """
    enforcer = start_guard(agent.policy, agent.audit, settings, log)
    if settings.queues:
        queues = start_queues(agent, settings, enforcer, log)
    else:
        queues = None
        _answer_leftovers(agent, settings, log)
    if enforcer is None and queues is None:
        return None
    return KernelSide(enforcer, queues)


def start_queues(
    agent: Agent, settings: EnforceSettings, enforcer: Enforcer | None, log: Callable[[str], None]
) -> Queues | None:
    """Start the BPF queues and make them the agent's validator of record; or say in one
    line why not (user space then validates as before) and return ``None``."""
    audit = agent.audit
    rules_fd = enforcer.rules_fd if enforcer is not None and enforcer.running else None
    queues = Queues(
        settings.pin_root, settings.cache_dir, rules_fd, settings.queue_rate, settings.queue_burst,
        on_answer=_audit_answer(audit),
    )  # fmt: skip
    queues.on_step = _agent_step(agent)
    try:
        # without the guard, the queues hold the policy themselves
        queues.start(None if rules_fd is not None else compile_policy(agent.policy))
    except (ActionError, OSError) as exc:
        queues.stop()
        why = exc.message if isinstance(exc, ActionError) else str(exc.strerror or exc)
        log(f"BPF queues off: {why}; validating in user space as before")
        audit.record("queues-unavailable", problem=why)
        return None
    for line in queues.notices:
        log(f"BPF queues: {line}")
    for orphan in queues.orphans:
        audit.record("queue-orphan", **orphan.to_dict())
    agent.kernel = KernelCheck(queues, agent.roots, _audit_verdicts(audit))
    audit.record("queues-start", pin=str(queues.status().get("pin")), orphans=len(queues.orphans))
    log(
        f"validating in the kernel through BPF queues ({'the guard' if rules_fd else 'its own'}"
        f" policy map; {settings.queue_rate or 'no'} entries/s per extension)"
    )
    return queues


def _audit_answer(audit: Audit) -> Callable[[Verdict], None]:
    # one line per verdict, within the audit log's caps for what a peer can cause at will
    def record(verdict: Verdict) -> None:
        audit.bounded("kernel-verdict", f"kernel-verdict uid {verdict.uid}", **verdict.to_dict())

    return record


def _agent_step(agent: Agent) -> Callable[[str], None]:
    # the queues' steps go to the agent's step hook (fault-injection tests; none in production)
    def step(at: str) -> None:
        if agent.on_step is not None:
            agent.on_step(at, 0)

    return step


def _audit_verdicts(audit: Audit) -> Callable[[list[Verdict], list[str]], None]:
    # each verdict is audited as it is read (on_answer); here, what the two sides split on
    def record(verdicts: list[Verdict], disagree: list[str]) -> None:
        if disagree:
            audit.record("kernel-disagreement", targets=disagree,
                         seqs=[v.seq for v in verdicts if not v.accepted])  # fmt: skip

    return record


def compile_policy(policy: Policy) -> Compiled:
    """Compile a policy for the kernel map, with the validator's specs; every row must fit.

    :raises ActionError: a row the map cannot hold (one line).
    """
    return compile_rules(policy.table(), spec_of=spec_lookup(policy)).require_fit()


def _answer_leftovers(agent: Agent, settings: EnforceSettings, log: Callable[[str], None]) -> None:
    # Queues an earlier agent left pinned while this one runs without them: every entry
    # still there is answered (audited, never applied), then everything is unpinned.
    if not (settings.pin_root / "queues").is_dir():
        return
    audit = agent.audit
    queues = Queues(settings.pin_root, settings.cache_dir, on_answer=_audit_answer(audit))
    try:
        queues.start(compile_policy(agent.policy))
    except (ActionError, OSError) as exc:
        why = exc.message if isinstance(exc, ActionError) else str(exc)
        log(f"BPF queues: an earlier agent's are pinned and cannot be read: {why}")
        return
    orphans = [*queues.orphans, *queues.stop()]
    for orphan in orphans:
        audit.record("queue-orphan", **orphan.to_dict())
    log(
        f"BPF queues: removed the queues an earlier agent left pinned ({len(orphans)} entries "
        "answered, none applied): the queues were not requested"
    )


def start_guard(
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


def stop_for_agent(audit: Audit, kernel: KernelSide | None) -> None:
    """Detach and unpin everything, answer what the queues hold, and audit it."""
    if kernel is None:
        return
    if kernel.queues is not None:
        for orphan in kernel.queues.stop():
            audit.record("queue-orphan", **orphan.to_dict())
    enforcer = kernel.enforcer
    if enforcer is None or not enforcer.running:
        return
    enforcer.stop()
    audit.record("enforce-stop", refusals=len(enforcer.recent), dropped=enforcer.dropped)


def reload_policy(old: Policy, audit: Audit, kernel: KernelSide | None) -> Policy:
    """Read the agent's policy file again and swap the kernel's rules to it, whole.

    The kernel's map is swapped first: when the new policy cannot be compiled, neither
    the agent nor the kernel changes (the old policy stays everywhere).

    :raises ActionError: the file no longer reads or no longer compiles, in one line.
    """
    new = load_policy(None if old.source == Policy.source else old.source)
    generation = None
    enforcer = kernel.enforcer if kernel is not None else None
    queues = kernel.queues if kernel is not None else None
    if enforcer is not None and enforcer.running:
        enforcer.reload(new.table(), spec_lookup(new))  # the queues read the same map
        generation = enforcer.generation
    elif queues is not None and queues.running:
        queues.publish(compile_policy(new))
        generation = queues.generation
    audit.record("policy-reload", policy=new.source, generation=generation)
    return new
