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
``/sys/fs/bpf/kassist/run-<pid>-<time>/``. A pinned link stays attached when the
agent dies, so the kernel keeps refusing with the last rules it was given
(failing safe) until the next agent starts: that one attaches its own programs
first, then detaches and unpins the old run (make before break: no moment
without enforcement). A clean ``stop()`` (SIGTERM, enforcement turned off)
detaches and unpins everything it made, and closes every fd, so no program or
map remains. Only runs under this enforcer's own pin root are ever touched.
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
    RefusalEvent,
    Rule,
    RuleKey,
    RuleValue,
    compile_rules,
    decode,
)
from actions.errors import ActionError

DEFAULT_PIN_ROOT = Path("/sys/fs/bpf/kassist")
DEFAULT_STATE = Path("/run/kassist/enforce.json")
PROGRAMS = {"lockdown": b"kassist_lockdown", "guard": b"kassist_guard"}
_POLL_MS = 200
_STATE_EVERY_S = 0.5


class EnforceUnavailable(ActionError):
    """In-kernel enforcement cannot run here; :attr:`problems` says why, one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(
            "in-kernel enforcement unavailable: " + "; ".join(problems),
            "the agent runs without it (its own checks still apply)",
        )
        self.problems = tuple(problems)


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
    run_dir: Path
    inner_fd: int = -1
    links: list[tuple[Attachment, int]] = field(default_factory=list)


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


def printable(raw: bytes) -> str:
    r"""Return attacker-chosen bytes (a comm, a value) as printable ASCII, escaping the rest.

    A refused value is shown on an admin's terminal: no control sequence may pass.

    >>> printable(b"99999\x1b[2J")
    '99999\\x1b[2J'
    """
    return "".join(chr(b) if 32 <= b < 127 else f"\\x{b:02x}" for b in raw)


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
        key, nxt, value = RuleKey(), RuleKey(), RuleValue()
        prev: RuleKey | None = None
        while lib.bpf_map_get_next_key(fd, None if prev is None else ctypes.byref(prev),
                                       ctypes.byref(nxt)) == 0:  # fmt: skip
            ctypes.memmove(ctypes.byref(key), ctypes.byref(nxt), ctypes.sizeof(key))
            if lib.bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value)) == 0:
                rule, generation = decode(key, value)
                out.append(rule)
            prev = RuleKey.from_buffer_copy(key)
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
    """

    def __init__(
        self,
        pin_root: Path = DEFAULT_PIN_ROOT,
        cache_dir: Path = DEFAULT_CACHE,
        on_refusal: Callable[[Refusal], None] | None = None,
        state_file: Path | None = DEFAULT_STATE,
        keep_recent: int = 50,
    ) -> None:
        self.pin_root = pin_root
        self.cache_dir = cache_dir
        self.on_refusal = on_refusal
        self.state_file = state_file
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
        #: The agent's cgroup whose writes the guard passes (``None``: none is).
        self.agent_cgroup: str | None = None
        self._state_dirty = False
        self._state_at = 0.0

    # --- start / stop -----------------------------------------------------------------

    def start(
        self,
        table: Sequence[Mapping[str, Any]],
        lockdown: Sequence[Path] = (),
        guard: Sequence[Path] = (),
    ) -> Compiled:
        """Compile the policy, load the programs, attach them, and start reading refusals.

        :param table: :meth:`actions.policy.Policy.table` rows.
        :param lockdown: cgroups where every sysctl write is refused.
        :param guard: cgroups where writes to managed keys must stay in policy.
        :raises EnforceUnavailable: what this machine lacks, one line each.
        :raises ActionError: a bad cgroup, a rule the map cannot hold, a load failure.
        """
        if self._loaded is not None:
            raise ActionError("enforcement is already started", "call reload() instead")
        missing = capability.problems([*lockdown, *guard])
        if missing:
            raise EnforceUnavailable(missing)
        self._mount = capability.cgroup2_mount()
        self._check_not_self(lockdown)
        compiled = compile_rules(table)  # before loading anything: a bad policy loads nothing
        loaded = self._load()
        self._loaded = loaded
        try:
            self._publish(compiled)
            self._exempt_agent([Path(g) for g in guard])
            stale = [d for d in self.pin_root.iterdir() if d != loaded.run_dir and d.is_dir()]
            for mode, cgroups in (("lockdown", lockdown), ("guard", guard)):
                for cg in dict.fromkeys(Path(c).resolve() for c in cgroups):  # once each
                    self._attach(mode, cg)
            for old in stale:
                detach_run(old)
            self._start_reader()
        except BaseException:
            self.stop()
            raise
        self._write_state()
        return compiled

    def _check_not_self(self, lockdown: Sequence[Path]) -> None:
        mount = self._mount
        mine = _self_cgroup(mount) if mount is not None else None
        if mine is None:
            return
        mine = mine.resolve()
        for cg in lockdown:
            real = Path(cg).resolve()
            if real == mine or real in mine.parents:
                raise ActionError(
                    f"--enforce-lockdown {cg} holds the agent itself (its cgroup is {mine})",
                    "lock down the assistant's cgroup; the agent must be able to write",
                )

    def _exempt_agent(self, guard: Sequence[Path]) -> None:
        # Let the guard pass the agent's own writes (rollbacks to pre-policy values) when
        # the agent has a cgroup of its own: not a guarded one, and no other process in it.
        loaded = self._require()
        mine = _self_cgroup(self._mount) if self._mount is not None else None
        if mine is None:
            return
        real = mine.resolve()
        if not any(g.resolve() == real or g.resolve() in real.parents for g in guard):
            return  # the agent is outside every guarded cgroup: nothing checks its writes
        why = ""
        if any(g.resolve() == real for g in guard):
            why = f"the agent is itself in the guarded cgroup {mine}"
        else:
            try:
                others = set((real / "cgroup.procs").read_text().split()) - {str(os.getpid())}
            except OSError:
                others = {"?"}
            if others:
                why = f"the agent's cgroup {mine} holds other processes too"
        if why:
            self.notices.append(
                f"{why}: its own writes are checked like anyone's (a rollback to a value "
                "outside the policy will be refused); run it in a cgroup of its own"
            )
            return
        lib = libbpf.lib()
        slot, cgid = ctypes.c_uint32(0), ctypes.c_uint64(cgroup_id(real))
        libbpf.check(
            lib.bpf_map_update_elem(loaded.agent_fd, ctypes.byref(slot), ctypes.byref(cgid), 0),
            "set the agent's cgroup",
        )
        self.agent_cgroup = str(mine)

    def _load(self) -> _Loaded:
        lib = libbpf.lib()
        path = object_path(self.cache_dir)
        obj = libbpf.check_ptr(lib.bpf_object__open_file(str(path).encode(), None), f"open {path}")
        try:
            libbpf.check(lib.bpf_object__load(obj), "the kernel refused the BPF program")
            progs = {}
            for mode, name in PROGRAMS.items():
                prog = libbpf.check_ptr(lib.bpf_object__find_program_by_name(obj, name), "prog")
                progs[mode] = libbpf.check(lib.bpf_program__fd(prog), "prog fd")
            fds = {}
            for name in (b"rules", b"refusals", b"lost", b"agent_cgroup"):
                m = libbpf.check_ptr(lib.bpf_object__find_map_by_name(obj, name), "map")
                fds[name] = libbpf.check(lib.bpf_map__fd(m), "map fd")
            run_dir = self.pin_root / f"run-{os.getpid()}-{time.time_ns()}"
            self.pin_root.mkdir(mode=0o700, exist_ok=True)
            run_dir.mkdir(mode=0o700)
            libbpf.check(lib.bpf_obj_pin(fds[b"rules"], str(run_dir / "rules").encode()), "pin")
        except OSError as exc:
            lib.bpf_object__close(obj)
            raise ActionError(f"cannot load the BPF enforcement: {exc.strerror}", "") from None
        return _Loaded(obj, progs, fds[b"rules"], fds[b"refusals"], fds[b"lost"],
                       fds[b"agent_cgroup"], run_dir)  # fmt: skip

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

    def reload(self, table: Sequence[Mapping[str, Any]]) -> Compiled:
        """Compile a changed policy and swap it in whole (see the module's docstring).

        :raises ActionError: the policy cannot be compiled (the old rules stay).
        """
        compiled = compile_rules(table)
        self._publish(compiled)
        self._write_state()
        return compiled

    def _publish(self, compiled: Compiled) -> None:
        lib = libbpf.lib()
        with self._lock:
            loaded = self._require()
            generation = self.generation + 1
            inner = libbpf.check(
                lib.bpf_map_create(libbpf.BPF_MAP_TYPE_HASH, b"kassist_rules", NAME_LEN,
                                   ctypes.sizeof(RuleValue), MAX_RULES, None),
                "create the rules map",
            )  # fmt: skip
            try:
                _fill(inner, [rule.encode(generation) for rule in compiled.rules.values()])
                slot, fd = ctypes.c_uint32(0), ctypes.c_uint32(inner)
                libbpf.check(
                    lib.bpf_map_update_elem(loaded.rules_fd, ctypes.byref(slot), ctypes.byref(fd),
                                            libbpf.BPF_ANY),
                    "swap the rules in",
                )  # fmt: skip
            except OSError as exc:
                os.close(inner)
                raise ActionError(f"cannot publish the rules: {exc.strerror}", "") from None
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
            comm=printable(ev.comm),
            cgroup=self._cgroup_of(ev.cgroup_id),
            key=printable(ev.name).replace("/", "."),
            value=printable(ev.value.rstrip(b"\n")),
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
        return printable(("/" + rel if rel != "." else "/").encode())

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
        """Return what is attached where, the rules read back from the kernel, and refusals."""
        loaded = self._loaded
        if loaded is None:
            return {"enabled": False}
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
            "agent_cgroup": self.agent_cgroup,
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


def pinned_status(pin_root: Path = DEFAULT_PIN_ROOT) -> list[dict[str, Any]]:
    """Read what is pinned under ``pin_root`` from the kernel: links and rules, per run.

    For ``kassist agent enforce status`` (as root): it needs no running agent.
    """
    lib = libbpf.lib()
    runs = []
    for run in sorted(pin_root.iterdir()) if pin_root.is_dir() else []:
        entry: dict[str, Any] = {"pin": str(run), "attachments": [], "rules": []}
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
        runs.append(entry)
    return runs
