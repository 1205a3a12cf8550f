"""Load, attach, reload, watch and detach the in-kernel sysctl enforcement.

:class:`Enforcer` is the whole API: ``start(table, lockdown, guard)``,
``reload(table)``, ``refusals()``, ``status()``, ``stop()``.

**Atomic reload.** The guard program reaches its rules through a one-slot
``BPF_MAP_TYPE_ARRAY_OF_MAPS``. A reload builds a *new* inner hash map from
user space, fills it completely, then replaces the slot with one
``bpf_map_update_elem`` (the kernel swaps one pointer); the old inner map is
never written again and the kernel frees it after the programs still running
on it finish (RCU). So each program run sees one generation, whole: never a
mix of old and new rules. The kernel also waits for that grace period before
the swap returns (``maybe_wait_bpf_programs``, most of a reload's ~15 ms), so
when :meth:`Enforcer.reload` returns, no program still runs on the old rules.
Every rule carries its generation number, and each refusal reports the
generation that refused it.

**Pinning.** Links and the rules map are pinned under
``/sys/fs/bpf/kassist/run-<pid>-<start>-<time>/`` (``start``: the agent's start time
in clock ticks, from ``/proc/<pid>/stat``, so that a reused pid is not taken for a
live agent). A pinned link stays attached when the agent dies, so the kernel keeps
refusing with the last rules it was given (failing safe) until the next agent
starts: that one attaches its own programs first, then detaches and unpins the old
run (make before break: no moment without enforcement) and says so in one line; an
agent started *without* enforcement removes such a run, in one line, so that nothing
enforces that ``status`` does not show (:func:`remove_stale_runs`). A run of an agent
that is still alive is never touched: a second agent on the same pin root refuses to
start. A clean ``stop()`` (SIGTERM, enforcement turned off) detaches and unpins
everything it made, and closes every fd, so no program or map remains.

**The agent's own writes.** The guard lets the agent's process through (it validates
its own writes, and a rollback may restore a value from before the policy). The
process is named in the kernel by the program ``kassist_enroll``, which the agent
runs with ``BPF_PROG_RUN`` at start and on every reload: it records the caller's
thread-group id, its group leader's start time and its cgroup. Another process that
joins the agent's cgroup is not the agent; a process that gets a dead agent's pid
has another start time.

**Fail closed.** Enforcement that was asked for and cannot run is an error
(:class:`EnforceUnavailable`, :class:`ActionError`): a cgroup that is not one, a
lockdown over the agent itself, a policy row the map cannot hold. With
``best_effort`` the enforcer runs with what it can and lists in :attr:`unguarded`
every cgroup it does not guard and in ``status()['unfit']`` every row it left out.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from actions.enforce import capability, libbpf
from actions.enforce.build import DEFAULT_CACHE, object_path
from actions.enforce.maps import (
    MAX_RULES,
    MODES,
    NAME_LEN,
    REASONS,
    Compiled,
    ListKeys,
    RefusalEvent,
    Rule,
    RuleKey,
    RuleValue,
    SpecOf,
    compile_rules,
    decode,
    proc_sys_keys,
)
from actions.errors import ActionError
from actions.text import printable

DEFAULT_PIN_ROOT = Path("/sys/fs/bpf/kassist")
DEFAULT_STATE = Path("/run/kassist/enforce.json")
PROGRAMS = {"lockdown": b"kassist_lockdown", "guard": b"kassist_guard"}
ENROLL = b"kassist_enroll"
_POLL_MS = 200
_STATE_EVERY_S = 0.5


class EnforceUnavailable(ActionError):
    """In-kernel enforcement cannot run here; :attr:`problems` says why, one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("in-kernel enforcement unavailable: " + "; ".join(problems), "")
        self.problems = tuple(problems)


@dataclass(frozen=True)
class Unguarded:
    """A cgroup enforcement was asked for and does not cover (best effort only).

    :param mode: ``lockdown`` or ``guard``.
    :param cgroup: the path as it was given.
    :param why: one line.
    """

    mode: str
    cgroup: str
    why: str

    def line(self) -> str:
        """Return it as the one line the agent logs."""
        return f"--enforce-{self.mode} {self.cgroup} is NOT enforced: {self.why}"


