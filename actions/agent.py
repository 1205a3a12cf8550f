"""The agent's core: validate, apply, verify, journal, roll back, yield to the admin.

:class:`Agent` is what the daemon calls for each submission; it is also usable
in-process. Every operation returns a typed *result*, a
:class:`~actions.model.Completion` (``ok, verdict, errors, changeset, notices``, less
``user_data``). Mutating operations hold one
lock: changesets apply one at a time.

Test-only fault injection: ``KASSIST_AGENT_FAULT=<step>`` makes the agent SIGKILL
itself when it reaches ``step`` (``validated``, ``applying``, ``write:<i>``,
``applied``, ``verified``, ``rolling_back``, ``undo:<i>``, ``rolled_back``), so tests
can check that a restarted agent leaves every key consistent; ``pause:<step>`` sleeps
there instead (``KASSIST_AGENT_PAUSE`` seconds, default 1).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from actions.audit import Audit
from actions.errors import Rejected
from actions.journal import UNFINISHED, Journal
from actions.knobs import KINDS, Knob, Roots, resolve
from actions.model import (
    RISKS,
    AgentStatus,
    Change,
    Changeset,
    Completion,
    ErrorEntry,
    ManagedKey,
    OverriddenKey,
    Recommendation,
    parse_recommendations,
)
from actions.persist import persisted_keys, write_sysctl_conf
from actions.policy import Policy
from actions.validate import (
    Planned,
    invariant_errors,
    order_writes,
    parse_ints,
    validate,
    values_equal,
)

FAULT_ENV = "KASSIST_AGENT_FAULT"
#: The window of the rate rule (``max_changes_per_hour``), in seconds.
RATE_WINDOW = 3600.0
#: An operation's result: the completion, less its ``user_data``.
Result = Completion


def result(
    ok: bool,
    verdict: str,
    errors: Sequence[Rejected] = (),
    changeset: Changeset | None = None,
    **extra: Any,
) -> Result:
    """Build an operation's result (a completion without its ``user_data``)."""
    return Completion(
        ok=ok,
        verdict=verdict,
        errors=[ErrorEntry(e.rule, e.target, str(e)) for e in errors],
        changeset=changeset,
        **extra,
    )


def _why(exc: Exception) -> str:
    # An OSError's own words (strerror), or a refusal's line.
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


@dataclass(frozen=True)
class Paths:
    """Where the agent keeps its state.

    :param journal: the SQLite journal.
    :param audit: the JSON-lines audit log.
    :param sysctl_conf: the file persisted changes go to.
    """

    journal: Path
    audit: Path
    sysctl_conf: Path


class KernelValidator(Protocol):
    """What the agent asks of the kernel's validator (``actions.enforce.queues.KernelCheck``)."""

    def check(
        self, recs: Sequence[Recommendation], errors: Sequence[Rejected], who: dict[str, Any]
    ) -> list[Rejected]:
        """Return ``errors`` and the kernel's own refusals of ``recs``."""

    def applied(self, who: dict[str, Any], count: int) -> None:
        """Count ``count`` changes of ``who``'s applied and verified."""


