"""Run a bpftrace probe for a while and turn its JSON output into typed results.

``bpftrace -f json`` prints one JSON object per line: ``attached_probes`` once
the programs are loaded, ``printf`` for each printf, and at exit one ``map``,
``hist`` or ``stats`` object per map. A map's keys are joined with commas
(``"257,2"``). The runner waits for ``attached_probes``, lets the probe run for
the duration, then sends SIGINT (what Ctrl-C does) so bpftrace prints its maps
and detaches; if it does not exit it is terminated, then killed.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from probes.bpf.decode import KEY_DECODERS
from probes.bpf.library import MapSpec, ProbeSpec, find_probe, unavailable_reason
from probes.bpf.tracefs import ensure_tracefs, say_on_stderr
from probes.errors import ProbeError, ProbeUnavailable

#: Seconds to wait for bpftrace to compile and attach before giving up.
STARTUP_TIMEOUT = 60.0
#: Seconds to wait for bpftrace to print its maps and exit after SIGINT.
STOP_TIMEOUT = 15.0
#: Least time between the start of tracing and SIGINT: bpftrace 0.17 can miss a signal
#: that arrives in the instant after its BEGIN output (seen here in about one of four
#: immediate kills), and would then trace on until the SIGTERM fallback.
MIN_RUN_S = 0.5
#: stderr lines bpftrace prints that do not mean anything went wrong.
BENIGN_STDERR = ("couldn't set RLIMIT_MEMLOCK", "Attaching ", "Lost ")
#: Most garbage (non-JSON) lines kept in a result's warnings.
MAX_GARBAGE_KEPT = 3


@dataclass
class Bucket:
    """One histogram bucket: values in ``[low, high]`` (``None``: unbounded) and how many."""

    low: int | None
    high: int | None
    count: int


@dataclass
class MapEntry:
    """One key of a map: raw key parts, their decoded labels, and the value.

    ``value`` is set for count/sum maps, ``buckets`` for histograms, ``stats`` for ``stats()``.
    """

    key: list[str]
    labels: list[str]
    value: int | None = None
    buckets: list[Bucket] | None = None
    stats: dict[str, int] | None = None

    @property
    def total(self) -> int:
        """Return the value, or a histogram's total count."""
        if self.buckets is not None:
            return sum(b.count for b in self.buckets)
        if self.stats is not None:
            return int(self.stats.get("count", 0))
        return self.value or 0


@dataclass
class MapResult:
    """A map the probe printed, with its key names from the header."""

    name: str
    kind: str
    keys: list[str]
    description: str
    entries: list[MapEntry] = field(default_factory=list)