@dataclass(frozen=True)
class Refusal:
    """A sysctl write the kernel refused, as the ring buffer reported it.

    :param pid: the writer's process id (tgid).
    :param comm: its ``comm`` (``task->comm``, 15 bytes at most).
    :param cgroup: its cgroup v2 path relative to the mount (``/kassist-x``), or ``#<id>``.
    :param key: the dotted sysctl key.
    :param value: the value it tried to write (up to 127 bytes, trailing newline removed).
    :param time: when, in seconds since the epoch.
    :param mode: ``lockdown`` or ``guard``.
    :param reason: why, in words.
    :param generation: the rules generation that refused it (0: lockdown).
    """

    pid: int
    comm: str
    cgroup: str
    key: str
    value: str
    time: float
    mode: str
    reason: str
    uid: int
    generation: int

    def to_dict(self) -> dict[str, Any]:
        """Return the refusal as plain data (audit and status)."""
        return asdict(self)


@dataclass(frozen=True)
class Attachment:
    """One program attached to one cgroup through a pinned link.

    :param mode: ``lockdown`` or ``guard``.
    :param cgroup: the cgroup directory.
    :param cgroup_id: its id (the directory's inode number on cgroup2).
    :param link_id: the kernel's id of the ``bpf_link``.
    :param pin: where the link is pinned.
    """

    mode: str
    cgroup: Path
    cgroup_id: int
    link_id: int
    pin: Path


@dataclass
class _Loaded:
    obj: int
    prog_fds: dict[str, int]
    rules_fd: int
    ring_fd: int
    lost_fd: int
    agent_fd: int
    enroll_fd: int
    run_dir: Path
    inner_fd: int = -1
    links: list[tuple[Attachment, int]] = field(default_factory=list)