class Agent:
    """The kernel agent.

    :param policy: the loaded policy.
    :param paths: journal, audit log and sysctl.d file.
    :param roots: where /proc/sys and /sys are (tests point them at a fake tree).
    """

    def __init__(
        self,
        policy: Policy,
        paths: Paths,
        roots: Roots | None = None,
        journald: str | None = None,
    ) -> None:
        self.policy = policy
        self.paths = paths
        self.roots = roots or Roots()
        self.journal = Journal(paths.journal)
        self.audit = Audit(paths.audit, journald) if journald else Audit(paths.audit)
        self.started = time.time()
        self._lock = threading.RLock()
        self._notices: list[str] = []
        self._fault = os.environ.get(FAULT_ENV, "")
        self._recent_lock = threading.Lock()
        self._recent: dict[tuple[str, str], deque[float]] = {}
        self._unreadable_keys: set[str] = set()
        #: The validator of record in the kernel (actions/enforce/queues.py), when it runs.
        self.kernel: KernelValidator | None = None
        for kind, key, when in self.journal.recent_times(RATE_WINDOW):
            self._recent.setdefault((kind, key), deque()).append(when)

    def close(self) -> None:
        """Close the journal and the audit log."""
        self.journal.close()
        self.audit.close()

    # --- helpers ----------------------------------------------------------------------

    def _step(self, step: str, cs_id: int) -> None:
        if not self._fault:
            return
        if step == self._fault:
            self.audit.record("fault-injection", changeset=cs_id, step=step)
            os.kill(os.getpid(), signal.SIGKILL)
        elif self._fault == f"pause:{step}":
            time.sleep(float(os.environ.get("KASSIST_AGENT_PAUSE", "1")))

    def _knob(self, change: Change) -> Knob:
        return resolve(change.kind, change.target, self.roots)

    def _parse(self, doc: object, who: dict[str, Any]) -> tuple[list[Planned], list[Rejected]]:
        recs, errors = parse_recommendations(
            doc, limit=max(64, self.policy.max_changes_per_changeset)
        )
        if errors:
            return [], errors
        planned, errors = validate(recs, self.policy, self.roots, self._recent_count)
        if self.kernel is not None:  # the validator of record in the kernel has its say too
            errors = self.kernel.check(recs, errors, who)
        return planned, errors

    def _recent_count(self, kind: str, key: str) -> int:
        # The rate rule's counter, kept in memory (the agent is the journal's only writer).
        cutoff = time.time() - RATE_WINDOW
        with self._recent_lock:
            times = self._recent.get((kind, key))
            while times and times[0] < cutoff:
                times.popleft()
            return len(times) if times else 0

    def _count_change(self, kind: str, key: str) -> None:
        with self._recent_lock:
            self._recent.setdefault((kind, key), deque()).append(time.time())

    def _auto_approvable(self, planned: Sequence[Planned]) -> bool:
        if self.policy.auto_approve == "none":
            return False
        limit = RISKS.index(self.policy.auto_approve)
        return all(RISKS.index(p.risk) <= limit for p in planned)

    def _take_notices(self) -> list[str]:
        out, self._notices = self._notices, []
        return out

    # --- validate ---------------------------------------------------------------------

    def validate(self, doc: object, who: dict[str, Any]) -> Result:
        """Validate a recommendation (or a list) and return the dry-run diff; write nothing."""
        # One line records both the submission and its verdict (nothing is written).
        planned, errors = self._parse(doc, who)
        verdict = "rejected" if errors else "valid"
        self.audit.record(
            "verdict",
            op="validate",
            who=who,
            verdict=verdict,
            errors=[str(e) for e in errors],
            targets=[p.knob.key for p in planned],
        )
        diff = Changeset(0, "validated", time.time(), [p.diff() for p in planned])
        return result(
            not errors,
            verdict,
            errors,
            diff if not errors else None,
            auto_approve=not errors and self._auto_approvable(planned),
        )

    # --- apply ------------------------------------------------------------------------

    def apply(self, doc: object, who: dict[str, Any], persist: bool = False) -> Result:
        """Validate, then apply all-or-nothing: snapshot, write, read back, commit or undo."""
        with self._lock:
            self.audit.record("submission", op="apply", who=who, persist=persist)
            self.check_overrides()
            planned, errors = self._parse(doc, who)
            if errors:
                self.audit.record(
                    "verdict",
                    op="apply",
                    who=who,
                    verdict="rejected",
                    errors=[str(e) for e in errors],
                )
                return result(False, "rejected", errors, notices=self._take_notices())
            return self._apply(planned, who, persist)

    def _apply(self, planned: Sequence[Planned], who: dict[str, Any], persist: bool) -> Result:
        changes = [
            Change(
                kind=p.knob.kind,
                target=p.knob.key,
                old=p.old,
                new=p.new,
                risk=p.risk,
                rec_id=p.rec.id,
                rationale=p.rec.rationale,
                evidence=list(p.rec.evidence),
                expected_effect=p.rec.expected_effect,
                source=p.rec.source,
            )
            for p in planned
        ]
        created = time.time()
        cs_id = self.journal.create(changes, who, persist, created)
        for c in changes:
            self._count_change(c.kind, c.target)
        self.audit.record("verdict", op="apply", who=who, verdict="valid", changeset=cs_id)
        self._audit_baseline_overrides(cs_id, planned)
        self._step("validated", cs_id)
        self.journal.set_state(cs_id, "applying")
        self._step("applying", cs_id)
        failure: Rejected | None = None
        order = order_writes(
            {p.knob.key: p.old for p in planned}, [(p.knob.key, p.new) for p in planned], self.roots
        )
        for i, p in enumerate(planned[j] for j in order):
            try:
                p.knob.write(p.new)
            except OSError as exc:
                failure = Rejected(
                    "write",
                    p.knob.key,
                    f"the kernel refused {p.new!r} "
                    f"({exc.strerror or exc}); the changeset was rolled back",
                )
                self.audit.record(
                    "write",
                    changeset=cs_id,
                    target=p.knob.key,
                    value=p.new,
                    ok=False,
                    error=str(exc),
                )
                break
            self.audit.record(
                "write", changeset=cs_id, target=p.knob.key, old=p.old, new=p.new, ok=True
            )
            self._step(f"write:{i}", cs_id)
        if failure is None:
            self.journal.set_state(cs_id, "applied", change_state="written")
            self._step("applied", cs_id)
            failure = self._verify(cs_id, planned)
        if failure is not None:
            self.journal.set_state(cs_id, "failed", error=str(failure))
            undo_errors = self._undo(cs_id, changes)
            if not undo_errors:
                self.journal.set_state(cs_id, "rolled_back", change_state="rolled_back")
            self.audit.record(
                "verdict",
                op="apply",
                changeset=cs_id,
                verdict="failed",
                errors=[str(failure), *undo_errors],
            )
            return result(
                False,
                "failed",
                [failure],
                self._cs(cs_id),
                notices=self._take_notices() + undo_errors,
            )
        self.journal.verified(cs_id)
        self._step("verified", cs_id)
        if self.kernel is not None:
            self.kernel.applied(who, len(changes))
        notices = self._take_notices()
        if persist:
            notices += self._persist(cs_id)
            notices += [
                f"{c.target}: sysfs changes are not persisted (no standard boot-time "
                "file); this one lasts until reboot"
                for c in changes
                if c.kind == "sysfs"
            ]
        self.audit.record("verdict", op="apply", changeset=cs_id, verdict="verified")
        # Built from what is known rather than read back: `history ID` shows the events.
        for c in changes:
            c.state = "verified"
        now = time.time()
        done = Changeset(cs_id, "verified", created, changes, who, persist, now)
        return result(True, "verified", (), done, notices=notices)

    def _verify(self, cs_id: int, planned: Sequence[Planned]) -> Rejected | None:
        for p in planned:
            try:
                got = p.knob.read()
            except OSError as exc:
                got = f"<unreadable: {exc.strerror}>"
            same = values_equal(got, p.new)
            self.audit.record(
                "readback", changeset=cs_id, target=p.knob.key, expected=p.new, got=got, ok=same
            )
            if not same:
                return Rejected(
                    "verify",
                    p.knob.key,
                    f"wrote {p.new} but the kernel reads back "
                    f"{got} (clamped or refused); the changeset was rolled back",
                )
        return None

    def _undo(self, cs_id: int, changes: Sequence[Change]) -> list[str]:
        # Restore every key of a failed or interrupted changeset to its snapshot, in an
        # order whose every intermediate state keeps the invariants.
        errors: list[str] = []
        current: dict[str, str] = {}
        for c in changes:
            try:
                current[c.target] = self._knob(c).read()
            except (OSError, Rejected) as exc:
                current[c.target] = ""
                errors.append(f"{c.target}: could not read it ({_why(exc)})")
        for c in self._restore_order(current, changes):
            if not current[c.target]:
                continue
            try:
                knob = self._knob(c)
                if not values_equal(current[c.target], c.old):
                    knob.write(c.old)
                error = self._read_back_old(cs_id, c, knob)
            except (OSError, Rejected) as exc:
                error = f"{c.target}: could not restore {c.old} ({_why(exc)})"
            if error:
                errors.append(error)
        return errors

    def _restore_order(self, current: dict[str, str], changes: Sequence[Change]) -> list[Change]:
        # Last first, unless an invariant wants another order (see order_writes).
        last_first = list(reversed(changes))
        order = order_writes(current, [(c.target, c.old) for c in last_first], self.roots)
        return [last_first[i] for i in order]

    def _read_back_old(self, cs_id: int, c: Change, knob: Knob) -> str | None:
        # Read a restored key back and audit it; return the error, if it is not the old value.
        got = knob.read()
        ok = values_equal(got, c.old)
        self.audit.record("restore", changeset=cs_id, target=c.target, value=c.old, got=got, ok=ok)
        return None if ok else f"{c.target}: restored {c.old} but the kernel reads back {got}"

    def _persist(self, cs_id: int) -> list[str]:
        msg = self._write_persisted(cs_id)
        if msg:
            return [msg]
        self.journal.event(cs_id, "persisted", {"file": str(self.paths.sysctl_conf)})
        return []

    def _write_persisted(self, cs_id: int | None) -> str:
        # Rewrite the sysctl.d file from the journal; return the error, if any.
        try:
            exists = write_sysctl_conf(self.paths.sysctl_conf, self.journal.persisted())
        except OSError as exc:
            msg = f"could not write {self.paths.sysctl_conf}: {exc.strerror}"
            self.audit.record(
                "persist", changeset=cs_id, file=str(self.paths.sysctl_conf), ok=False, error=msg
            )
            if cs_id is not None:
                self.journal.event(cs_id, "persist-failed", {"error": msg})
            else:
                self._notices.append(msg)
            return msg
        self.audit.record(
            "persist", changeset=cs_id, file=str(self.paths.sysctl_conf), exists=exists, ok=True
        )
        return ""

    def _audit_baseline_overrides(self, cs_id: int, planned: Sequence[Planned]) -> None:
        # A baseline key lowered under an explicit [baseline] override is audited as such.
        for p in planned:
            sep = KINDS[p.knob.kind].sep
            before, after = parse_ints(p.old), parse_ints(p.new)
            if (
                before
                and after
                and after[0] < before[0]
                and self.policy.in_baseline(p.knob.key, sep)
                and self.policy.may_lower_baseline(p.knob.key, sep)
            ):
                self.audit.record(
                    "baseline-override",
                    changeset=cs_id,
                    target=p.knob.key,
                    old=p.old,
                    new=p.new,
                    policy=self.policy.source,
                )

    def _cs(self, cs_id: int) -> Changeset | None:
        return self.journal.get(cs_id)

    # --- rollback ---------------------------------------------------------------------

    def rollback(
        self, who: dict[str, Any], cs_id: int | None = None, since: float | None = None
    ) -> Result:
        """Roll back one changeset by id, or every changeset since a time (newest first).

        Verdicts: ``rolled_back`` (every key restored), ``partly_rolled_back`` or
        ``not_restored`` (someone else had changed some or all of the keys: they are left
        alone and named), ``refused`` (nothing written: an unknown id, a later changeset
        manages a key, or the result would break an invariant) and ``failed`` (a write
        failed; what was written is undone and the changeset stays ``verified``).
        """
        with self._lock:
            self.audit.record("submission", op="rollback", who=who, changeset=cs_id, since=since)
            self.check_overrides()
            if cs_id is None and since is None:
                return self._refused(
                    who, [Rejected("rollback", "", "name a changeset id or a time (since)")]
                )
            if cs_id is not None:
                return self._rollback_one(cs_id, who)
            assert since is not None
            done: list[Changeset] = []
            errors: list[Rejected] = []
            for one in self.journal.ids_since(since):
                cs = self.journal.get(one, with_events=False)
                if cs is None or cs.state != "verified":
                    continue
                res = self._rollback_one(one, who)
                if res.verdict in ("refused", "failed"):
                    res.changesets = done
                    return res
                if res.changeset is not None:
                    done.append(res.changeset)
                errors += [Rejected(e.rule, e.target, e.message) for e in res.errors]
            verdict = "rolled_back" if not errors else "partly_rolled_back"
            return result(
                not errors, verdict, errors, None, changesets=done, notices=self._take_notices()
            )

    def _refused(
        self, who: dict[str, Any], errors: Sequence[Rejected], cs: Changeset | None = None
    ) -> Result:
        self.audit.record(
            "verdict",
            op="rollback",
            who=who,
            verdict="refused",
            errors=[str(e) for e in errors],
            changeset=cs.id if cs else None,
        )
        return result(False, "refused", errors, cs, notices=self._take_notices())

    def _rollback_one(self, cs_id: int, who: dict[str, Any]) -> Result:
        cs = self.journal.get(cs_id, with_events=False)
        if cs is None:
            return self._refused(who, [Rejected("rollback", "", f"no changeset {cs_id}")])
        if cs.state != "verified":
            why = {
                "rolled_back": "it is already rolled back",
                "failed": "it failed and was undone",
            }.get(cs.state, f"it is {cs.state}")
            return self._refused(who, [Rejected("rollback", "", f"changeset {cs_id}: {why}")], cs)
        for c in cs.changes:
            later = self.journal.later_change(c.kind, c.target, cs_id)
            if c.state in ("verified", "superseded") and later is not None:
                return self._refused(
                    who,
                    [
                        Rejected(
                            "rollback",
                            c.target,
                            f"changeset {later} changed it later; roll "
                            f"back {later} first, or everything since a time",
                        )
                    ],
                    cs,
                )
        plan = self._rollback_plan(cs)
        if isinstance(plan, list):
            return self._refused(who, plan, cs)
        self.journal.set_state(cs_id, "rolling_back")
        self.journal.event(cs_id, "rollback-requested", {"who": who})
        self._step("rolling_back", cs_id)
        return self._finish_rollback(cs, plan, who)

    def _rollback_plan(
        self, cs: Changeset, invariants: bool = True
    ) -> dict[int, str] | list[Rejected]:
        # Read every key the rollback would restore: seq -> its current value, or the
        # refusals (a key that cannot be read, a state that would break an invariant;
        # recovery finishes a rollback whose state was checked before the crash).
        current: dict[int, str] = {}
        errors: list[Rejected] = []
        for seq, c in enumerate(cs.changes):
            if c.state != "verified":
                continue
            try:
                current[seq] = self._knob(c).read()
            except (OSError, Rejected) as exc:
                errors.append(
                    Rejected(
                        "rollback",
                        c.target,
                        f"cannot be read ({_why(exc)}); nothing was rolled back",
                    )
                )
        if errors or not invariants:
            return errors or current
        proposed = {
            c.target: parse_ints(c.old)
            for seq, c in enumerate(cs.changes)
            if seq in current and c.kind == "sysctl" and values_equal(current[seq], c.new)
        }
        broken = invariant_errors(proposed, self.roots, f"after rolling back changeset {cs.id}")
        if broken:
            return [
                Rejected(
                    "invariant",
                    e.target,
                    f"{e.why}; roll back the changesets that "
                    "depend on it first, or everything since a time",
                )
                for e in broken
            ]
        return current

    def _finish_rollback(
        self, cs: Changeset, current: dict[int, str], who: dict[str, Any]
    ) -> Result:
        # Restore the keys still at the changeset's value; name those someone else changed.
        not_restored: list[Rejected] = []
        skipped: set[int] = set()
        todo: list[int] = []
        for c in cs.changes:
            if c.state == "overridden":
                not_restored.append(
                    Rejected(
                        "rollback",
                        c.target,
                        f"not restored: someone else changed it after changeset {cs.id} set "
                        f"{c.new}; kassist left it alone",
                    )
                )
        for seq, value in current.items():
            c = cs.changes[seq]
            if values_equal(value, c.old):
                continue  # already restored (a rollback interrupted after this key)
            if not values_equal(value, c.new):
                self._overridden(cs.id, seq, c, value)
                skipped.add(seq)
                not_restored.append(
                    Rejected(
                        "rollback",
                        c.target,
                        f"not restored: someone else "
                        f"set it to {value} after changeset {cs.id} set "
                        f"{c.new}; kassist left it alone",
                    )
                )
                continue
            todo.append(seq)
        last_first = sorted(todo, reverse=True)
        order = order_writes(
            {cs.changes[q].target: current[q] for q in todo},
            [(cs.changes[q].target, cs.changes[q].old) for q in last_first],
            self.roots,
        )
        written: list[int] = []
        for step, i in enumerate(order):
            seq = last_first[i]
            c = cs.changes[seq]
            try:
                knob = self._knob(c)
                knob.write(c.old)
                written.append(seq)
                self._step(f"undo:{step}", cs.id)
                error = self._read_back_old(cs.id, c, knob)
            except (OSError, Rejected) as exc:
                error = f"{c.target}: could not restore {c.old} ({_why(exc)})"
            if error:
                return self._rollback_failed(cs, written, error, who)
        restored = [seq for seq in current if seq not in skipped]
        for seq in restored:
            c = cs.changes[seq]
            self.journal.set_change_state(cs.id, seq, "rolled_back")
            self.journal.unsupersede(c.kind, c.target, cs.id)
        self.journal.set_state(cs.id, "rolled_back")
        self._step("rolled_back", cs.id)
        if cs.persist:
            self._persist(cs.id)
        verdict = "rolled_back"
        if not_restored:
            verdict = "partly_rolled_back" if restored else "not_restored"
        self.audit.record(
            "rollback",
            changeset=cs.id,
            who=who,
            ok=not not_restored,
            verdict=verdict,
            not_restored=[e.target for e in not_restored],
        )
        return result(
            not not_restored, verdict, not_restored, self._cs(cs.id), notices=self._take_notices()
        )

    def _rollback_failed(
        self, cs: Changeset, written: list[int], error: str, who: dict[str, Any]
    ) -> Result:
        # Put back what this rollback wrote, so the changeset is whole again (verified);
        # a key that cannot be put back is named, and its change marked for what it holds.
        errors = [Rejected("rollback", "", f"{error}; the rollback was undone")]
        for seq in reversed(written):
            c = cs.changes[seq]
            try:
                knob = self._knob(c)
                knob.write(c.new)
                if values_equal(knob.read(), c.new):
                    continue
            except (OSError, Rejected):
                pass
            self.journal.set_change_state(cs.id, seq, "rolled_back")
            errors.append(
                Rejected("rollback", c.target, f"stays at {c.old}: could not put {c.new} back")
            )
        self.journal.set_state(cs.id, "verified", error=f"rollback failed: {error}")
        self.journal.event(cs.id, "rollback-failed", {"error": error, "who": who})
        self.audit.record("rollback", changeset=cs.id, who=who, ok=False, error=error)
        return result(False, "failed", errors, self._cs(cs.id), notices=self._take_notices())

    # --- yield to the admin -----------------------------------------------------------

    def _overridden(self, cs_id: int, seq: int, c: Change, current: str) -> None:
        self.journal.set_change_state(cs_id, seq, "overridden")
        self.journal.event(
            cs_id, "overridden", {"target": c.target, "set": c.new, "found": current}
        )
        self.audit.record("override", changeset=cs_id, target=c.target, set=c.new, found=current)
        self._notices.append(
            f"{c.target} was changed to {current} by someone else after changeset {cs_id} set "
            f"{c.new}; kassist no longer manages it"
        )

    def check_overrides(self) -> list[str]:
        """Find managed keys someone else changed; mark them ``overridden`` and stop managing.

        A key whose file is gone (``ENOENT``) is overridden; any other error reading it
        (``EMFILE``, ``EIO``...) is an error, reported once, and the key stays managed.

        :return: the notices raised by this check (also delivered with the next result).
        """
        with self._lock:
            before = len(self._notices)
            persisted_changed = False
            for cs_id, seq, c in self.journal.managed():
                try:
                    current = self._knob(c).read()
                except FileNotFoundError:
                    current = "<gone>"
                except Rejected as exc:
                    if exc.rule != "exists":
                        self._unreadable(c, exc)
                        continue
                    current = "<gone>"
                except OSError as exc:
                    self._unreadable(c, exc)
                    continue
                self._unreadable_keys.discard(c.target)
                if not values_equal(current, c.new):
                    self._overridden(cs_id, seq, c, current)
                    persisted_changed = persisted_changed or c.kind == "sysctl"
            if persisted_changed and self.paths.sysctl_conf.exists():
                self._write_persisted(None)
            return self._notices[before:]

    def _unreadable(self, c: Change, exc: Exception) -> None:
        if c.target in self._unreadable_keys:
            return
        self._unreadable_keys.add(c.target)
        self.audit.record("read-error", target=c.target, error=_why(exc))
        self._notices.append(
            f"{c.target}: cannot be read ({_why(exc)}); still managed, checked again later"
        )

    # --- recovery ---------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Finish or undo every changeset a crash left in flight; return what was done.

        ``validated``/``applying``/``failed``: every key back to its snapshot, then
        ``rolled_back``. ``applied``: read back; all new values -> ``verified``, else undo.
        ``rolling_back``: finish the rollback. Then persistence is finished: the sysctl.d
        file is rewritten from the journal when a crash left it behind.
        """
        done: list[str] = []
        with self._lock:
            for cs in self.journal.in_states((*UNFINISHED, "failed")):
                who = {"agent": "recovery"}
                errors: list[str] = []
                if cs.state == "rolling_back":
                    plan = self._rollback_plan(cs, invariants=False)
                    if isinstance(plan, list):
                        errors = [str(e) for e in plan]
                        self.journal.set_state(cs.id, "verified", error="; ".join(errors))
                        state = "verified"
                    else:
                        res = self._finish_rollback(cs, plan, who)
                        state = "rolled_back" if res.verdict != "failed" else "verified"
                        errors = [e.message for e in res.errors]
                elif cs.state == "applied" and all(self._reads(c, c.new) for c in cs.changes):
                    self.journal.verified(cs.id)
                    state = "verified"
                else:
                    if cs.state != "failed":
                        self.journal.set_state(cs.id, "failed", error="interrupted: agent stopped")
                    errors = self._undo(cs.id, cs.changes)
                    state = "failed" if errors else "rolled_back"
                    if not errors:
                        self.journal.set_state(cs.id, "rolled_back", change_state="rolled_back")
                self.journal.event(
                    cs.id, "recovered", {"from": cs.state, "to": state, "errors": errors}
                )
                self.audit.record(
                    "recovery", changeset=cs.id, who=who, was=cs.state, now=state, errors=errors
                )
                done.append(f"changeset {cs.id}: {cs.state} -> {state}")
            done += self._finish_persist()
        return done

    def _finish_persist(self) -> list[str]:
        # Idempotent: every verified changeset that asked to persist and has no
        # "persisted" event is persisted now (a crash between verified and the file),
        # and a file that no longer says what the journal does (a crash between a
        # rollback and the file) is rewritten.
        pending = self.journal.unpersisted()
        for cs_id in pending:
            self._persist(cs_id)
        done = [f"changeset {cs_id}: persisted" for cs_id in pending]
        wanted = {c.target: c.new for _, c in self.journal.persisted()}
        stale = not pending and persisted_keys(self.paths.sysctl_conf) != wanted
        if stale and not self._write_persisted(None):
            done.append(f"{self.paths.sysctl_conf}: rewritten from the journal")
        return done

    def _reads(self, c: Change, value: str) -> bool:
        try:
            return values_equal(self._knob(c).read(), value)
        except (OSError, Rejected):
            return False

    # --- status and history -----------------------------------------------------------

    def status(self) -> Result:
        """Return what the agent manages, what was overridden, and its journal's counts."""
        self.check_overrides()
        managed = [
            ManagedKey(cs_id, c.kind, c.target, c.new) for cs_id, _, c in self.journal.managed()
        ]
        overridden = [
            OverriddenKey(cs_id, c.kind, c.target, c.new) for cs_id, c in self.journal.overridden()
        ]
        status = AgentStatus(
            pid=os.getpid(),
            uptime=round(time.time() - self.started, 3),
            policy=self.policy.source,
            journal=str(self.paths.journal),
            audit=str(self.paths.audit),
            changesets=self.journal.counts(),
            managed=managed,
            overridden=overridden,
        )
        return result(True, "ok", (), None, status=status, notices=self._take_notices())

    def history(self, cs_id: int | None = None, limit: int = 50, since: float = 0.0) -> Result:
        """Return one changeset with its events, or the latest ones (newest first)."""
        if cs_id is not None:
            cs = self.journal.get(cs_id)
            if cs is None:
                return result(
                    False, "not_found", [Rejected("history", "", f"no changeset {cs_id}")]
                )
            return result(True, "ok", (), cs)
        return result(True, "ok", (), None, changesets=self.journal.history(limit, since))