@dataclass
class ProbeResult:
    """What one run of a probe saw.

    :param duration_s: seconds between attach and the stop signal.
    :param events: printf events named in the header, as dicts of typed fields.
    :param messages: other printf output, one string per line.
    :param warnings: anything odd: garbage lines, lost events, a forced kill, stderr.
    :param lost_events: events bpftrace reported lost (perf buffer full).
    :param interrupted: the run was cut short by Ctrl-C.
    :param pid: bpftrace's process id (gone by the time the result is returned).
    :param prog_ids: ids of the BPF programs bpftrace had loaded once attached.
    :param leaked_prog_ids: those still loaded after bpftrace exited (``None``: not checked,
        bpftool is missing).
    """

    name: str
    duration_s: float
    maps: dict[str, MapResult] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    lost_events: int = 0
    interrupted: bool = False
    pid: int = 0
    exit_code: int | None = None
    prog_ids: list[int] = field(default_factory=list)
    leaked_prog_ids: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data (schema ``kassist.probe/1``)."""
        return {"schema": "kassist.probe/1", **asdict(self)}


def _decode_key(raw: str, names: list[str]) -> tuple[list[str], list[str]]:
    # The last key may hold commas (a comm); split from the left, at most len(names)-1 times.
    parts = raw.split(",", max(len(names) - 1, 0)) if names else [raw]
    labels = []
    for i, part in enumerate(parts):
        decoder = KEY_DECODERS.get(names[i]) if i < len(names) else None
        labels.append(decoder(part) if decoder else part)
    return parts, labels


def _bucket(item: Any) -> Bucket:
    if not isinstance(item, dict) or not isinstance(item.get("count"), int):
        raise ValueError(f"not a histogram bucket: {item!r:.80}")
    low, high = item.get("min"), item.get("max")
    return Bucket(
        low if isinstance(low, int) else None,
        high if isinstance(high, int) else None,
        item["count"],
    )


def _entry(kind: str, key: list[str], labels: list[str], value: Any) -> MapEntry:
    if kind == "hist":
        if not isinstance(value, list):
            raise ValueError("histogram data is not a list of buckets")
        return MapEntry(key, labels, buckets=[_bucket(b) for b in value])
    if kind == "stats":
        if not isinstance(value, dict):
            raise ValueError("stats data is not an object")
        return MapEntry(key, labels, stats={k: int(v) for k, v in value.items()})
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"map value is not an integer: {value!r:.80}")
    return MapEntry(key, labels, value=value)


def parse_map_message(kind: str, data: Any, specs: dict[str, MapSpec]) -> list[MapResult]:
    """Turn the ``data`` of one ``map``/``hist``/``stats`` message into typed map results.

    :param kind: the message type.
    :param data: ``{"@name": value-or-{key: value}}``.
    :param specs: the maps the probe's header describes (for key names).
    :raises ValueError: the data does not have the shape bpftrace prints.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{kind} data is not an object")
    out = []
    for name, payload in data.items():
        spec = specs.get(name, MapSpec(name, [], ""))
        result = MapResult(name, kind, spec.keys, spec.description)
        keyed = isinstance(payload, dict) and (kind != "stats" or "count" not in payload)
        if keyed:
            names = spec.keys or ["key"]
            result.keys = names
            for raw_key, value in payload.items():
                key, labels = _decode_key(str(raw_key), names)
                result.entries.append(_entry(kind, key, labels, value))
        else:
            result.entries.append(_entry(kind, [], [], payload))
        out.append(result)
    return out


