"""What every part of the agent shares: its state files, the kernel's roots, its lock.

:class:`AgentCore` holds the policy, the journal and the audit log, the notices for
the next result, and the step hook; the operations build on it (:mod:`actions.rollback`
for rollback, overrides and recovery; :mod:`actions.agent` for validate, apply,
status and history). Every operation returns a typed *result*, a
:class:`~actions.model.Completion` (``ok, verdict, errors, changeset, notices``, less
``user_data``).

The step hook: the agent calls ``on_step(step, changeset id)`` at each step of an
apply (``validated``, ``applying``, ``write:<i>``, ``applied``, ``verified``) and of a
rollback (``rolling_back``, ``undo:<i>``, ``rolled_back``). Production installs none;
the fault-injection tests install one from their own entry point
(``tests/agent_entry.py``) that kills the agent, pauses it or fills its disk there.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from actions.audit import MAX_BYTES, Audit
from actions.errors import Rejected, StorageError
from actions.files import RESERVE
from actions.journal import Journal
from actions.knobs import Knob, Roots, resolve
from actions.model import Change, Changeset, Completion, ErrorEntry, Recommendation
from actions.persist import write_sysctl_conf
from actions.policy import Policy
from actions.validate import values_equal

#: An operation's result: the completion, less its ``user_data``.
Result = Completion
#: Called at each step of an apply or a rollback: ``(step, changeset id)``.
StepHook = Callable[[str, int], None]
#: The window of the rate rule (``max_changes_per_hour``), in seconds.
RATE_WINDOW = 3600.0


class KernelValidator(Protocol):
    """What the agent asks of the kernel's validator (``actions.enforce.queues.KernelCheck``)."""

    def check(
        self, recs: Sequence[Recommendation], errors: Sequence[Rejected], who: dict[str, Any]
    ) -> list[Rejected]:
        """Return ``errors`` and the kernel's own refusals of ``recs``."""

    def applied(self, who: dict[str, Any], count: int) -> None:
        """Count ``count`` changes of ``who``'s applied and verified."""


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


