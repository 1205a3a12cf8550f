"""The agent's operations: validate, apply and verify, status, history.

:class:`Agent` is what the daemon calls for each submission; it is also usable
in-process. Rollback, yielding to the admin and recovery live in
:mod:`actions.rollback`; the shared state in :mod:`actions.core`. Mutating
operations hold one lock: changesets apply one at a time.

Nothing is written to the kernel unless the journal and the audit log can record
it: an apply first makes sure both hold their reserve (:meth:`Journal.ready`,
:meth:`Audit.ready`) and is ``refused`` otherwise; one whose records still cannot be
kept half way (another process filled the disk) is undone and answered ``failed``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any

from actions.core import Paths, Result, StepHook, Storage, result
from actions.errors import Rejected, StorageError
from actions.knobs import KINDS
from actions.model import (
    RISKS,
    AgentStatus,
    Change,
    Changeset,
    ManagedKey,
    OverriddenKey,
    parse_recommendations,
)
from actions.rollback import Rollbacks
from actions.validate import Planned, order_writes, validate, values_equal

#: The most one history answer holds (bytes of JSON): the newest changesets that fit.
MAX_HISTORY_BYTES = 1 << 20

__all__ = ["Agent", "Paths", "Result", "StepHook", "Storage", "result"]


class Agent(Rollbacks):
    """The kernel agent (built as :class:`~actions.core.AgentCore` is)."""

    # --- helpers ----------------------------------------------------------------------

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

    def _auto_approvable(self, planned: Sequence[Planned]) -> bool:
        if self.policy.auto_approve == "none":
            return False
        limit = RISKS.index(self.policy.auto_approve)
        return all(RISKS.index(p.risk) <= limit for p in planned)

    # --- validate ---------------------------------------------------------------------

    def validate(self, doc: object, who: dict[str, Any]) -> Result:
        """Validate a recommendation (or a list) and return the dry-run diff; write nothing."""
        # One line records both the submission and its verdict (nothing is written); any
        # peer may send these at will, so the line is a bounded one.
        planned, errors = self._parse(doc, who)
        verdict = "rejected" if errors else "valid"
        self.audit.bounded(
            "verdict",
            f"validate {verdict}",
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
        """Validate, then apply all-or-nothing: snapshot, write, read back, commit or undo.

        Verdicts: ``verified``, ``rejected`` (a rule refused it), ``refused`` (nothing
        written: the journal or the audit log cannot record) and ``failed`` (the kernel
        refused a value or reads another back, or the records could not be kept: what
        was written is undone).
        """
        with self._lock:
            self.settle()
            self.check_overrides()
            planned, errors = self._parse(doc, who)
            if not errors:
                problem = self._storage_problem()
                if problem:
                    errors = [Rejected("storage", "", f"{problem}; nothing was applied")]
            if errors:
                verdict = "rejected" if errors[0].rule != "storage" else "refused"
                self.audit.bounded(
                    "verdict",
                    f"apply {verdict}",
                    op="apply",
                    who=who,
                    verdict=verdict,
                    persist=persist,
                    errors=[str(e) for e in errors],
                )
                return result(False, verdict, errors, notices=self._take_notices())
            with self._unsettled_on_error():
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
        try:
            cs_id = self.journal.create(changes, who, persist, created)
        except StorageError as exc:
            return self._apply_refused(who, persist, exc)
        for c in changes:
            self._count_change(c.kind, c.target)
        self.audit.record("submission", op="apply", who=who, persist=persist, changeset=cs_id)
        self.audit.record("verdict", op="apply", who=who, verdict="valid", changeset=cs_id)
        self._audit_baseline_overrides(cs_id, planned)
        self._step("validated", cs_id)
        try:
            self.journal.set_state(cs_id, "applying")
        except StorageError as exc:
            return self._apply_refused(who, persist, exc, cs_id)
        self._step("applying", cs_id)
        failure, written = self._write_all(cs_id, planned)
        if failure is None:
            try:
                self.journal.set_state(cs_id, "applied", change_state="written")
            except StorageError as exc:
                failure = Rejected("journal", "", f"{exc.message}; the changeset was undone")
        if failure is None:
            self._step("applied", cs_id)
            failure = self._verify(cs_id, planned)
        if failure is not None:
            return self._apply_failed(cs_id, changes, written, failure)
        notices = self._take_notices()
        try:
            self.journal.verified(cs_id)
        except StorageError as exc:
            # Every key reads its new value and the journal says ``applied``: recovery
            # marks it verified once the journal can record again.
            self.unsettled = True
            notices.append(f"{exc.message}: it records this changeset once space is back")
            persist = False  # the file follows the journal: recovery writes it
        self._step("verified", cs_id)
        if self.kernel is not None:
            self.kernel.applied(who, len(changes))
        if persist:
            notices += self._persist_done(cs_id)
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
        done = Changeset(cs_id, "verified", created, changes, who, persist, time.time())
        return result(True, "verified", (), done, notices=notices)

    def _write_all(
        self, cs_id: int, planned: Sequence[Planned]
    ) -> tuple[Rejected | None, list[int]]:
        # Write every key in an order that keeps the invariants; stop at the first the
        # kernel refuses, or when the audit log cannot record. Return the failure and the
        # changes (seqs) written, the refused one included.
        written: list[int] = []
        order = order_writes(
            {p.knob.key: p.old for p in planned}, [(p.knob.key, p.new) for p in planned], self.roots
        )
        for i, seq in enumerate(order):
            p = planned[seq]
            if self.audit.behind:
                return Rejected(
                    "audit", "", "the audit log cannot record; the changeset was undone"
                ), written
            written.append(seq)
            try:
                p.knob.write(p.new)
            except OSError as exc:
                self.audit.record("write", changeset=cs_id, target=p.knob.key, value=p.new,
                                  ok=False, error=str(exc))  # fmt: skip
                return Rejected(
                    "write",
                    p.knob.key,
                    f"the kernel refused {p.new!r} "
                    f"({exc.strerror or exc}); the changeset was rolled back",
                ), written
            self.audit.record(
                "write", changeset=cs_id, target=p.knob.key, old=p.old, new=p.new, ok=True
            )
            self._step(f"write:{i}", cs_id)
        if self.audit.behind:
            return Rejected(
                "audit", "", "the audit log cannot record; the changeset was undone"
            ), written
        return None, written

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
        if self.audit.behind:
            return Rejected("audit", "", "the audit log cannot record; the changeset was undone")
        return None

    def _apply_refused(
        self, who: dict[str, Any], persist: bool, exc: StorageError, cs_id: int | None = None
    ) -> Result:
        # The journal could not record the start of the changeset: nothing was written.
        if cs_id is not None:
            self._close(cs_id, "failed", exc.message, "failed")
        error = Rejected("storage", "", f"{exc.message}; nothing was applied")
        self.audit.record("verdict", op="apply", who=who, verdict="refused", persist=persist,
                          changeset=cs_id, errors=[str(error)])  # fmt: skip
        return result(False, "refused", [error], notices=self._take_notices())

    def _apply_failed(
        self, cs_id: int, changes: Sequence[Change], written: Sequence[int], failure: Rejected
    ) -> Result:
        if not written:  # the audit log could not record before the first write
            self._close(cs_id, "failed", str(failure), "failed")
            verdict = "refused"
            undo_errors: list[str] = []
        else:
            self._close(cs_id, "failed", str(failure))
            undo_errors = self._undo(cs_id, changes, written)
            if not undo_errors:
                self._close(cs_id, "rolled_back", "", "rolled_back")
            verdict = "failed"
        if self.audit.behind:
            undo_errors.append(f"{self.audit.behind_why()}: its records wait in memory until then")
        self.audit.record("verdict", op="apply", changeset=cs_id, verdict=verdict,
                          errors=[str(failure), *undo_errors])  # fmt: skip
        return result(
            False,
            verdict,
            [failure],
            self._cs(cs_id),
            notices=self._take_notices() + undo_errors,
        )

    def _close(self, cs_id: int, state: str, error: str, change_state: str | None = None) -> None:
        # Record the end of a failed changeset; a journal that cannot record leaves it to
        # recovery (settle), which never writes over a value this changeset did not leave.
        try:
            self.journal.set_state(cs_id, state, error=error, change_state=change_state)
        except StorageError:
            self.unsettled = True

    def _audit_baseline_overrides(self, cs_id: int, planned: Sequence[Planned]) -> None:
        # A baseline key lowered under an explicit [baseline] override is audited as such.
        for p in planned:
            sep = KINDS[p.knob.kind].sep
            if self.policy.lowers_baseline(p.knob.key, sep, p.old, p.new) and (
                self.policy.may_lower_baseline(p.knob.key, sep)
            ):
                self.audit.record(
                    "baseline-override",
                    changeset=cs_id,
                    target=p.knob.key,
                    old=p.old,
                    new=p.new,
                    policy=self.policy.source,
                )

    # --- status and history -----------------------------------------------------------

    def status(self) -> Result:
        """Return what the agent manages, what was overridden, and its journal's counts."""
        with self._lock:
            self.settle()
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
        notices = self._take_notices()
        problem = self._storage_problem()
        if problem:
            notices.append(f"{problem}: applies and rollbacks are refused until then")
        return result(True, "ok", (), None, status=status, notices=notices)

    def history(self, cs_id: int | None = None, limit: int = 50, since: float = 0.0) -> Result:
        """Return one changeset with its events, or the latest ones (newest first)."""
        if cs_id is not None:
            cs = self.journal.get(cs_id)
            if cs is None:
                return result(
                    False, "not_found", [Rejected("history", "", f"no changeset {cs_id}")]
                )
            return result(True, "ok", (), cs)
        listed = self.journal.history(limit, since)
        kept: list[Changeset] = []
        size = 0
        for cs in listed:  # a peer may ask for 1000 changesets of up to 64 KiB each
            size += len(json.dumps(cs.to_dict(), default=str))
            if kept and size > MAX_HISTORY_BYTES:
                break
            kept.append(cs)
        notices = []
        if len(kept) < len(listed):
            notices.append(
                f"the {len(kept)} newest of {len(listed)} changesets: an answer holds at most "
                f"{MAX_HISTORY_BYTES >> 20} MiB (ask with --since or by id for the rest)"
            )
        return result(True, "ok", (), None, changesets=kept, notices=notices)