def _typed(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text


def _printf(text: str, spec: ProbeSpec, result: ProbeResult) -> None:
    for line in text.splitlines():
        word, tab, rest = line.partition("\t")
        event = spec.events.get(word) if tab else None
        if event is None:
            if line.strip() and not line.endswith("Hit Ctrl-C to end."):
                result.messages.append(line)
            continue
        values = rest.split("\t", max(len(event.fields) - 1, 0))
        if len(values) != len(event.fields):
            result.warnings.append(f"malformed {word} event skipped: {line!r:.80}")
            continue
        result.events.append(
            {"event": word, **{f: _typed(v) for f, v in zip(event.fields, values, strict=True)}}
        )


def handle_line(line: str, spec: ProbeSpec, result: ProbeResult, garbage: list[str]) -> str | None:
    """Fold one line of bpftrace's stdout into ``result``; return its message type.

    A line that is not a JSON message of a known shape is counted in ``garbage``, never raised.
    """
    if not line.strip():
        return None  # bpftrace separates its exit output with blank lines
    try:
        message = json.loads(line)
        kind = message["type"]
        data = message.get("data")
    except (ValueError, TypeError, KeyError):
        garbage.append(line)
        return None
    try:
        if kind in ("map", "hist", "stats"):
            for m in parse_map_message(kind, data, spec.maps):
                result.maps[m.name] = m
        elif kind == "printf":
            _printf(str(data), spec, result)
        elif kind == "lost_events":
            result.lost_events += int(data.get("events", 0)) if isinstance(data, dict) else 0
    except (ValueError, TypeError, AttributeError) as exc:
        garbage.append(f"{line[:80]} ({exc})")
    return str(kind)


def _pump(stream: Any, out: queue.Queue[str | None]) -> None:
    for raw in stream:
        out.put(raw.decode("utf-8", errors="replace").rstrip("\n"))
    out.put(None)


def _stderr_problem(lines: list[str]) -> str | None:
    meaningful = [
        ln.strip() for ln in lines if ln.strip() and not any(b in ln for b in BENIGN_STDERR)
    ]
    return meaningful[0] if meaningful else None


def _stop(proc: subprocess.Popen[bytes], result: ProbeResult) -> None:
    # SIGINT makes bpftrace print its maps and detach; escalate only if it hangs.
    for sig, wait in ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            if sig != signal.SIGINT:
                result.warnings.append(f"bpftrace did not stop on SIGINT; sent {sig.name}")
            return
        except subprocess.TimeoutExpired:
            continue


def _command(bpftrace: str, script: str) -> list[str]:
    # If kassist is killed outright, bpftrace (in its own session) must not trace on forever:
    # setpriv sets PR_SET_PDEATHSIG, so the kernel sends it SIGINT when we die, then execs it.
    # (A preexec_fn could do the same, but is unsafe in a process with threads.)
    command = [bpftrace, "-f", "json", script]
    if shutil.which("setpriv") is not None:
        return ["setpriv", "--pdeathsig", "INT", "--", *command]
    return command


def run_probe(
    name: str,
    duration: float = 5.0,
    *,
    bpftrace: str = "bpftrace",
    check: bool = True,
    on_attach: Callable[[], None] | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
    say: Callable[[str], None] | None = say_on_stderr,
    stop: Callable[[], bool] | None = None,
) -> ProbeResult:
    """Run a probe of the library (or a ``.bt`` file) for ``duration`` seconds.

    Ctrl-C during the run (or ``stop`` returning true) stops the probe early and returns
    what it saw, marked interrupted.

    :param name: a probe name (``syserrors``) or a path to a ``.bt`` file.
    :param duration: seconds to trace after the programs are attached.
    :param bpftrace: the bpftrace executable to run.
    :param check: check root, bpftrace and tracepoints first (turned off only by tests that
        point ``bpftrace`` at something else).
    :param on_attach: called once the programs are attached (e.g. to start a workload).
    :param startup_timeout: seconds allowed for compiling and attaching.
    :param say: told in one line about a fix made on the way (tracefs mounted, as root);
        default: a line on stderr.
    :param stop: polled about every 0.1 s (a front end's cancel key, from another thread).
    :raises ProbeUnavailable: the probe cannot run here (not root, no tracepoint...).
    :raises ProbeError: the probe is unknown, or bpftrace failed.
    """
    spec = find_probe(name)
    _preflight(spec, bpftrace, check, say)
    run = _Run.start(spec, bpftrace)
    try:
        attached_at = _wait_attached(run, startup_timeout, stop, on_attach)
        _trace(run.proc, run.result, attached_at, duration, stop)
    finally:
        _stop(run.proc, run.result)
    _drain(run)
    _finish_warnings(run.result, run.garbage, run.err_lines)
    return run.result


def _preflight(
    spec: ProbeSpec, bpftrace: str, check: bool, say: Callable[[str], None] | None
) -> None:
    if check and spec.tracepoints:
        ensure_tracefs(say)
    if check and (why := unavailable_reason(spec, bpftrace)) is not None:
        raise ProbeUnavailable(f"{spec.name}: not available: {why}", "see `kassist probe list`")
    if shutil.which(bpftrace) is None:
        raise ProbeError(f"{spec.name}: cannot start {bpftrace}: not found", "install bpftrace")


def _spawn(spec: ProbeSpec, bpftrace: str, stderr: int) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            _command(bpftrace, str(spec.path)),
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us, and we stop bpftrace in order
        )
    except OSError as exc:
        raise ProbeError(f"{spec.name}: cannot start {bpftrace}: {exc.strerror}") from None


@dataclass
class _Run:
    # One bpftrace process of run_probe: its stdout lines (None at the end) and stderr
    # lines as two threads collect them, and what was made of them.
    spec: ProbeSpec
    proc: subprocess.Popen[bytes]
    result: ProbeResult
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    err_lines: list[str] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)
    garbage: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, spec: ProbeSpec, bpftrace: str) -> _Run:
        proc = _spawn(spec, bpftrace, subprocess.PIPE)
        run = cls(spec, proc, ProbeResult(name=spec.name, duration_s=0.0, pid=proc.pid))
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None
        run.threads = [
            threading.Thread(target=_pump, args=(stdout, run.lines), daemon=True),
            threading.Thread(target=lambda: run.err_lines.extend(_lines(stderr)), daemon=True),
        ]
        for t in run.threads:
            t.start()
        return run

    def join(self) -> None:
        for t in self.threads:
            t.join(2)