class _AgentId(ctypes.Structure):
    # struct agent_id in kassist_sysctl.bpf.c
    _fields_ = [
        ("start_time", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("tgid", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


def cgroup_id(path: Path) -> int:
    """Return a cgroup v2 directory's id (``kernfs`` node id = its inode number)."""
    return os.stat(path).st_ino


def _self_cgroup(mount: Path) -> Path | None:
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return mount / line[3:].lstrip("/")
    except OSError:
        pass
    return None


def _text(raw: bytes) -> str:
    # Attacker-chosen bytes (a comm, a value, a cgroup name) shown on an admin's
    # terminal: bytes that are not UTF-8 become \xNN, then the one sanitiser escapes
    # every control character.
    return printable(raw.decode("utf-8", "backslashreplace"))


def _start_ticks(pid: int) -> int | None:
    # /proc/<pid>/stat field 22: the process's start time in clock ticks since boot
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def owned_name(prefix: str, pid: int) -> str:
    """Return ``<prefix>-<pid>-<start ticks>-<ns>``: a name that says which process made it."""
    return f"{prefix}-{pid}-{_start_ticks(pid) or 0}-{time.time_ns()}"


def _is_run(path: Path) -> bool:
    return path.name.startswith("run-") and path.is_dir()


def owner(path: Path) -> tuple[int, bool]:
    """Return (pid, alive) for a name made by :func:`owned_name`.

    Alive: that pid runs now and started when the name says it did (not a reused pid).
    """
    parts = path.name.split("-")
    try:
        pid = int(parts[1])
        start = int(parts[2]) if len(parts) == 4 else None
    except (IndexError, ValueError):
        return 0, False
    return pid, start is not None and start != 0 and _start_ticks(pid) == start


def _boot_to_epoch(boot_ns: int) -> float:
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME) + boot_ns / 1e9


def read_rules(rules_fd: int) -> tuple[list[Rule], int]:
    """Read back the rules the kernel holds now, through the outer map's fd.

    :return: the rules sorted by key, and their generation (0: none published, or none).
    """
    lib = libbpf.lib()
    slot, inner_id = ctypes.c_uint32(0), ctypes.c_uint32(0)
    if lib.bpf_map_lookup_elem(rules_fd, ctypes.byref(slot), ctypes.byref(inner_id)) < 0:
        return [], 0
    fd = libbpf.check(lib.bpf_map_get_fd_by_id(inner_id.value), "open the rules map")
    out: list[Rule] = []
    generation = 0
    try:
        for key, value in libbpf.map_items(fd, RuleKey, RuleValue):
            rule, generation = decode(key, value)
            if rule is not None:
                out.append(rule)
    finally:
        os.close(fd)
    return sorted(out, key=lambda r: r.key), generation


class Enforcer:
    """The kernel side of the agent: BPF programs on cgroups, fed with the policy.

    :param pin_root: the bpffs directory this enforcer owns.
    :param cache_dir: where the compiled object is kept (keyed by the source's hash).
    :param on_refusal: called on the reader thread for each refusal (e.g. to audit it).
    :param state_file: a JSON file with what is attached and the recent refusals, for
        ``kassist agent enforce status`` (``None``: none).
    :param best_effort: enforce what can be enforced and list the rest (:attr:`unguarded`,
        the compiled policy's ``unfit`` rows) instead of refusing to start.
    :param list_keys: lists the kernel's sysctls (glob expansion; tests give their own).
    """

    def __init__(
        self,
        pin_root: Path = DEFAULT_PIN_ROOT,
        cache_dir: Path = DEFAULT_CACHE,
        on_refusal: Callable[[Refusal], None] | None = None,
        state_file: Path | None = DEFAULT_STATE,
        keep_recent: int = 50,
        best_effort: bool = False,
        list_keys: ListKeys = proc_sys_keys,
    ) -> None:
        self.pin_root = pin_root
        self.cache_dir = cache_dir
        self.on_refusal = on_refusal
        self.state_file = state_file
        self.best_effort = best_effort
        self.list_keys = list_keys
        self.generation = 0
        self.compiled: Compiled | None = None
        self.recent: deque[Refusal] = deque(maxlen=keep_recent)
        self._queue: deque[Refusal] = deque(maxlen=4096)
        self._ready = threading.Condition()
        self._lock = threading.Lock()
        self._loaded: _Loaded | None = None
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._ring: int = 0
        self._sample = libbpf.SampleFn(self._on_sample)
        self._cgroup_names: dict[int, str] = {}
        self._mount: Path | None = None
        self.dropped = 0
        #: One line each: what the operator should know about how enforcement runs.
        self.notices: list[str] = []
        #: What was asked for and is not enforced (best effort only; empty otherwise).
        self.unguarded: list[Unguarded] = []
        #: The agent's cgroup when it enrolled (its writes pass the guard), or ``None``.
        self.agent_cgroup: str | None = None
        #: The agent's identity as the kernel holds it: tgid, start_time, cgroup_id.
        self.agent: dict[str, int] = {}
        self._state_dirty = False
        self._state_at = 0.0

    @property
    def running(self) -> bool:
        """Tell whether the programs are loaded (and attached where they could be)."""
        return self._loaded is not None

    @property
    def rules_fd(self) -> int:
        """The outer rules map (the BPF queues' validator checks this same policy)."""
        return self._require().rules_fd

    # --- start / stop -----------------------------------------------------------------

    def start(
        self,
        table: Sequence[Mapping[str, Any]],
        lockdown: Sequence[Path] = (),
        guard: Sequence[Path] = (),
        spec_of: SpecOf | None = None,
    ) -> Compiled:
        """Compile the policy, load the programs, attach them, and start reading refusals.

        As root, the BPF file system is mounted at /sys/fs/bpf when it is missing (a line
        in :attr:`notices` says so).

        :param table: :meth:`actions.policy.Policy.table` rows.
        :param lockdown: cgroups where every sysctl write is refused.
        :param guard: cgroups where writes to managed keys must stay in policy.
        :param spec_of: the validator's spec of a key (see :func:`compile_rules`).
        :raises EnforceUnavailable: what this machine lacks, one line each.
        :raises ActionError: a bad cgroup, a lockdown over the agent, a rule the map cannot
            hold (unless best effort), a live agent on the same pin root, a load failure.
        """
        if self._loaded is not None:
            raise ActionError("enforcement is already started", "call reload() instead")
        mounted = capability.ensure_bpffs(self.pin_root)
        if mounted:
            self.notices.append(mounted)
        missing = capability.problems((), self.pin_root)
        if missing:
            raise EnforceUnavailable(missing)
        self._mount = capability.cgroup2_mount()
        wanted = [("lockdown", Path(c)) for c in lockdown] + [("guard", Path(c)) for c in guard]
        self.unguarded = self._refused(wanted)
        if self.unguarded and not self.best_effort:
            first = self.unguarded[0]
            raise ActionError(
                f"--enforce-{first.mode} {first.cgroup}: {first.why}",
                "fix the path, or serve with --enforce-best-effort to run without it",
            )
        compiled = self._compile(table, spec_of)
        stale = self._stale_runs()
        loaded = self._load()
        self._loaded = loaded
        try:
            self._publish(compiled)
            skip = {(u.mode, u.cgroup) for u in self.unguarded}
            for mode, cg in dict.fromkeys((m, c.resolve()) for m, c in wanted
                                          if (m, str(c)) not in skip):  # fmt: skip
                self._attach(mode, cg)  # once each
            for old in stale:
                what = self._describe_run(old)
                detach_run(old)
                self.notices.append(f"replaced the pinned enforcement of an earlier agent ({what})")
            self._start_reader()
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return compiled

    def _compile(self, table: Sequence[Mapping[str, Any]], spec_of: SpecOf | None) -> Compiled:
        compiled = compile_rules(table, self.list_keys, spec_of)
        return compiled if self.best_effort else compiled.require_fit()

    def _refused(self, wanted: Sequence[tuple[str, Path]]) -> list[Unguarded]:
        # What cannot be attached: paths that are not cgroup v2 directories, and a lockdown
        # over the agent's own cgroup (it would refuse the agent's own writes).
        out = [
            Unguarded(mode, str(cg), why.removeprefix(f"{cg} "))
            for mode, cg in wanted
            for _bad, why in capability.cgroup_problems([cg], self._mount)
        ]
        bad = {(u.mode, u.cgroup) for u in out}
        mine = _self_cgroup(self._mount) if self._mount is not None else None
        if mine is not None:
            mine = mine.resolve()
            for mode, cg in wanted:
                real = cg.resolve()
                if (
                    mode == "lockdown"
                    and (mode, str(cg)) not in bad
                    and (real == mine or real in mine.parents)
                ):
                    why = (f"holds the agent itself (its cgroup is {mine}): lock down the "
                           "assistant's cgroup instead")  # fmt: skip
                    out.append(Unguarded(mode, str(cg), why))
        return out

    def _stale_runs(self) -> list[Path]:
        # Runs left pinned by earlier agents (replaced after our own attach); a live agent's
        # run is never taken over.
        runs = (
            [d for d in sorted(self.pin_root.iterdir()) if _is_run(d)]
            if self.pin_root.is_dir()
            else []
        )
        for run in runs:
            pid, alive = owner(run)
            if alive and pid != os.getpid():
                raise ActionError(
                    f"{run} belongs to a running agent (pid {pid}): one agent per pin root",
                    "stop that agent first",
                )
        return runs

    def _describe_run(self, run: Path) -> str:
        pid, _alive = owner(run)
        where = ", ".join(
            f"{a['mode']} {self._cgroup_by_id(a['cgroup_id'])}"
            for r in pinned_status_of(run)
            for a in r["attachments"]
        )
        return f"pid {pid}, {run.name}: {where or 'nothing attached'}"

    def _cgroup_by_id(self, cgid: int) -> str:
        mount = self._mount or capability.cgroup2_mount()
        if mount is not None:
            for dirpath, _dirs, _files in os.walk(mount):
                with contextlib.suppress(OSError):
                    if os.stat(dirpath).st_ino == cgid:
                        return printable(dirpath)
        return f"cgroup id {cgid}"

    def _load(self) -> _Loaded:
        lib = libbpf.lib()
        path = object_path(self.cache_dir)
        obj = libbpf.check_ptr(lib.bpf_object__open_file(str(path).encode(), None), f"open {path}")
        try:
            libbpf.check(lib.bpf_object__load(obj), "the kernel refused the BPF program")
            progs = {}
            for mode, name in [*PROGRAMS.items(), ("enroll", ENROLL)]:
                prog = libbpf.check_ptr(lib.bpf_object__find_program_by_name(obj, name), "prog")
                progs[mode] = libbpf.check(lib.bpf_program__fd(prog), "prog fd")
            fds = {}
            for name in (b"rules", b"refusals", b"lost", b"agent"):
                m = libbpf.check_ptr(lib.bpf_object__find_map_by_name(obj, name), "map")
                fds[name] = libbpf.check(lib.bpf_map__fd(m), "map fd")
            run_dir = self.pin_root / owned_name("run", os.getpid())
            self.pin_root.mkdir(mode=0o700, exist_ok=True)
            run_dir.mkdir(mode=0o700)
            libbpf.check(lib.bpf_obj_pin(fds[b"rules"], str(run_dir / "rules").encode()), "pin")
        except OSError as exc:
            lib.bpf_object__close(obj)
            raise ActionError(f"cannot load the BPF enforcement: {exc.strerror}", "") from None
        enroll = progs.pop("enroll")
        return _Loaded(obj, progs, fds[b"rules"], fds[b"refusals"], fds[b"lost"],
                       fds[b"agent"], enroll, run_dir)  # fmt: skip

    def _enroll(self) -> None:
        # "This process is the agent": the kernel records the caller's identity (see the
        # module's docstring). Run at start and on every reload.
        loaded = self._require()
        ret = libbpf.run_program(loaded.enroll_fd)
        if ret != 0:
            raise OSError(-ret if ret < 0 else 5, "enroll the agent")
        ident = _AgentId()
        slot = ctypes.c_uint32(0)
        libbpf.check(
            libbpf.lib().bpf_map_lookup_elem(
                loaded.agent_fd, ctypes.byref(slot), ctypes.byref(ident)
            ),
            "read the agent's identity",
        )
        self.agent = {
            "tgid": ident.tgid,
            "start_time": ident.start_time,
            "cgroup_id": ident.cgroup_id,
        }
        mine = _self_cgroup(self._mount) if self._mount is not None else None
        self.agent_cgroup = str(mine) if mine is not None else None

    def _attach(self, mode: str, cg: Path) -> None:
        loaded = self._require()
        lib = libbpf.lib()
        fd = os.open(cg, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            link = lib.bpf_link_create(loaded.prog_fds[mode], fd, libbpf.BPF_CGROUP_SYSCTL, None)
            libbpf.check(link, f"attach {mode} to {cg}")
        except OSError as exc:
            raise ActionError(f"cannot attach {mode} to {cg}: {exc.strerror}", "") from None
        finally:
            os.close(fd)
        cgid = cgroup_id(cg)
        pin = loaded.run_dir / f"{mode}-{cgid}"
        try:
            info = libbpf.link_info(link)
            libbpf.check(lib.bpf_obj_pin(link, str(pin).encode()), f"pin {pin}")
        except OSError as exc:
            lib.bpf_link_detach(link)  # not pinned, not recorded: undo it here
            os.close(link)
            raise ActionError(f"cannot pin {pin}: {exc.strerror}", "") from None
        loaded.links.append((Attachment(mode, cg, cgid, info.id, pin), link))
        self._cgroup_names[cgid] = self._cgroup_name(cg)

    def stop(self) -> None:
        """Detach every program, unpin the run, close every fd, stop the reader."""
        self._stop.set()
        if self._reader is not None:
            self._reader.join()
            self._reader = None
        with self._lock:
            loaded, self._loaded = self._loaded, None
        if loaded is None:
            return
        lib = libbpf.lib()
        for _att, link in loaded.links:
            with contextlib.suppress(OSError):
                libbpf.check(lib.bpf_link_detach(link), "detach")
            os.close(link)
        if self._ring:
            lib.ring_buffer__free(self._ring)
            self._ring = 0
        if loaded.inner_fd >= 0:
            os.close(loaded.inner_fd)
        lib.bpf_object__close(loaded.obj)
        detach_run(loaded.run_dir)
        with contextlib.suppress(OSError):
            self.pin_root.rmdir()  # only when no other run is left in it
        if self.state_file is not None:
            self.state_file.unlink(missing_ok=True)
        with self._ready:
            self._ready.notify_all()

    def _require(self) -> _Loaded:
        if self._loaded is None:
            raise ActionError("enforcement is not started", "call start() first")
        return self._loaded

    # --- rules ------------------------------------------------------------------------

    def reload(self, table: Sequence[Mapping[str, Any]], spec_of: SpecOf | None = None) -> Compiled:
        """Compile a changed policy and swap it in whole (see the module's docstring).

        The agent's identity is enrolled again.

        :raises ActionError: the policy cannot be compiled (the old rules stay).
        """
        compiled = self._compile(table, spec_of)
        self._publish(compiled)
        self._write_state()
        return compiled

    def _publish(self, compiled: Compiled) -> None:
        with self._lock:
            loaded = self._require()
            generation = self.generation + 1
            inner = publish_rules(loaded.rules_fd, compiled, generation)
            try:
                self._enroll()
            except OSError as exc:
                os.close(inner)
                raise ActionError(f"cannot enroll the agent: {exc.strerror}", "") from None
            old, loaded.inner_fd = loaded.inner_fd, inner
            if old >= 0:
                os.close(old)  # the kernel still holds it until no program runs on it
            self.generation = generation
            self.compiled = compiled

    # --- refusals ---------------------------------------------------------------------

    def _start_reader(self) -> None:
        loaded = self._require()
        lib = libbpf.lib()
        self._ring = libbpf.check_ptr(
            lib.ring_buffer__new(loaded.ring_fd, self._sample, None, None), "ring buffer"
        )
        self._stop.clear()
        self._reader = threading.Thread(target=self._read, name="kassist-enforce", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        lib = libbpf.lib()
        while not self._stop.is_set():
            ret = lib.ring_buffer__poll(self._ring, _POLL_MS)  # ctypes drops the GIL here
            if ret < 0 and -ret != 4:  # EINTR is not an error
                time.sleep(_POLL_MS / 1000)
            if self._state_dirty and time.monotonic() - self._state_at > _STATE_EVERY_S:
                self._write_state()  # at most twice a second, however fast refusals come

    def _on_sample(self, _ctx: int, data: int, size: int) -> int:
        # Runs on the reader thread, inside ring_buffer__poll; must not raise.
        try:
            raw = ctypes.string_at(data, min(size, ctypes.sizeof(RefusalEvent)))
            event = RefusalEvent.from_buffer_copy(raw.ljust(ctypes.sizeof(RefusalEvent), b"\0"))
            refusal = self._refusal(event)
            self.recent.append(refusal)
            with self._ready:
                if len(self._queue) == self._queue.maxlen:
                    self.dropped += 1
                self._queue.append(refusal)
                self._ready.notify_all()
            if self.on_refusal is not None:
                self.on_refusal(refusal)
            self._state_dirty = True
        except Exception:  # a bad record, or a failing callback, must not stop the reader
            self.dropped += 1
        return 0

    def _refusal(self, ev: RefusalEvent) -> Refusal:
        return Refusal(
            pid=ev.pid,
            comm=_text(ev.comm),
            cgroup=self._cgroup_of(ev.cgroup_id),
            key=_text(ev.name).replace("/", "."),
            value=_text(ev.value.rstrip(b"\n")),
            time=round(_boot_to_epoch(ev.boot_ns), 6),
            mode=MODES.get(ev.mode, str(ev.mode)),
            reason=REASONS.get(ev.reason, str(ev.reason)),
            uid=ev.uid,
            generation=ev.generation,
        )

    def refusals(self, timeout: float | None = None) -> Iterator[Refusal]:
        """Yield refusals as they arrive, until ``timeout`` seconds pass with none, or stop.

        :param timeout: the longest wait for the next refusal (``None``: until stop).
        """
        while True:
            with self._ready:
                if not self._queue and not self._stop.is_set():
                    self._ready.wait(timeout)
                if not self._queue:
                    return
                item = self._queue.popleft()
            yield item

    def _cgroup_name(self, path: Path) -> str:
        mount = self._mount
        if mount is None:
            return str(path)
        rel = str(path.resolve().relative_to(mount))
        # a delegated cgroup's name is chosen by its owner: escaped like a value
        return printable("/" + rel if rel != "." else "/")

    def _cgroup_of(self, cgid: int) -> str:
        if cgid not in self._cgroup_names:
            # A writer in a child of an attached cgroup: find it below those, once per id
            # (a cgroup already gone is remembered as its id).
            found = f"#{cgid}"
            for att in self.attachments():
                for dirpath, _dirs, _files in os.walk(att.cgroup):
                    with contextlib.suppress(OSError):
                        if os.stat(dirpath).st_ino == cgid:
                            found = self._cgroup_name(Path(dirpath))
                            break
            if len(self._cgroup_names) > 65536:
                self._cgroup_names.clear()
            self._cgroup_names[cgid] = found
        return self._cgroup_names[cgid]

    def lost(self) -> int:
        """Return how many refusals found the ring buffer full (refused, not reported)."""
        loaded = self._loaded
        if loaded is None:
            return 0
        lib = libbpf.lib()
        per_cpu = (ctypes.c_uint64 * max(1, lib.libbpf_num_possible_cpus()))()
        slot = ctypes.c_uint32(0)
        if lib.bpf_map_lookup_elem(loaded.lost_fd, ctypes.byref(slot), per_cpu) < 0:
            return 0
        return int(sum(per_cpu))

    # --- status -----------------------------------------------------------------------

    def attachments(self) -> list[Attachment]:
        """Return what this enforcer attached (empty when stopped)."""
        loaded = self._loaded
        return [att for att, _fd in loaded.links] if loaded else []

    def status(self) -> dict[str, Any]:
        """Return what is attached where, the rules read back from the kernel, and refusals.

        ``unguarded`` lists every cgroup asked for and not enforced (best effort), and
        ``unfit`` every policy row the kernel map does not hold.
        """
        loaded = self._loaded
        if loaded is None:
            return {
                "enabled": False,
                "best_effort": self.best_effort,
                "unguarded": [asdict(u) for u in self.unguarded],
                "notices": list(self.notices),
            }
        rules, generation = read_rules(loaded.rules_fd)
        out = self._state()
        out["kernel_generation"] = generation
        out["rules"] = [r.to_dict() for r in rules]
        for att, fd in loaded.links:
            info = libbpf.link_info(fd)
            row = next(a for a in out["attachments"] if a["link_id"] == att.link_id)
            row["attached"] = info.cgroup_id == att.cgroup_id
        return out

    def _state(self) -> dict[str, Any]:
        loaded = self._loaded
        compiled = self.compiled
        return {
            "enabled": loaded is not None,
            "pid": os.getpid(),
            "pin": str(loaded.run_dir) if loaded else None,
            "generation": self.generation,
            "best_effort": self.best_effort,
            "agent_cgroup": self.agent_cgroup,
            "agent": dict(self.agent),
            "unguarded": [asdict(u) for u in self.unguarded],
            "unfit": [list(u) for u in compiled.unfit] if compiled else [],
            "globs": [g.pattern for g in compiled.globs] if compiled else [],
            "notices": list(self.notices),
            "attachments": [
                {**asdict(a), "cgroup": str(a.cgroup), "pin": str(a.pin)}
                for a in self.attachments()
            ],
            "skipped": [list(s) for s in compiled.skipped] if compiled else [],
            "refusals": [r.to_dict() for r in list(self.recent)],  # one atomic copy
            "dropped": self.dropped + self.lost(),
        }

    def _write_state(self) -> None:
        path = self.state_file
        self._state_dirty, self._state_at = False, time.monotonic()
        if path is None or self._loaded is None:
            return
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
            tmp = path.with_name(f".{path.name}.{threading.get_ident()}")
            # 0640 like the audit log: refusals name other users' processes and values
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self._state(), indent=1))
            os.replace(tmp, path)


def publish_rules(outer_fd: int, compiled: Compiled, generation: int) -> int:
    """Build a new inner rules map, fill it whole, and swap it into the outer map's slot.

    :return: the new inner map's fd (the caller closes the one it replaces).
    :raises ActionError: the kernel refused a step (the old rules stay).
    """
    lib = libbpf.lib()
    inner = libbpf.check(
        lib.bpf_map_create(libbpf.BPF_MAP_TYPE_HASH, b"kassist_rules", NAME_LEN,
                           ctypes.sizeof(RuleValue), MAX_RULES, None),
        "create the rules map",
    )  # fmt: skip
    try:
        _fill(inner, compiled.entries(generation))
        slot, fd = ctypes.c_uint32(0), ctypes.c_uint32(inner)
        libbpf.check(
            lib.bpf_map_update_elem(outer_fd, ctypes.byref(slot), ctypes.byref(fd), libbpf.BPF_ANY),
            "swap the rules in",
        )
    except OSError as exc:
        os.close(inner)
        raise ActionError(f"cannot publish the rules: {exc.strerror}", "") from None
    return inner


def _fill(fd: int, entries: Sequence[tuple[RuleKey, RuleValue]]) -> None:
    # One BPF_MAP_UPDATE_BATCH call for the whole map (hash maps have it since Linux
    # 5.6); element by element where the kernel lacks it.
    lib = libbpf.lib()
    if not entries:
        return
    keys = (RuleKey * len(entries))(*(k for k, _v in entries))
    values = (RuleValue * len(entries))(*(v for _k, v in entries))
    count = ctypes.c_uint32(len(entries))
    ret = lib.bpf_map_update_batch(fd, keys, values, ctypes.byref(count), None)
    if ret == 0 and count.value == len(entries):
        return
    for key, value in entries:
        libbpf.check(
            lib.bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), libbpf.BPF_ANY),
            f"store the rule for {key.name.decode()}",
        )