def why(exc: Exception) -> str:
    """Return an error's own words: an OSError's strerror, or a refusal's line."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    if isinstance(exc, StorageError):
        return exc.message
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


@dataclass(frozen=True)
class Storage:
    """How the agent's files may grow.

    :param reserve: bytes held back beside the journal, and beside the audit log (0: none).
    :param audit_max_bytes: the audit log's size past which bounded records are counted.
    """

    reserve: int = RESERVE
    audit_max_bytes: int = MAX_BYTES


class AgentCore:
    """The agent's shared state.

    :param policy: the loaded policy.
    :param paths: journal, audit log and sysctl.d file.
    :param roots: where /proc/sys and /sys are (tests point them at a fake tree).
    :param journald: the journald socket (``None``: the default one, if it listens).
    :param storage: reserves and caps of the state files.
    """

    def __init__(
        self,
        policy: Policy,
        paths: Paths,
        roots: Roots | None = None,
        journald: str | None = None,
        storage: Storage | None = None,
    ) -> None:
        storage = storage or Storage()
        self.policy = policy
        self.paths = paths
        self.roots = roots or Roots()
        self.journal = Journal(paths.journal, storage.reserve)
        audit_args: dict[str, Any] = {"journald": journald} if journald else {}
        self.audit = Audit(
            paths.audit,
            max_bytes=storage.audit_max_bytes,
            reserve=storage.reserve,
            **audit_args,
        )
        self.started = time.time()
        self._lock = threading.RLock()
        self._notices: list[str] = []
        #: the step hook (tests only; see the module's docstring)
        self.on_step: StepHook | None = None
        #: the validator of record in the kernel (actions/enforce/queues.py), when it runs
        self.kernel: KernelValidator | None = None
        #: a storage failure left the journal or the audit log behind the kernel
        self.unsettled = True
        #: seconds between tries to rewrite a sysctl.d file that could not be written
        self.persist_retry = 30.0
        #: when to try again (time.monotonic()), or None: the file follows the journal
        self._persist_again_at: float | None = None
        self._unreadable_keys: set[str] = set()
        #: rollbacks undone while the journal could not record it: id -> (error, lost keys)
        self._abandoned: dict[int, tuple[str, dict[int, str]]] = {}
        self._recent_lock = threading.Lock()
        self._recent: dict[tuple[str, str], deque[float]] = {}
        for kind, key, when in self.journal.recent_times(RATE_WINDOW):
            self._recent.setdefault((kind, key), deque()).append(when)

    def close(self) -> None:
        """Close the journal and the audit log."""
        self.journal.close()
        self.audit.close()

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

    @contextlib.contextmanager
    def _unsettled_on_error(self) -> Iterator[None]:
        # Whatever escapes an apply or a rollback under way (an error nobody expected) may
        # leave its changeset in flight: the next operation settles it (recovery) first,
        # and no override check reads its values as someone else's meanwhile.
        try:
            yield
        except BaseException:
            self.unsettled = True
            raise

    def _step(self, step: str, cs_id: int) -> None:
        if self.on_step is not None:
            self.on_step(step, cs_id)

    def _knob(self, change: Change) -> Knob:
        return resolve(change.kind, change.target, self.roots)

    def _take_notices(self) -> list[str]:
        out, self._notices = self._notices, []
        return out

    def _cs(self, cs_id: int) -> Changeset | None:
        return self.journal.get(cs_id)

    def _reads(self, c: Change, value: str) -> bool:
        try:
            return values_equal(self._knob(c).read(), value)
        except (OSError, Rejected):
            return False

    def _read_back_old(self, cs_id: int, c: Change, knob: Knob) -> str | None:
        # Read a restored key back and audit it; return the error, if it is not the old value.
        got = knob.read()
        ok = values_equal(got, c.old)
        self.audit.record("restore", changeset=cs_id, target=c.target, value=c.old, got=got, ok=ok)
        return None if ok else f"{c.target}: restored {c.old} but the kernel reads back {got}"

    def _storage_problem(self) -> str | None:
        # Why nothing may be written to the kernel now: the journal or the audit log
        # could not record all of it, or an earlier operation's end is not recorded yet.
        problem = self.journal.ready() or self.audit.ready()
        if problem is None and self.unsettled:
            problem = (
                "the journal cannot record the end of an earlier changeset yet (its disk "
                "was full); free space there"
            )
        return problem

    # --- persistence ------------------------------------------------------------------

    def _persist(self, cs_id: int) -> list[str]:
        # Raises StorageError when the journal cannot note it (recovery's way: it stops).
        msg = self._write_persisted(cs_id)
        if msg:
            return [msg]
        self.journal.event(cs_id, "persisted", {"file": str(self.paths.sysctl_conf)})
        return []

    def _persist_done(self, cs_id: int) -> list[str]:
        # After a changeset is verified or rolled back: the change is done whatever the
        # journal's disk does now. A note it cannot record is recorded by recovery
        # (settle) once space is back; the file already follows the journal.
        try:
            return self._persist(cs_id)
        except StorageError as exc:
            self.unsettled = True
            return [f"{exc.message}: {self.paths.sysctl_conf} is written; the journal records "
                    "it once space is back"]  # fmt: skip

    def _write_persisted(self, cs_id: int | None) -> str:
        # Rewrite the sysctl.d file from the journal; return the error, if any.
        try:
            exists = write_sysctl_conf(self.paths.sysctl_conf, self.journal.persisted())
        except OSError as exc:
            msg = f"could not write {self.paths.sysctl_conf}: {exc.strerror}"
            self._persist_again_at = time.monotonic() + self.persist_retry
            self.audit.record(
                "persist", changeset=cs_id, file=str(self.paths.sysctl_conf), ok=False, error=msg
            )
            if cs_id is not None:
                with contextlib.suppress(StorageError):  # the audit log has it
                    self.journal.event(cs_id, "persist-failed", {"error": msg})
            else:
                self._notices.append(msg)
            return msg
        self._persist_again_at = None
        self.audit.record(
            "persist", changeset=cs_id, file=str(self.paths.sysctl_conf), exists=exists, ok=True
        )
        return ""