def _ready(kind: str | None, seen_attach: bool, has_begin: bool) -> bool:
    # bpftrace prints attached_probes before attaching; BEGIN runs once all are
    # attached, so a probe with a BEGIN printf is ready when that line arrives.
    if kind == "attached_probes":
        return not has_begin
    return seen_attach and kind == "printf"


def _startup_line(
    run: _Run, deadline: float, timeout: float, stop: Callable[[], bool] | None
) -> str | None:
    # The next stdout line before the startup deadline (None: bpftrace's output ended).
    while True:
        if stop is not None and stop():
            raise ProbeError(f"{run.spec.name}: stopped before it attached", "nothing was traced")
        try:
            return run.lines.get(timeout=max(0.0, min(0.1, deadline - time.monotonic())))
        except queue.Empty:
            if time.monotonic() >= deadline:
                raise ProbeError(
                    f"{run.spec.name}: bpftrace did not attach within {timeout:.0f} s",
                    "the machine may be overloaded; try again",
                ) from None


def _wait_attached(
    run: _Run, timeout: float, stop: Callable[[], bool] | None, on_attach: Callable[[], None] | None
) -> float:
    # Read bpftrace's output until its programs are attached; return when (monotonic s).
    deadline = time.monotonic() + timeout
    seen_attach = False
    while (line := _startup_line(run, deadline, timeout, stop)) is not None:
        kind = handle_line(line, run.spec, run.result, run.garbage)
        seen_attach = seen_attach or kind == "attached_probes"
        if _ready(kind, seen_attach, run.spec.has_begin):
            attached_at = time.monotonic()
            run.result.prog_ids = programs_of(run.proc.pid)
            if on_attach is not None:
                on_attach()
            return attached_at
    run.proc.wait(5)
    run.join()
    why = _stderr_problem(run.err_lines) or (
        f"printed no JSON ({len(run.garbage)} other line(s))"
        if run.garbage
        else f"exited with status {run.proc.returncode}"
    )
    raise ProbeError(f"{run.spec.name}: bpftrace failed before attaching: {why}", "")


def _trace(
    proc: subprocess.Popen[bytes],
    result: ProbeResult,
    attached_at: float,
    duration: float,
    stop: Callable[[], bool] | None,
) -> None:
    # Let the attached probe trace for its duration (or until bpftrace exits, ``stop``
    # says so or Ctrl-C); set how long it traced.
    try:
        end = attached_at + max(duration, MIN_RUN_S)
        while (left := end - time.monotonic()) > 0 and proc.poll() is None:
            if stop is not None and stop():
                result.interrupted = True
                break
            time.sleep(min(left, 0.1))
    except KeyboardInterrupt:
        result.interrupted = True
    result.duration_s = time.monotonic() - attached_at


def _drain(run: _Run) -> None:
    # After bpftrace was stopped: fold in what it printed at exit (its maps), then check
    # that its BPF programs went away with it.
    result = run.result
    try:
        while (line := run.lines.get(timeout=STOP_TIMEOUT)) is not None:
            handle_line(line, run.spec, result, run.garbage)
    except queue.Empty:
        result.warnings.append("bpftrace's output did not end after it exited; rest ignored")
    run.join()
    result.exit_code = run.proc.returncode
    if result.prog_ids:
        result.leaked_prog_ids = programs_still_loaded(result.prog_ids)
        if result.leaked_prog_ids:
            ids = " ".join(map(str, result.leaked_prog_ids))
            result.warnings.append(f"BPF programs still loaded after bpftrace exited: {ids}")


def _lines(stream: Any) -> list[str]:
    return [raw.decode("utf-8", errors="replace").rstrip("\n") for raw in stream]