def detach_run(run_dir: Path) -> None:
    """Detach the links pinned in one run directory, unpin them and remove it."""
    lib = libbpf.lib()
    for pin in sorted(run_dir.iterdir()) if run_dir.is_dir() else []:
        if pin.name.startswith(tuple(PROGRAMS)):
            fd = lib.bpf_obj_get(str(pin).encode())
            if fd >= 0:
                lib.bpf_link_detach(fd)
                os.close(fd)
        pin.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()


def pinned_status_of(run: Path) -> list[dict[str, Any]]:
    """Read one pinned run from the kernel: its links and rules (``[]``: not a run)."""
    lib = libbpf.lib()
    entry: dict[str, Any] = {"pin": str(run), "attachments": [], "rules": []}
    if not run.is_dir():
        return []
    for pin in sorted(run.iterdir()):
        fd = lib.bpf_obj_get(str(pin).encode())
        if fd < 0:
            continue
        try:
            if pin.name == "rules":
                rules, entry["generation"] = read_rules(fd)
                entry["rules"] = [r.to_dict() for r in rules]
            else:
                info = libbpf.link_info(fd)
                mode = pin.name.split("-", 1)[0]
                entry["attachments"].append(
                    {"mode": mode, "cgroup_id": info.cgroup_id, "link_id": info.id,
                     "prog_id": info.prog_id, "attached": info.cgroup_id != 0}
                )  # fmt: skip
        finally:
            os.close(fd)
    return [entry]


