"""The RFC's submission and completion queues in BPF, and the validator of record in the kernel.

:class:`Queues` loads ``kassist_queues.bpf.c``: submission queues
(``BPF_MAP_TYPE_USER_RINGBUF``, one per extension id) that user space writes and the
kernel reads, and a completion queue (``BPF_MAP_TYPE_RINGBUF``) that the kernel
writes and the agent reads. :meth:`Queues.validate` writes one fixed-size, versioned
:class:`Entry` per recommendation into the agent's own submission queue (id 0), runs
``kassist_validate`` with ``BPF_PROG_RUN`` (it drains the queue and checks each entry
against the guard's own policy map, ``kassist_policy.h``), and reads one
:class:`Verdict` per entry back. The program also accounts for each extension (uid and
cgroup): submitted, accepted, refused by reason, applied; and refuses entries over the
extension's rate. :class:`KernelCheck` is how the agent uses it: the daemon applies
only what the kernel accepted (see ``docs/enforce.md``).

**Why ring buffers, not an arena.** The RFC's first choice is a ``BPF_MAP_TYPE_ARENA``
shared-memory ring. On this platform (Linux 6.18, Debian 12's clang 14 and libbpf
1.1.2) it cannot be built: ``BPF_MAP_CREATE`` of an arena fails with ``EPERM`` as
root, libbpf 1.1 does not know the map type (arena support came in libbpf 1.4), and
clang 14 compiles ``__attribute__((address_space(1)))`` pointers to plain loads
(the ``addr_space_cast`` instruction needs LLVM 18). ``BPF_MAP_TYPE_USER_RINGBUF`` with
``bpf_user_ringbuf_drain()`` in a ``BPF_PROG_TYPE_SYSCALL`` program run with
``BPF_PROG_RUN`` works, as an inner map of a hash of maps too.

**Pinning.** The queues, the accounting and the completion sequence are pinned under
``<pin root>/queues/`` (root only, 0700), beside an ``owner-<pid>-<start>-<ns>``
directory naming the agent that uses them. A killed agent leaves them; the next one
takes them over, answers every entry still in the rings (an *orphan*: audited, never
applied, since nobody waits for it any more) and goes on numbering where the last one
stopped. A clean stop answers what is pending and unpins everything.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from actions.enforce import capability, libbpf
from actions.enforce.build import DEFAULT_CACHE, object_path
from actions.enforce.enforcer import owned_name, owner, publish_rules
from actions.enforce.maps import NAME_LEN, REASONS, VALUE_LEN, Compiled
from actions.enforce.ring import (
    KQ_F_USER_SPACE_RULES,
    CompletionEvent,
    Entry,
    SubmissionQueue,
    entry,
)
from actions.errors import ActionError, Rejected
from actions.knobs import Roots, resolve
from actions.model import Recommendation
from actions.validate import canonical_value

SOURCE = Path(__file__).with_name("kassist_queues.bpf.c")
MAX_REASONS = 16
#: The agent's own submission queue: it writes there what comes in through the socket.
AGENT_QUEUE = 0
#: The cgroups of one user the agent accounts apart; the rest of that user's are cgroup 0
#: (the accounting map holds 4096 extensions: one user making cgroups must not fill it).
MAX_CGROUPS_PER_UID = 32
#: The maps pinned (and taken over by the next agent), by their name in the object.
PINNED = ("sqs", "cq", "extensions", "accounting", "buckets", "sequence", "rate")

#: The validator's rule (:mod:`actions.validate`) each kernel reason stands for.
REASON_RULES = {
    2: "range",
    3: "type",
    4: "range",
    7: "policy",
    8: "baseline",
    9: "policy",
    10: "policy",
    11: "type",
    13: "rate",
    14: "protocol",
    15: "rate",
}
#: What the kernel checks, and what stays in user space (labelled so in each verdict).
KERNEL_RULES = ("policy", "baseline", "type", "range")
USER_SPACE_RULES = ("text", "evidence", "name", "exists", "value", "module", "noop", "stale",
                    "step", "rate (per key)", "duplicate", "size", "invariant")  # fmt: skip


class Account(ctypes.Structure):
    """``struct account``: one extension's counters (its user's rate bucket is apart)."""

    _fields_ = [
        ("submitted", ctypes.c_uint64),
        ("accepted", ctypes.c_uint64),
        ("refused", ctypes.c_uint64),
        ("applied", ctypes.c_uint64),
        ("by_reason", ctypes.c_uint64 * MAX_REASONS),
    ]


class AccountKey(ctypes.Structure):
    """``struct ext_id_key``: an extension, as the kernel sees it."""

    _fields_ = [("uid", ctypes.c_uint32), ("_pad", ctypes.c_uint32), ("cgroup_id", ctypes.c_uint64)]


class Extension(ctypes.Structure):
    """``struct extension``: who writes a queue of its own."""

    _fields_ = [
        ("uid", ctypes.c_uint32),
        ("direct", ctypes.c_uint32),
        ("cgroup_id", ctypes.c_uint64),
    ]


class QueueId(ctypes.Structure):
    """A ``__u32``: the key of ``sqs`` and ``extensions`` (and a map id, ``sqs``' value)."""

    _fields_ = [("id", ctypes.c_uint32)]


class Limits(ctypes.Structure):
    """``struct limits``: the rate each extension may submit at (0: unlimited)."""

    _fields_ = [("per_second", ctypes.c_uint64), ("burst", ctypes.c_uint64)]


class RunCtx(ctypes.Structure):
    """``struct run_ctx``: which queue ``kassist_validate`` drains, and what it did."""

    _fields_ = [
        ("ext_id", ctypes.c_uint32),
        ("budget", ctypes.c_uint32),
        ("done", ctypes.c_uint32),
        ("drained", ctypes.c_int32),
    ]


class AppliedCtx(ctypes.Structure):
    """``struct applied_ctx``."""

    _fields_ = [
        ("uid", ctypes.c_uint32),
        ("count", ctypes.c_uint32),
        ("cgroup_id", ctypes.c_uint64),
    ]


assert ctypes.sizeof(Account) == 160


@dataclass(frozen=True)
class Submission:
    """What the kernel checks of one recommendation.

    :param user_data: the submitter's tag (echoed in the verdict).
    :param name: the key as the kernel names it (``net/core/somaxconn``).
    :param value: the value to write, canonical text (at most 127 bytes).
    :param current: the key's value now, canonical text.
    :param uid: the submitting extension's uid (SO_PEERCRED).
    :param cgroup_id: its cgroup v2 id (0: unknown).
    """

    user_data: int
    name: str
    value: str
    current: str
    uid: int = 0
    cgroup_id: int = 0

    def entry(self) -> Entry:
        """Return ``struct kq_entry``."""
        return entry(self.user_data, self.name, self.value, self.current, self.uid,
                     self.cgroup_id)  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """The kernel's answer to one entry (``struct kq_completion``).

    :param reason: why it was refused, in words ("" when accepted).
    :param rule: the validator's rule that stands for it (``range``, ``policy``, ...).
    :param seq: the completion's number (unique across agents: the counter is pinned).
    :param target: the dotted key.
    :param user_space: accepted here, with the rules user space checks still to come.
    """

    user_data: int
    accepted: bool
    reason: str
    rule: str
    seq: int
    target: str
    uid: int
    cgroup_id: int
    generation: int
    ext_id: int
    user_space: bool

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as plain data (audit; flat, so a copy of its fields)."""
        return dict(self.__dict__)


def _verdict(ev: CompletionEvent) -> Verdict:
    return Verdict(
        user_data=ev.user_data,
        accepted=ev.verdict == 0,
        reason=REASONS.get(ev.reason, str(ev.reason)) if ev.reason else "",
        rule=REASON_RULES.get(ev.reason, "kernel") if ev.reason else "",
        seq=ev.seq,
        target=ev.name.decode("utf-8", "replace").replace("/", "."),
        uid=ev.uid,
        cgroup_id=ev.cgroup_id,
        generation=ev.generation,
        ext_id=ev.ext_id,
        user_space=bool(ev.flags & KQ_F_USER_SPACE_RULES),
    )


def problems() -> list[str]:
    """Return why the BPF queues cannot run here, one line each (empty: they can)."""
    if os.geteuid() != 0:
        return ["not root: loading BPF programs needs root"]
    try:
        lib = libbpf.lib()
    except OSError:
        return ["no libbpf: install libbpf1 (./setup.sh)"]
    found = []
    if not capability.BTF.exists():
        found.append(f"no kernel BTF ({capability.BTF})")
    for kind, what in (
        (libbpf.BPF_MAP_TYPE_USER_RINGBUF, "BPF_MAP_TYPE_USER_RINGBUF (Linux 6.1)"),
        (libbpf.BPF_MAP_TYPE_RINGBUF, "BPF_MAP_TYPE_RINGBUF (Linux 5.8)"),
    ):
        if lib.libbpf_probe_bpf_map_type(kind, None) != 1:
            found.append(f"this kernel has no {what}")
    syscall = libbpf.BPF_PROG_TYPE_SYSCALL
    if lib.libbpf_probe_bpf_prog_type(syscall, None) != 1:
        found.append("this kernel has no BPF_PROG_TYPE_SYSCALL program type (Linux 5.14)")
    elif lib.libbpf_probe_bpf_helper(syscall, libbpf.BPF_FUNC_USER_RINGBUF_DRAIN, None) != 1:
        found.append("this kernel has no bpf_user_ringbuf_drain() for syscall programs")
    return found


@dataclass
class _Loaded:
    obj: int
    validate_fd: int
    applied_fd: int
    maps: dict[str, int]
    pin_dir: Path
    owner_dir: Path
    sq: SubmissionQueue  # the agent's own
    sq_fd: int
    cq: int  # struct ring_buffer *
    inner_fd: int = -1  # the rules inner map, when these queues publish their own


class Queues:
    """The BPF submission and completion queues, and the kernel's validator behind them.

    :param pin_root: the bpffs directory (the queues are pinned in ``queues/`` below it).
    :param cache_dir: where the compiled object is kept.
    :param rules_fd: the guard's rules map (``Enforcer``), so that both check one policy;
        ``None``: these queues hold and publish their own (:meth:`publish`).
    :param per_second: entries one extension may submit per second (0: unlimited).
    :param burst: ...and at once.
    :param on_answer: called with each verdict as it is read from the completion queue,
        before the queue's read position moves past it (the audit): a verdict is never
        read without being recorded, at worst recorded twice when the agent dies between
        the two (the second time as an orphan).
    """

    def __init__(
        self,
        pin_root: Path,
        cache_dir: Path = DEFAULT_CACHE,
        rules_fd: int | None = None,
        per_second: int = 100,
        burst: int = 200,
        on_answer: Callable[[Verdict], None] | None = None,
    ) -> None:
        self.pin_root = pin_root
        self.on_answer = on_answer
        #: called at the queues' own steps (see :meth:`_step`); ``None`` in production
        self.on_step: Callable[[str], None] | None = None
        self.cache_dir = cache_dir
        self.rules_fd = rules_fd
        self.per_second = per_second
        self.burst = burst
        self.generation = 0
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()
        self._got: list[Verdict] = []
        self._tag = 0  # the user_data of the agent's own entries: never reused
        self._sample = libbpf.SampleFn(self._on_sample)
        #: One line each: what the operator should know (taken-over rings, orphans).
        self.notices: list[str] = []
        #: Every entry answered while nobody waited for it (after a restart): audited.
        self.orphans: list[Verdict] = []
        #: Verdicts ``on_answer`` failed to record (shown by :meth:`status`; should stay 0).
        self.unrecorded = 0

    @property
    def running(self) -> bool:
        """Tell whether the program is loaded."""
        return self._loaded is not None

    # --- start / stop -----------------------------------------------------------------

    def start(self, compiled: Compiled | None = None) -> None:
        """Load the program, take over or create the pinned queues, answer what is left.

        :param compiled: the policy, for queues that hold their own rules map: published
            before what an earlier agent left is answered, so that it is judged by it.
        :raises ActionError: a piece is missing (one line) or the kernel refused a step.
        """
        missing = problems()
        if missing:
            raise ActionError("BPF queues unavailable: " + "; ".join(missing), "")
        mounted = capability.ensure_bpffs(self.pin_root)
        if mounted:
            self.notices.append(mounted)
        pin_dir = self.pin_root / "queues"
        self._claim(pin_dir)
        try:
            self._loaded = self._load(pin_dir)
        except OSError as exc:
            if not any((pin_dir / m).exists() for m in PINNED):
                raise ActionError(f"cannot load the BPF queues: {exc.strerror}", "") from None
            # pinned by another version of the program: start afresh, and say so
            self.notices.append(f"the pinned queues did not fit this program ({exc.strerror}): "
                                "replaced")  # fmt: skip
            for m in PINNED:
                (pin_dir / m).unlink(missing_ok=True)
            self._loaded = self._load(pin_dir)
        self._set_rate()
        if compiled is not None:
            self.publish(compiled)
        discarded = self._unstick()
        if discarded:
            self.notices.append(
                f"{discarded} entries an earlier agent died writing were discarded (never "
                "submitted: nobody was told they were)"
            )
        self.orphans = self._drain_leftovers()
        if self.orphans:
            self.notices.append(
                f"{len(self.orphans)} entries an earlier agent left in the queues were answered "
                "and not applied (nobody waits for them any more): seq "
                + ", ".join(str(v.seq) for v in self.orphans[:10])
                + (" ..." if len(self.orphans) > 10 else "")
            )

    def _claim(self, pin_dir: Path) -> None:
        # One agent per set of queues: a live owner's queues are never taken over.
        self.pin_root.mkdir(mode=0o700, exist_ok=True)
        pin_dir.mkdir(mode=0o700, exist_ok=True)
        for marker in sorted(pin_dir.glob("owner-*")):
            pid, alive = owner(marker)
            if alive and pid != os.getpid():
                raise ActionError(
                    f"the BPF queues in {pin_dir} belong to a running agent (pid {pid})",
                    "stop that agent first",
                )
            with contextlib.suppress(OSError):
                marker.rmdir()
        (pin_dir / owned_name("owner", os.getpid())).mkdir(mode=0o700)

    def _load(self, pin_dir: Path) -> _Loaded:
        lib = libbpf.lib()
        path = object_path(self.cache_dir, SOURCE)
        obj = libbpf.check_ptr(lib.bpf_object__open_file(str(path).encode(), None), f"open {path}")
        try:
            handles = {
                name: libbpf.check_ptr(lib.bpf_object__find_map_by_name(obj, name.encode()), name)
                for name in (*PINNED, "rules")
            }
            if self.rules_fd is not None:  # the guard's own policy map
                libbpf.check(lib.bpf_map__reuse_fd(handles["rules"], self.rules_fd), "reuse rules")
            for name in PINNED:
                pin = pin_dir / name
                if pin.exists():  # an earlier agent's queues: take them over
                    fd = libbpf.check(lib.bpf_obj_get(str(pin).encode()), f"open {pin}")
                    try:
                        if not libbpf.same_shape(fd, handles[name]):  # another version's
                            raise OSError(errno.EINVAL, f"{name} has another layout")
                        libbpf.check(lib.bpf_map__reuse_fd(handles[name], fd), f"reuse {name}")
                    finally:
                        os.close(fd)
            libbpf.check(lib.bpf_object__load(obj), "the kernel refused the queue program")
            maps = {n: libbpf.check(lib.bpf_map__fd(h), n) for n, h in handles.items()}
            for name in PINNED:
                pin = pin_dir / name
                if not pin.exists():
                    libbpf.check(lib.bpf_obj_pin(maps[name], str(pin).encode()), f"pin {name}")
            progs = {}
            for prog_name in ("kassist_validate", "kassist_applied"):
                prog = libbpf.check_ptr(
                    lib.bpf_object__find_program_by_name(obj, prog_name.encode()), prog_name
                )
                progs[prog_name] = libbpf.check(lib.bpf_program__fd(prog), "prog fd")
            sq_fd = self._queue_fd(maps["sqs"], AGENT_QUEUE)
            sq = SubmissionQueue(sq_fd)
            cq = libbpf.check_ptr(
                lib.ring_buffer__new(maps["cq"], self._sample, None, None), "the completion queue"
            )
        except OSError:
            lib.bpf_object__close(obj)
            raise
        marker = next(pin_dir.glob(f"owner-{os.getpid()}-*"))
        return _Loaded(obj, progs["kassist_validate"], progs["kassist_applied"], maps, pin_dir,
                       marker, sq, sq_fd, cq)  # fmt: skip

    @staticmethod
    def _queue_fd(sqs_fd: int, ext_id: int) -> int:
        # The submission queue of an extension id: the one in the map, else a new one.
        lib = libbpf.lib()
        key, inner_id = ctypes.c_uint32(ext_id), ctypes.c_uint32(0)
        if lib.bpf_map_lookup_elem(sqs_fd, ctypes.byref(key), ctypes.byref(inner_id)) == 0:
            return libbpf.check(lib.bpf_map_get_fd_by_id(inner_id.value), "open a queue")
        fd = libbpf.check(
            lib.bpf_map_create(libbpf.BPF_MAP_TYPE_USER_RINGBUF, f"kassist_sq{ext_id}".encode(),
                               0, 0, 256 * 1024, None),
            "create a submission queue",
        )  # fmt: skip
        value = ctypes.c_uint32(fd)
        libbpf.check(
            lib.bpf_map_update_elem(sqs_fd, ctypes.byref(key), ctypes.byref(value), libbpf.BPF_ANY),
            "add a submission queue",
        )
        return fd

    def _set_rate(self) -> None:
        loaded = self._require()
        slot = ctypes.c_uint32(0)
        limits = Limits(self.per_second, self.burst)
        libbpf.check(
            libbpf.lib().bpf_map_update_elem(loaded.maps["rate"], ctypes.byref(slot),
                                             ctypes.byref(limits), libbpf.BPF_ANY),
            "set the rate",
        )  # fmt: skip

    def _unstick(self) -> int:
        # An agent killed between reserving an entry in its queue and submitting it leaves
        # a record whose header says "busy" for ever: the kernel stops at it, and every
        # later entry would wait behind it. No producer is alive now (the queues are ours):
        # mark such records discarded, which the kernel skips. Counted in sequence[1].
        loaded = self._require()
        found = _discard_busy(loaded.sq_fd, 256 * 1024)
        if found:
            slot, total = ctypes.c_uint32(1), ctypes.c_uint64(0)
            lib = libbpf.lib()
            fd = loaded.maps["sequence"]
            lib.bpf_map_lookup_elem(fd, ctypes.byref(slot), ctypes.byref(total))
            total.value += found
            libbpf.check(
                lib.bpf_map_update_elem(fd, ctypes.byref(slot), ctypes.byref(total), 0),
                "count the discarded entries",
            )
        return found

    def _drain_leftovers(self) -> list[Verdict]:
        # What an earlier agent left: answers in the completion queue, entries in its
        # submission queue. Each is answered once here and never applied.
        with self._lock:
            left = self._consume()
            left += self._run(AGENT_QUEUE)
        return left

    def stop(self) -> list[Verdict]:
        """Answer what is pending, unpin everything, free it; return the orphans answered."""
        loaded = self._loaded
        if loaded is None:
            return []
        left = self._drain_leftovers()
        lib = libbpf.lib()
        with self._lock:
            self._loaded = None
            loaded.sq.close()
            lib.ring_buffer__free(loaded.cq)
            os.close(loaded.sq_fd)
            if loaded.inner_fd >= 0:
                os.close(loaded.inner_fd)
            lib.bpf_object__close(loaded.obj)
            for name in PINNED:
                (loaded.pin_dir / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                loaded.owner_dir.rmdir()
            with contextlib.suppress(OSError):
                loaded.pin_dir.rmdir()
            with contextlib.suppress(OSError):
                self.pin_root.rmdir()  # only when nothing else is left in it
        return left

    def _require(self) -> _Loaded:
        if self._loaded is None:
            raise ActionError("the BPF queues are not started", "call start() first")
        return self._loaded

    def _step(self, step: str) -> None:
        # The queues' own steps for the agent's step hook (fault-injection tests):
        # "queued" (entries in the submission queue, not run yet) and "answered" (answers
        # in the completion queue, not read yet). Production installs none.
        if self.on_step is not None:
            self.on_step(step)

    # --- rules ------------------------------------------------------------------------

    def publish(self, compiled: Compiled) -> None:
        """Swap in a compiled policy (only for queues that hold their own rules map)."""
        with self._lock:
            loaded = self._require()
            if self.rules_fd is not None:
                raise ActionError("these queues check the guard's rules", "reload the guard")
            self.generation += 1
            inner = publish_rules(loaded.maps["rules"], compiled, self.generation)
            old, loaded.inner_fd = loaded.inner_fd, inner
            if old >= 0:
                os.close(old)

    # --- submit, run, complete --------------------------------------------------------

    def validate(self, subs: Sequence[Submission]) -> list[Verdict]:
        """Submit entries to the agent's queue, let the kernel judge them, return each verdict.

        In the order of ``subs``; entries that do not fit one run are submitted in turns.

        :raises OSError: the kernel refused a step (nothing is applied then).
        """
        out: dict[int, Verdict] = {}
        with self._lock:
            loaded = self._require()
            todo = list(enumerate(subs))
            while todo:
                tags: dict[int, int] = {}  # the tag in the entry -> the index in subs
                for i, sub in todo:
                    if not loaded.sq.put(replace(sub, user_data=self._tag + 1).entry()):
                        break  # the queue is full: run the program, then go on
                    self._tag += 1
                    tags[self._tag] = i
                if not tags:
                    raise OSError(28, "the submission queue is full")
                self._step("queued")
                for v in self._run(AGENT_QUEUE):
                    if v.user_data in tags:
                        i = tags[v.user_data]
                        out[i] = replace(v, user_data=subs[i].user_data)
                    else:
                        self.orphans.append(v)
                todo = [(i, sub) for i, sub in todo if i not in out]
                if any(i in tags.values() for i, _sub in todo):
                    raise OSError(5, "the kernel did not answer every entry")
        return [out[i] for i in range(len(subs))]

    def _run(self, ext_id: int) -> list[Verdict]:
        # BPF_PROG_RUN until the queue is empty (each run answers what the completion
        # queue has room for), then read the answers. Under self._lock.
        loaded = self._loaded
        if loaded is None:
            return []
        out: list[Verdict] = []
        while True:
            ctx = RunCtx(ext_id=ext_id)
            ret = libbpf.run_program(loaded.validate_fd, ctx)
            if ret < 0:
                raise OSError(-ret, f"queue {ext_id}: {os.strerror(-ret)}")
            if ctx.drained < 0:
                raise OSError(-ctx.drained, f"drain queue {ext_id}: {os.strerror(-ctx.drained)}")
            if ctx.done:
                self._step("answered")
            out += self._consume()
            if ctx.done < ctx.budget or (ctx.budget == 0 and not out):
                return out

    def _consume(self) -> list[Verdict]:
        loaded = self._loaded
        if loaded is None:
            return []
        self._got = []
        libbpf.check(libbpf.lib().ring_buffer__consume(loaded.cq), "read the completion queue")
        got, self._got = self._got, []
        return got

    def _on_sample(self, _ctx: int, data: int, size: int) -> int:
        # inside ring_buffer__consume, on the calling thread
        raw = ctypes.string_at(data, min(size, ctypes.sizeof(CompletionEvent)))
        ev = CompletionEvent.from_buffer_copy(raw.ljust(ctypes.sizeof(CompletionEvent), b"\0"))
        verdict = _verdict(ev)
        self._got.append(verdict)
        if self.on_answer is not None:
            try:
                self.on_answer(verdict)
            except Exception:  # must not raise inside libbpf's callback: counted instead
                self.unrecorded += 1
        return 0

    # --- queues an extension writes itself ------------------------------------------

    def open_extension(self, uid: int, cgroup_id: int) -> tuple[int, int]:
        """Make a submission queue for one extension and register who it is.

        The extension writes that queue itself (:class:`~actions.enforce.ring.SubmissionQueue`
        over the fd); the kernel accounts and rate-limits what it finds there to ``uid`` and
        ``cgroup_id`` (from SO_PEERCRED), whatever the entries say.

        :return: the queue's id (for :meth:`kick`) and its fd (the caller hands it over,
            e.g. with SCM_RIGHTS, and closes its own copy).
        """
        with self._lock:
            loaded = self._require()
            lib = libbpf.lib()
            queues = libbpf.map_items(loaded.maps["sqs"], QueueId, QueueId)  # value: a map id
            taken = {k.id for k, _v in queues}
            ext_id = next(i for i in range(1, len(taken) + 2) if i not in taken)
            key, who = ctypes.c_uint32(ext_id), Extension(uid, 1, cgroup_id)
            libbpf.check(
                lib.bpf_map_update_elem(loaded.maps["extensions"], ctypes.byref(key),
                                        ctypes.byref(who), libbpf.BPF_ANY),
                "register the extension",
            )  # fmt: skip
            return ext_id, self._queue_fd(loaded.maps["sqs"], ext_id)

    def kick(self, ext_id: int) -> list[Verdict]:
        """Judge what an extension wrote into its queue; return each verdict (a dry run).

        :raises OSError: no such queue, or the kernel found it corrupt (its producer's
            doing: that queue only stops).
        """
        if ext_id == AGENT_QUEUE:
            raise ActionError("the agent's own queue is not an extension's", "")
        with self._lock:
            return self._run(ext_id)

    def close_extension(self, ext_id: int) -> None:
        """Forget an extension's queue (its producer's mapping stays valid until unmapped)."""
        with self._lock:
            loaded = self._require()
            key = ctypes.c_uint32(ext_id)
            for name in ("sqs", "extensions"):
                libbpf.lib().bpf_map_delete_elem(loaded.maps[name], ctypes.byref(key))

    def applied(self, uid: int, cgroup_id: int, count: int) -> None:
        """Count ``count`` applied (and verified) changes for an extension."""
        with self._lock:
            loaded = self._require()
            libbpf.run_program(loaded.applied_fd, AppliedCtx(uid, count, cgroup_id))

    # --- status -----------------------------------------------------------------------

    def accounting(self) -> list[dict[str, Any]]:
        """Return each extension's counters, read from the kernel's map."""
        loaded = self._loaded
        if loaded is None:
            return []
        return list(_accounts(loaded.maps["accounting"]))

    def sequence(self, slot: int = 0) -> int:
        """Return the last completion number the kernel gave (``slot`` 1: how many
        half-written entries were discarded, over every agent)."""
        loaded = self._require()
        key, value = ctypes.c_uint32(slot), ctypes.c_uint64(0)
        libbpf.lib().bpf_map_lookup_elem(loaded.maps["sequence"], ctypes.byref(key),
                                         ctypes.byref(value))  # fmt: skip
        return int(value.value)

    def positions(self) -> dict[str, dict[str, int]]:
        """Return each ring's producer and consumer positions, in records, read from the kernel.

        Positions only grow and are pinned with the rings, so they count every entry ever
        submitted (``sq``) and every answer ever written (``cq``), and what was read of each:
        equal counts mean nothing waits and nothing was lost.
        """
        loaded = self._require()
        return {
            "sq": _positions(loaded.sq_fd, ctypes.sizeof(Entry)),
            "cq": _positions(loaded.maps["cq"], ctypes.sizeof(CompletionEvent)),
        }

    def status(self) -> dict[str, Any]:
        """Return what the queues hold and what each extension did (for ``agent status``)."""
        loaded = self._loaded
        if loaded is None:
            return {"running": False}
        return {
            "running": True,
            "pin": str(loaded.pin_dir),
            "sequence": self.sequence(),
            "discarded": self.sequence(1),
            "positions": self.positions(),
            "rate": {"per_second": self.per_second, "burst": self.burst},
            "extensions": self.accounting(),
            "orphans": len(self.orphans),
            "unrecorded": self.unrecorded,
            "kernel_rules": list(KERNEL_RULES),
            "user_space_rules": list(USER_SPACE_RULES),
        }


#: A ring buffer record header's flags (``BPF_RINGBUF_BUSY_BIT``, ``..._DISCARD_BIT``).
BUSY, DISCARD = 1 << 31, 1 << 30


def _discard_busy(fd: int, size: int) -> int:
    # Walk a user ring buffer from the consumer to the producer; turn every record still
    # marked busy into a discarded one. Return how many. (The producer page and the
    # data are the producer's to write; the consumer page is read-only.)
    page = mmap.PAGESIZE
    with mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=0) as m:
        pos = int.from_bytes(m[:8], "little")
    found = 0
    with mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                   offset=page) as m:  # fmt: skip
        end = int.from_bytes(m[:8], "little")
        while pos < end:
            at = page + (pos & (size - 1))
            header = int.from_bytes(m[at : at + 4], "little")
            if header & BUSY:
                m[at : at + 4] = ((header & ~BUSY) | DISCARD).to_bytes(4, "little")
                found += 1
            pos += 8 + ((header & ~(BUSY | DISCARD)) + 7) // 8 * 8
    return found


def _positions(fd: int, record: int) -> dict[str, int]:
    # A BPF ring buffer's consumer position is on its first page, the producer's on the
    # second (both byte counts); each record takes an 8-byte header, 8-byte aligned.
    size = 8 + (record + 7) // 8 * 8
    page = mmap.PAGESIZE
    out = {}
    for name, offset in (("consumed", 0), ("produced", page)):
        with mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=offset) as m:
            out[name] = int.from_bytes(m[:8], "little") // size
    return out


def _accounts(fd: int) -> Iterator[dict[str, Any]]:
    for key, value in libbpf.map_items(fd, AccountKey, Account):
        refused = {REASONS.get(i, str(i)): int(n) for i, n in enumerate(value.by_reason) if n}
        yield {
            "uid": key.uid, "cgroup_id": key.cgroup_id, "submitted": value.submitted,
            "accepted": value.accepted, "refused": value.refused,
            "refused_by_reason": refused, "applied": value.applied,
        }  # fmt: skip


# --- the agent's use: the validator of record ------------------------------------------


def cgroup_of(pid: int, mount: Path | None = None) -> int:
    """Return a process's cgroup v2 id (its directory's inode), or 0 when it is gone.

    :param mount: where cgroup v2 is mounted (read from the mount table when not given).
    """
    mount = mount or capability.cgroup2_mount()
    if mount is None:
        return 0
    try:
        with open(f"/proc/{pid}/cgroup") as fh:  # plain strings: this runs per submission
            for line in fh:
                if line.startswith("0::"):
                    return os.stat(f"{mount}/{line[3:].strip().lstrip('/')}").st_ino
    except OSError:
        pass
    return 0


class KernelCheck:
    """The kernel's verdict on every recommendation the agent validates (the hook in
    :class:`actions.agent.Agent`).

    Each sysctl recommendation whose key resolves and whose value is canonical goes
    through the BPF queues with the key's current value; a refusal is an error of the
    changeset, whatever user space said, so the agent applies only what the kernel
    accepted. Where user space refused the same entry by the same rule, its own (more
    detailed) message stands; where the two disagree the kernel's refusal is added and
    the disagreement audited.

    :param on_verdicts: called with every call's verdicts (the audit).
    """

    def __init__(
        self,
        queues: Queues,
        roots: Roots,
        on_verdicts: Callable[[list[Verdict], list[str]], None] | None = None,
    ) -> None:
        self.queues = queues
        self.roots = roots
        self.on_verdicts = on_verdicts
        self._mount = capability.cgroup2_mount()
        self._cgroups: dict[int, tuple[float, int]] = {}  # pid -> (when read, cgroup id)
        self._per_uid: dict[int, set[int]] = {}  # uid -> the cgroups accounted apart

    def _identity(self, who: Mapping[str, Any]) -> tuple[int, int]:
        # (uid, cgroup id) of the peer, as SO_PEERCRED and /proc give them; the cgroup is
        # read again after a second (a peer that moves is accounted to its new cgroup then)
        # (at most MAX_CGROUPS_PER_UID of a user's cgroups apart: the rest are cgroup 0)
        pid, uid = int(who.get("pid", 0)), int(who.get("uid", 0))
        now = time.monotonic()
        when, cgroup = self._cgroups.get(pid, (0.0, 0))
        if now - when > 1.0:
            cgroup = cgroup_of(pid, self._mount) if pid else 0
            if len(self._cgroups) > 4096:
                self._cgroups.clear()
            self._cgroups[pid] = (now, cgroup)
        seen = self._per_uid.setdefault(uid, set())
        if cgroup not in seen:
            if len(seen) >= MAX_CGROUPS_PER_UID:
                return uid, 0
            seen.add(cgroup)
        return uid, cgroup

    def submissions(
        self, recs: Sequence[Recommendation], who: Mapping[str, Any]
    ) -> list[Submission]:
        """Return what the kernel checks of ``recs`` (``user_data``: the index in ``recs``)."""
        uid, cgroup = self._identity(who)
        out = []
        for i, rec in enumerate(recs):
            if rec.kind != "sysctl":
                continue  # a cgroup-sysctl program's policy names /proc/sys only
            try:
                knob = resolve(rec.kind, rec.target, self.roots, writable=False)
                new = canonical_value(rec.value, knob.key)
                old = knob.read()
            except (Rejected, OSError):
                continue  # the user-space rule (name, exists, value) answers it
            name = knob.path.relative_to(self.roots.proc_sys).as_posix()
            if len(name.encode()) >= NAME_LEN or len(new.encode()) >= VALUE_LEN:
                continue
            out.append(Submission(i, name, new, old[: VALUE_LEN - 1], uid, cgroup))
        return out

    def check(
        self, recs: Sequence[Recommendation], errors: Sequence[Rejected], who: Mapping[str, Any]
    ) -> list[Rejected]:
        """Return ``errors`` with every refusal of the kernel's that they do not already name."""
        subs = self.submissions(recs, who)
        try:
            verdicts = self.queues.validate(subs)
        except (OSError, ActionError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else exc.message
            failed = Rejected("kernel", "", f"the kernel's validator did not answer: {why}")
            return [*errors, failed]
        said = {(e.target, e.rule) for e in errors}
        out, disagree = list(errors), []
        for v in verdicts:
            if v.accepted:
                continue
            target = recs[v.user_data].target
            if (target, v.rule) in said:
                continue
            out.append(Rejected(v.rule, target, f"refused by the kernel's validator: {v.reason}"))
            if v.rule != "rate" and not any(e.target == target for e in errors):
                disagree.append(target)
        if self.on_verdicts is not None:
            self.on_verdicts(verdicts, disagree)
        return out

    def applied(self, who: Mapping[str, Any], count: int) -> None:
        """Count ``count`` applied changes for the extension ``who`` (SO_PEERCRED)."""
        uid, cgroup = self._identity(who)
        with contextlib.suppress(OSError, ActionError):
            self.queues.applied(uid, cgroup, count)