def _finish_warnings(result: ProbeResult, garbage: list[str], err_lines: list[str]) -> None:
    if garbage:
        shown = "; ".join(g[:60] for g in garbage[:MAX_GARBAGE_KEPT])
        result.warnings.append(
            f"{len(garbage)} line(s) of bpftrace output were not JSON messages, skipped: {shown}"
        )
    if result.lost_events:
        result.warnings.append(f"bpftrace lost {result.lost_events} event(s) (buffer full)")
    problem = _stderr_problem(err_lines)
    if problem:
        result.warnings.append(f"bpftrace: {problem}")
    if result.exit_code not in (0, None, -signal.SIGINT):
        result.warnings.append(f"bpftrace exited with status {result.exit_code}")


def programs_of(pid: int) -> list[int]:
    """Return the ids of the BPF programs process ``pid`` holds open (from its fdinfo)."""
    ids: list[int] = []
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        return ids
    for fd in fds:
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("prog_id:"):
                        ids.append(int(line.split()[1]))
        except (OSError, ValueError):
            continue
    return sorted(set(ids))


def loaded_programs() -> set[int] | None:
    """Return the ids of every BPF program loaded in the kernel, or ``None`` without bpftool."""
    try:
        proc = subprocess.run(
            ["bpftool", "--json", "prog", "show"], capture_output=True, check=False, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    try:
        progs = json.loads(proc.stdout or b"[]") if proc.returncode == 0 else None
    except ValueError:
        return None
    if not isinstance(progs, list):
        return None
    return {int(p["id"]) for p in progs if isinstance(p, dict) and "id" in p}


def programs_still_loaded(prog_ids: list[int]) -> list[int] | None:
    """Return which of ``prog_ids`` are still loaded (empty: none leaked; ``None``: no bpftool)."""
    loaded = loaded_programs()
    return None if loaded is None else sorted(set(prog_ids) & loaded)


class ProbeStream:
    """A probe that runs for as long as its reader wants, handing over each map it prints.

    For probes that ``print()`` their maps on an ``interval`` (``biolatency_interval``):
    :meth:`poll` returns the maps printed since the last call, without blocking. Use it
    as a context manager, or call :meth:`close` (SIGINT, then SIGTERM, SIGKILL).

    :param name: a probe name or a ``.bt`` path.
    :raises ProbeError: the probe is not available here, or bpftrace did not attach.
    """

    def __init__(
        self, name: str, *, bpftrace: str = "bpftrace", startup_timeout: float = STARTUP_TIMEOUT
    ) -> None:
        self.spec = find_probe(name)
        if (why := unavailable_reason(self.spec, bpftrace)) is not None:
            raise ProbeError(f"{self.spec.name}: not available: {why}", "see `kassist probe list`")
        self._proc = _spawn(self.spec, bpftrace, subprocess.DEVNULL)
        assert self._proc.stdout is not None
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(self._proc.stdout, self._lines), daemon=True).start()
        self.result = ProbeResult(name=self.spec.name, duration_s=0.0, pid=self._proc.pid)
        self._garbage: list[str] = []
        self._wait_attached(startup_timeout)

    def _wait_attached(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        seen_attach = False
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.close()
                raise ProbeError(
                    f"{self.spec.name}: bpftrace did not attach within {timeout:.0f} s", "try again"
                )
            kind = handle_line(line, self.spec, self.result, self._garbage)
            seen_attach = seen_attach or kind == "attached_probes"
            if _ready(kind, seen_attach, self.spec.has_begin):
                self.result.prog_ids = programs_of(self._proc.pid)
                return

    def poll(self) -> list[MapResult]:
        """Return the maps printed since the last call (oldest first), without waiting."""
        out: list[MapResult] = []
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return out
            if line is None:
                return out
            self.result.maps.clear()
            if handle_line(line, self.spec, self.result, self._garbage) in ("map", "hist"):
                out.extend(self.result.maps.values())

    @property
    def running(self) -> bool:
        """Tell whether bpftrace is still tracing."""
        return self._proc.poll() is None

    def close(self) -> None:
        """Stop bpftrace (its BPF programs are detached when it exits)."""
        _stop(self._proc, self.result)
        self.result.exit_code = self._proc.returncode

    def __enter__(self) -> ProbeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
