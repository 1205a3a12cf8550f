"""Work off the storing path: bug report drafts for new signatures, and hooks.

Both run in their own threads behind bounded queues, so a slow model, a hung command or
an unreachable URL never delays storing a crash. Drafts: newest first, at most
``per_hour`` an hour, the rest dropped (and counted); one that cannot be written (a full
disk) is counted and the thread goes on. Hooks: a command gets the crash's JSON on stdin,
a URL gets it POSTed; each is retried with exponential backoff. A hook command runs in a
process group of its own, which stopping the daemon kills whole: a hanging hook (and
whatever it started) never outlives the daemon nor delays its exit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from assistant.triage.model import Crash
from assistant.triage.store_model import Store
from assistant.watch.metrics import Metrics

T = TypeVar("T")

#: Drafts waiting at most; older ones are dropped first (newest first).
DRAFT_QUEUE = 32
#: Hook deliveries waiting at most.
HOOK_QUEUE = 256
#: Tries of a hook before it counts as failed.
HOOK_TRIES = 4
#: Seconds before the first retry (doubled each time).
HOOK_BACKOFF = 0.5
#: Seconds a hook command may run.
HOOK_TIMEOUT = 30.0
#: Seconds a hook's process group has to end after SIGTERM before SIGKILL.
HOOK_KILL_GRACE = 1.0


class _Worker(Generic[T]):
    """One thread working off a bounded queue; the subclass says which item goes next and
    what is done with it."""

    def __init__(self, name: str, maxlen: int | None = None) -> None:
        self._queue: deque[T] = deque(maxlen=maxlen)
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def _put(self, item: T) -> None:
        with self._cond:
            self._queue.append(item)
            self._cond.notify()

    def _next(self) -> T | None:
        """Take the next item off the queue (called with the lock held); ``None``: skip."""
        return self._queue.popleft()

    def _handle(self, item: T) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop and not self._queue:
                    return
                item = self._next()
                if item is None:
                    continue
                self._busy = True
            try:
                self._handle(item)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def drain(self, timeout: float) -> None:
        """Wait until the queue is empty and the item in hand is done."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._queue or self._busy) and time.monotonic() < deadline:
                self._cond.wait(0.1)

    def stop(self) -> None:
        """Finish the queue and stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5)


class DraftLease:
    """The lease on drafting a new signature, taken in the crash store, so that of the
    receivers sharing a store one drafts it (the outbox thread's own connection).

    :param target: the crash store (a PostgreSQL URL, a SQLite file or ``None``).
    """

    def __init__(self, target: str | None) -> None:
        self.target = target
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._store: Store | None = None

    def _open(self) -> Store:
        if self._store is None:
            from assistant.triage.stores import open_store

            self._store = open_store(self.target)
        return self._store

    def take(self, crash: Crash) -> bool:
        """Take the lease (``False``: another receiver drafts it, or did). A store that
        cannot be reached gives it: a draft twice is better than none."""
        try:
            return self._open().lease_draft(crash.signature, self.owner)
        except Exception:
            self._store = None
            return True

    def done(self, crash: Crash) -> None:
        """Say the draft is written."""
        with contextlib.suppress(Exception):
            self._open().draft_done(crash.signature, self.owner)


class Outbox(_Worker[Crash]):
    """Draft a bug report for each new signature, in a thread, into ``directory``.

    :param draft: turns a crash into Markdown (the report drafter, with or without a model).
    :param per_hour: the most drafts written in any hour.
    :param lease: one draft per signature across the receivers of a store (``None``: this
        daemon alone decides).
    """

    def __init__(
        self,
        directory: Path,
        draft: Callable[[Crash], str],
        metrics: Metrics,
        per_hour: int = 12,
        lease: DraftLease | None = None,
    ) -> None:
        super().__init__("outbox")
        self.directory = directory
        self.draft = draft
        self.metrics = metrics
        self.per_hour = per_hour
        self.lease = lease
        self._written: deque[float] = deque()
        directory.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def submit(self, crash: Crash) -> None:
        """Queue a draft for a new signature (the oldest queued one goes when full)."""
        with self._cond:
            if len(self._queue) >= DRAFT_QUEUE:
                self._queue.popleft()
                self.metrics.add("kassist_watch_drafts_dropped_total")
            self._queue.append(crash)
            self.metrics.add("kassist_watch_drafts_queued_total")
            self._cond.notify()

    def _allowed(self, now: float) -> bool:
        while self._written and now - self._written[0] > 3600:
            self._written.popleft()
        return len(self._written) < self.per_hour

    def _next(self) -> Crash | None:
        crash = self._queue.pop()  # newest first
        if not self._allowed(time.time()):
            self.metrics.add("kassist_watch_drafts_dropped_total")
            return None
        self._written.append(time.time())
        return crash

    def _handle(self, crash: Crash) -> None:
        if self.lease is not None and not self.lease.take(crash):
            self.metrics.add("kassist_watch_drafts_elsewhere_total")
            return
        try:
            markdown = self.draft(crash)
        except Exception as exc:  # a drafter's failure never stops the daemon
            markdown = f"# {crash.title}\n\n(the draft failed: {type(exc).__name__}: {exc})\n"
        base = self.directory / crash.signature
        try:
            Path(f"{base}.json").write_text(json.dumps(crash.to_dict(), indent=2))
            Path(f"{base}.md").write_text(markdown)
        except OSError:  # a full disk: the crash is stored; its draft is counted as lost
            self.metrics.add("kassist_watch_drafts_failed_total")
            return
        if self.lease is not None:
            self.lease.done(crash)
        self.metrics.add("kassist_watch_drafts_written_total")

    def drain(self, timeout: float = 300.0) -> None:
        """Wait until the queue is empty and the draft in hand is written."""
        super().drain(timeout)


@dataclass(frozen=True)
class HookTargets:
    """Where new signatures are announced: a command (JSON on stdin) and/or a URL (POST)."""

    command: str | None = None
    url: str | None = None
    otlp: str | None = None  # an OTLP/HTTP logs endpoint (assistant.watch.export)


class Hooks(_Worker[dict[str, Any]]):
    """Deliver each new signature's crash JSON to the hooks, in a thread, with retries."""

    def __init__(self, targets: HookTargets, metrics: Metrics, backoff: float = HOOK_BACKOFF):
        super().__init__("hooks", maxlen=HOOK_QUEUE)
        self.targets = targets
        self.metrics = metrics
        self.backoff = backoff
        self._proc: subprocess.Popen[bytes] | None = None  # the hook command running now
        self._thread.start()

    @property
    def enabled(self) -> bool:
        """Tell whether any hook is configured."""
        return bool(self.targets.command or self.targets.url or self.targets.otlp)

    def submit(self, doc: dict[str, Any]) -> None:
        """Queue a delivery (the oldest waiting one goes when the queue is full)."""
        self._put(doc)

    def _handle(self, doc: dict[str, Any]) -> None:
        body = json.dumps(doc, default=str).encode()
        for deliver in self._deliveries():
            self._retry(deliver, body)
        if self.targets.otlp:
            from assistant.watch.export import otlp_request

            self._retry(self._post_otlp, otlp_request(doc), "kassist_watch_otlp")

    def _deliveries(self) -> list[Callable[[bytes], None]]:
        out: list[Callable[[bytes], None]] = []
        if self.targets.command:
            out.append(self._run_command)
        if self.targets.url:
            out.append(self._post)
        return out

    def _retry(
        self, deliver: Callable[[bytes], None], body: bytes, metric: str = "kassist_watch_hook"
    ) -> None:
        delay = self.backoff
        for attempt in range(HOOK_TRIES):
            try:
                deliver(body)
            except Exception:
                if attempt == HOOK_TRIES - 1 or self._stopping():
                    self.metrics.add(f"{metric}_failures_total")
                    return
                with self._cond:  # a stop ends the wait
                    self._cond.wait_for(lambda: self._stop, timeout=delay)
                delay *= 2
                continue
            self.metrics.add(
                "kassist_watch_hook_runs_total" if metric == "kassist_watch_hook"
                else f"{metric}_exported_total"
            )  # fmt: skip
            return

    def _stopping(self) -> bool:
        with self._cond:
            return self._stop

    def _run_command(self, body: bytes) -> None:
        assert self.targets.command is not None
        # The command is the operator's own configuration, run without a shell; the
        # crash (attacker-influenced text) only ever arrives as data on stdin. It gets a
        # process group of its own, so that stop() can end it and all it started.
        import shlex

        proc = subprocess.Popen(
            shlex.split(self.targets.command),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        with self._cond:
            self._proc = proc
            stopping = self._stop
        try:
            if stopping:
                raise RuntimeError("the daemon is stopping")
            proc.communicate(body, timeout=HOOK_TIMEOUT)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise
        finally:
            with self._cond:
                self._proc = None
            _kill_group(proc)  # what it left behind in its group
        if proc.returncode != 0:
            raise RuntimeError(f"hook command exited {proc.returncode}")

    def stop(self) -> None:
        """Stop: the hook command running now and its whole process group are killed, and
        nothing queued is delivered any more (with ``--once``, :meth:`drain` first)."""
        with self._cond:
            self._stop = True
            self._queue.clear()
            proc = self._proc
            self._cond.notify_all()
        if proc is not None:
            _kill_group(proc)
        self._thread.join(timeout=HOOK_KILL_GRACE + 5)

    def _post_otlp(self, body: bytes) -> None:
        import httpx

        assert self.targets.otlp is not None
        resp = httpx.post(self.targets.otlp, content=body, timeout=HOOK_TIMEOUT,
                          headers={"Content-Type": "application/x-protobuf"})  # fmt: skip
        resp.raise_for_status()

    def _post(self, body: bytes) -> None:
        import httpx

        assert self.targets.url is not None
        resp = httpx.post(
            self.targets.url,
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=HOOK_TIMEOUT,
        )
        resp.raise_for_status()

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until every queued delivery is done (delivered or failed)."""
        super().drain(timeout)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    # SIGTERM to the hook's process group, SIGKILL to whatever is left after a grace.
    if not _group_alive(proc.pid):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + HOOK_KILL_GRACE
    while time.monotonic() < deadline and (proc.poll() is None or _group_alive(proc.pid)):
        time.sleep(0.02)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=HOOK_KILL_GRACE)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
