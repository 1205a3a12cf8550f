"""Rollback, yielding to the admin, and recovery: everything that puts a value back.

The one rule all three keep: **the agent writes a snapshot back only over the value
it left there itself.** An explicit rollback restores a key only while it still holds
the changeset's value; a key someone else changed is marked ``overridden`` and left
alone (:meth:`Rollbacks.check_overrides` finds those between operations). Recovery
(on start, and after a storage failure: :meth:`Rollbacks.settle`) finishes or undoes
what an interruption left in flight, newest first:

=============  ===================================================================
journal says   recovery does
=============  ===================================================================
validated      nothing had been written (writes start after ``applying``):
               closed ``failed``, the kernel untouched
applying,      each key that holds the changeset's ``new`` and that no later
failed         changeset manages goes back to its snapshot; one holding another
               value is ``overridden`` (someone else's) or ``superseded`` (a later
               changeset's) and left alone; then ``rolled_back``, or ``failed``
               when nothing had been written
applied        every key reads its ``new``: ``verified``; else as ``applying``
rolling_back   the rollback is finished (keys someone else changed left alone)
=============  ===================================================================
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from actions.core import AgentCore, Result, result, why
from actions.errors import Rejected, StorageError, StorageFull
from actions.journal import UNFINISHED
from actions.knobs import parse_ints
from actions.model import Change, Changeset
from actions.persist import persisted_keys
from actions.validate import invariant_errors, order_writes, values_equal

#: Who recovery acts as, in the journal and the audit log.
RECOVERY = {"agent": "recovery"}
#: The states of a change that may still hold its value in the kernel.
_LIVE = ("pending", "written", "verified")


class Rollbacks(AgentCore):
    """Rollback, overrides and recovery (see the module's docstring)."""

    # --- rollback ---------------------------------------------------------------------

    def rollback(
        self, who: dict[str, Any], cs_id: int | None = None, since: float | None = None
    ) -> Result:
        """Roll back one changeset by id, or every changeset since a time (newest first).

        Verdicts: ``rolled_back`` (every key restored), ``partly_rolled_back`` or
        ``not_restored`` (someone else had changed some or all of the keys: they are left
        alone and named), ``nothing_to_roll_back`` (no verified changeset since that
        time), ``refused`` (nothing written: an unknown id, a time in the future, a later
        changeset manages a key, the result would break an invariant, or the journal or
        the audit log cannot record) and ``failed`` (a write failed; what was written is
        undone and the changeset stays ``verified``).
        """
        with self._lock:
            self.settle()
            self.check_overrides()
            if cs_id is None and since is None:
                return self._refused(
                    who, [Rejected("rollback", "", "name a changeset id or a time (since)")]
                )
            if since is not None and since > time.time():
                return self._refused(
                    who,
                    [Rejected("rollback", "", "nothing to roll back: since is in the future")],
                )
            problem = self._storage_problem()
            if problem:
                return self._refused(
                    who, [Rejected("storage", "", f"{problem}; nothing was rolled back")]
                )
            with self._unsettled_on_error():
                if cs_id is not None:
                    return self._rollback_one(cs_id, who)
                assert since is not None
                return self._rollback_since(since, who)

    def _rollback_since(self, since: float, who: dict[str, Any]) -> Result:
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
        if not done and not errors:
            return result(True, "nothing_to_roll_back", (), None, changesets=[],
                          notices=self._take_notices())  # fmt: skip
        verdict = "rolled_back" if not errors else "partly_rolled_back"
        return result(
            not errors, verdict, errors, None, changesets=done, notices=self._take_notices()
        )

    def _refused(
        self, who: dict[str, Any], errors: Sequence[Rejected], cs: Changeset | None = None
    ) -> Result:
        self.audit.bounded(
            "verdict",
            "rollback refused",
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
            state = {
                "rolled_back": "it is already rolled back",
                "failed": "it failed and was undone",
            }.get(cs.state, f"it is {cs.state}")
            return self._refused(who, [Rejected("rollback", "", f"changeset {cs_id}: {state}")], cs)
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
        try:
            self.journal.set_state(cs_id, "rolling_back", detail={"who": who})
        except StorageError as exc:
            return self._refused(
                who, [Rejected("storage", "", f"{exc.one_line()}; nothing was rolled back")], cs
            )
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
                        f"cannot be read ({why(exc)}); nothing was rolled back",
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
        not_restored = [
            Rejected(
                "rollback",
                c.target,
                f"not restored: someone else changed it after changeset {cs.id} set "
                f"{c.new}; kassist left it alone",
            )
            for c in cs.changes
            if c.state == "overridden"
        ]
        skipped: set[int] = set()
        todo: list[int] = []
        current = self._read_again(cs, current)
        for seq, value in current.items():
            c = cs.changes[seq]
            if values_equal(value, c.old):
                continue  # already restored (a rollback interrupted after this key)
            if not values_equal(value, c.new):
                try:
                    self._overridden(cs.id, seq, c, value)
                except StorageError:
                    # Left alone all the same; recovery records it once space is back.
                    self.unsettled = True
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
                error = f"{c.target}: could not restore {c.old} ({why(exc)})"
            if error:
                return self._rollback_failed(cs, written, error, who)
        restored = [seq for seq in current if seq not in skipped]
        notices: list[str] = []
        try:
            self.journal.rolled_back(cs, restored)
        except StorageError as exc:
            # The kernel holds the snapshots; the journal still says rolling_back, which
            # recovery finishes (every key already restored) once it can record again.
            self.unsettled = True
            notices.append(f"{exc.message}: it records this rollback once space is back")
        self._step("rolled_back", cs.id)
        if cs.persist and not notices:
            notices += self._persist_done(cs.id)
        if self.audit.behind:
            # Past the point of no return (the journal says rolling_back): finished, and
            # its records kept in memory until the audit log has room.
            notices.append(f"{self.audit.behind_why()}: its records wait in memory until then")
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
        done = self._cs(cs.id)
        return result(
            not not_restored,
            verdict,
            not_restored,
            done,
            notices=self._take_notices() + notices,
        )

    def _read_again(self, cs: Changeset, current: dict[int, str]) -> dict[int, str]:
        # Each key read once more just before the writes (the journal recorded the start
        # meanwhile): a value someone else set since the plan's read is left alone.
        fresh = dict(current)
        for seq in current:
            with contextlib.suppress(OSError, Rejected):  # the write meets it, and says so
                fresh[seq] = self._knob(cs.changes[seq]).read()
        return fresh

    def _rollback_failed(
        self, cs: Changeset, written: list[int], error: str, who: dict[str, Any]
    ) -> Result:
        # Put back what this rollback wrote, so the changeset is whole again (verified);
        # a key that cannot be put back is named, and its change marked for what it holds.
        errors = [Rejected("rollback", "", f"{error}; the rollback was undone")]
        lost: dict[int, str] = {}
        for seq in reversed(written):
            c = cs.changes[seq]
            try:
                knob = self._knob(c)
                knob.write(c.new)
                got = knob.read()
                ok = values_equal(got, c.new)
                self.audit.record("write", changeset=cs.id, target=c.target, old=c.old,
                                  new=c.new, ok=ok, undoing="rollback")  # fmt: skip
                if ok:
                    continue
            except (OSError, Rejected):
                pass
            lost[seq] = "rolled_back"
            errors.append(
                Rejected("rollback", c.target, f"stays at {c.old}: could not put {c.new} back")
            )
        try:
            self._abandon(cs.id, f"rollback failed: {error}", lost, {"who": who})
        except StorageError:
            # Still rolling_back in the journal: settle() makes it verified once it can;
            # a restart before then finishes the rollback, as the journal says.
            self._abandoned[cs.id] = (f"rollback failed: {error}", lost)
            self.unsettled = True
        self.audit.record("rollback", changeset=cs.id, who=who, ok=False, error=error)
        return result(False, "failed", errors, self._cs(cs.id), notices=self._take_notices())

    # --- the undo of a failed apply -----------------------------------------------------

    def _abandon(
        self, cs_id: int, error: str, lost: dict[int, str], detail: dict[str, Any]
    ) -> None:
        # A rollback undone: the changeset is verified again (keys that could not be put
        # back are marked for what they hold).
        self.journal.set_state(
            cs_id,
            "verified",
            error=error,
            changes=lost,
            detail={**detail, "rollback_failed": error},
        )
        self._abandoned.pop(cs_id, None)

    def _undo(self, cs_id: int, changes: Sequence[Change], seqs: Sequence[int]) -> list[str]:
        # Put the keys this apply wrote (seqs) back to their snapshots, right after the
        # failure, in an order whose every intermediate state keeps the invariants.
        errors: list[str] = []
        current: dict[str, str] = {}
        for c in (changes[s] for s in seqs):
            try:
                current[c.target] = self._knob(c).read()
            except (OSError, Rejected) as exc:
                current[c.target] = ""
                errors.append(f"{c.target}: could not read it ({why(exc)})")
        for c in self._restore_order(current, [changes[s] for s in seqs]):
            if not current[c.target]:
                continue
            try:
                knob = self._knob(c)
                if not values_equal(current[c.target], c.old):
                    knob.write(c.old)
                error = self._read_back_old(cs_id, c, knob)
            except (OSError, Rejected) as exc:
                error = f"{c.target}: could not restore {c.old} ({why(exc)})"
            if error:
                errors.append(error)
        return errors

    def _restore_order(self, current: dict[str, str], changes: Sequence[Change]) -> list[Change]:
        # Last first, unless an invariant wants another order (see order_writes).
        last_first = list(reversed(changes))
        order = order_writes(current, [(c.target, c.old) for c in last_first], self.roots)
        return [last_first[i] for i in order]

    # --- yield to the admin -----------------------------------------------------------

    def _overridden(self, cs_id: int, seq: int, c: Change, current: str) -> None:
        self.journal.set_change_state(cs_id, seq, "overridden")
        self.journal.event(
            cs_id, "overridden", {"target": c.target, "set": c.new, "found": current}
        )
        self._said_overridden(cs_id, c, current)

    def _said_overridden(self, cs_id: int, c: Change, current: str) -> None:
        self.audit.record("override", changeset=cs_id, target=c.target, set=c.new, found=current)
        self._notices.append(
            f"{c.target} was changed to {current} by someone else after changeset {cs_id} set "
            f"{c.new}; kassist no longer manages it"
        )

    def check_overrides(self) -> list[str]:
        """Find managed keys someone else changed; mark them ``overridden`` and stop managing.

        Not while a changeset of ours is unsettled (in flight after a kill or a full disk):
        nothing is checked until recovery has finished it.

        A key whose file is gone (``ENOENT``) is overridden; any other error reading it
        (``EMFILE``, ``EIO``...) is an error, reported once, and the key stays managed;
        so is a journal that cannot record (checked again later).

        :return: the notices raised by this check (also delivered with the next result).
        """
        with self._lock:
            if self.unsettled:
                # A changeset of our own may still hold its value in the kernel (a kill or
                # a full disk left it in flight): recovery decides what it becomes first,
                # else its value would read as someone else's change to the key.
                return []
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
                if values_equal(current, c.new):
                    continue
                try:
                    self._overridden(cs_id, seq, c, current)
                except StorageError:
                    self.unsettled = True
                    break  # the journal cannot record: the next check marks it
                persisted_changed = persisted_changed or c.kind == "sysctl"
            if persisted_changed and self.paths.sysctl_conf.exists():
                self._write_persisted(None)
            return self._notices[before:]

    def _unreadable(self, c: Change, exc: Exception) -> None:
        if c.target in self._unreadable_keys:
            return
        self._unreadable_keys.add(c.target)
        self.audit.record("read-error", target=c.target, error=why(exc))
        self._notices.append(
            f"{c.target}: cannot be read ({why(exc)}); still managed, checked again later"
        )

    # --- recovery ---------------------------------------------------------------------

    def recover(self) -> list[str]:
        """Finish or undo every changeset an interruption left in flight; return what was done
        (one line each, and the notices of keys left alone).

        See the module's docstring for what each state becomes. Then persistence is
        finished: the sysctl.d file is rewritten from the journal when a crash left it
        behind.

        :raises StorageError: the journal cannot record (the rest waits for the next try).
        """
        done: list[str] = []
        with self._lock:
            before = len(self._notices)
            self.audit.flush()
            for cs in reversed(self.journal.in_states((*UNFINISHED, "failed"))):
                if cs.state == "failed" and not any(c.state in _LIVE for c in cs.changes):
                    continue  # closed: nothing of it is left in the kernel
                state, errors = self._recover_one(cs)
                self.journal.event(
                    cs.id, "recovered", {"from": cs.state, "to": state, "errors": errors}
                )
                self.audit.record(
                    "recovery", changeset=cs.id, who=RECOVERY, was=cs.state, now=state,
                    errors=errors,
                )  # fmt: skip
                done.append(f"recovered changeset {cs.id}: {cs.state} -> {state}")
            done += self._finish_persist()
            done += self._notices[before:]  # keys left alone (also with the next result)
            # Settled only when the journal says so: nothing of ours left in flight.
            self.unsettled = self.audit.behind or bool(self.journal.in_states(UNFINISHED))
        return done

    def settle(self) -> list[str]:
        """Recover what a storage failure left in flight, once the journal can record again.

        Cheap when nothing is unsettled (the usual case): called before every operation
        that writes the kernel, and periodically by the daemon.
        """
        with self._lock:
            if not self.unsettled:
                return self._persist_again()
            try:
                return self.recover()
            except StorageError:
                return []  # still full: tried again later

    def _persist_again(self) -> list[str]:
        # A sysctl.d file that could not be written (its disk full) would set at the next
        # boot what the journal no longer says: written again, every persist_retry seconds.
        due = self._persist_again_at
        if due is None or time.monotonic() < due:
            return []
        try:
            return self._finish_persist()
        except StorageError:
            return []  # the journal cannot note it yet: tried again later

    def _recover_one(self, cs: Changeset) -> tuple[str, list[str]]:
        # One changeset left in flight: its new state and the errors met.
        if cs.state == "rolling_back" and cs.id in self._abandoned:
            error, lost = self._abandoned[cs.id]
            self._abandon(cs.id, error, lost, RECOVERY)
            return "verified", [error]
        if cs.state == "rolling_back":
            plan = self._rollback_plan(cs, invariants=False)
            if isinstance(plan, list):
                errors = [str(e) for e in plan]
                self.journal.set_state(cs.id, "verified", error="; ".join(errors))
                return "verified", errors
            res = self._finish_rollback(cs, plan, RECOVERY)
            self._recorded(cs.id)
            return ("rolled_back" if res.verdict != "failed" else "verified"), [
                e.message for e in res.errors
            ]
        if cs.state == "validated":
            self.journal.set_state(
                cs.id, "failed", error="interrupted before any write", change_state="failed"
            )
            return "failed", []
        if cs.state == "applied" and all(self._reads(c, c.new) for c in cs.changes):
            self.journal.verified(cs.id)
            return "verified", []
        return self._undo_left(cs)

    def _recorded(self, cs_id: int) -> None:
        # A rollback recovery finished in the kernel: the journal must have recorded its
        # end, else recovery stops here (and is tried again): the key holds our own
        # snapshot, which no override check may take for someone else's change.
        cs = self.journal.get(cs_id, with_events=False)
        if cs is not None and cs.state == "rolling_back":
            raise StorageFull(
                f"the journal {self.paths.journal} cannot record the end of rolling back "
                f"changeset {cs_id}",
                "free space there",
            )

    def _undo_left(self, cs: Changeset) -> tuple[str, list[str]]:
        # An apply interrupted after ``applying``: restore only the keys still holding what
        # this changeset wrote, and that no later changeset manages.
        states: dict[int, str] = {}
        restore: list[int] = []
        errors: list[str] = []
        for seq, c in enumerate(cs.changes):
            try:
                current = self._knob(c).read()
            except (OSError, Rejected) as exc:
                errors.append(f"{c.target}: could not read it ({why(exc)})")
                continue
            later = self.journal.later_change(c.kind, c.target, cs.id)
            if values_equal(current, c.old):
                states[seq] = "rolled_back"
            elif later is not None:
                states[seq] = "superseded"
            elif values_equal(current, c.new):
                restore.append(seq)
            else:
                states[seq] = "overridden"
                self.journal.event(
                    cs.id, "overridden", {"target": c.target, "set": c.new, "found": current}
                )
                self._said_overridden(cs.id, c, current)
        undo_errors = self._undo(cs.id, cs.changes, restore)
        errors += undo_errors
        if not undo_errors:
            states.update(dict.fromkeys(restore, "rolled_back"))
        wrote = (
            bool(restore)
            or cs.state == "applied"
            or any(c.state == "written" for c in cs.changes)
            or "overridden" in states.values()
        )
        if errors:
            state = "failed"  # retried on the next start
        elif wrote:
            state = "rolled_back"
        else:
            state, states = "failed", dict.fromkeys(states, "failed")
        self.journal.set_state(cs.id, state, error="interrupted: agent stopped", changes=states)
        return state, errors

    def _finish_persist(self) -> list[str]:
        # Idempotent: every verified changeset that asked to persist and has no
        # "persisted" event is persisted now (a crash between verified and the file),
        # and a file that no longer says what the journal does (a crash between a
        # rollback and the file) is rewritten.
        pending = self.journal.unpersisted()
        for cs_id in pending:
            self._persist(cs_id)
        done = [f"recovered changeset {cs_id}: persisted" for cs_id in pending]
        wanted = {c.target: c.new for _, c in self.journal.persisted()}
        stale = not pending and persisted_keys(self.paths.sysctl_conf) != wanted
        if stale and not self._write_persisted(None):
            done.append(f"recovered {self.paths.sysctl_conf}: rewritten from the journal")
        return done