def pinned_status(pin_root: Path = DEFAULT_PIN_ROOT) -> list[dict[str, Any]]:
    """Read what is pinned under ``pin_root`` from the kernel: links and rules, per run.

    For ``kassist agent enforce status`` (as root): it needs no running agent.
    """
    runs = sorted(d for d in pin_root.iterdir() if _is_run(d)) if pin_root.is_dir() else []
    return [entry for run in runs for entry in pinned_status_of(run)]


def remove_stale_runs(pin_root: Path = DEFAULT_PIN_ROOT) -> list[str]:
    """Detach and unpin the runs earlier agents left under ``pin_root``; one line each.

    For an agent started without enforcement: a run pinned by an earlier one would go
    on enforcing while ``status`` says there is none. A live agent's run is left alone
    (and named: enforcement goes on there, by that agent's choice).
    """
    if not capability.parse_mounts(capability.read_mountinfo(), "bpf") or not pin_root.is_dir():
        return []
    lines = []
    probe = Enforcer(pin_root, state_file=None)
    for run in sorted(d for d in pin_root.iterdir() if _is_run(d)):
        pid, alive = owner(run)
        what = probe._describe_run(run)
        if alive and pid != os.getpid():
            lines.append(f"pinned enforcement of a running agent left in place ({what})")
            continue
        detach_run(run)
        lines.append(
            f"removed the pinned enforcement of an earlier agent ({what}): "
            "enforcement was not requested"
        )
    with contextlib.suppress(OSError):
        pin_root.rmdir()
    return lines
