"""The triage contract: what a crash, an event and a triage result hold.

These are the types of ``kassist triage --format json`` (schema
``kassist.triage/1``, see DESIGN.md). They are plain dataclasses so that the
engine stays fast; :meth:`to_dict` gives the JSON form.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # drgn is loaded only for a vmcore
    from probes.drgn import Findings

from assistant.triage.facts import CrashFacts, extract_facts

TRIAGE_SCHEMA = "kassist.triage/1"

#: Sections other packages add to a crash's JSON object: each takes the crash and the
#: ``context`` given to :meth:`Crash.to_dict` (opaque here) and returns its keys.
#: assistant/triage/__init__.py registers assistant.rootcause's ``fault`` and
#: ``assessment`` (the contract's keys), so this module never imports rootcause (which
#: reads crashes).
CRASH_SECTIONS: list[Callable[[Crash, Any], dict[str, Any]]] = []

#: Values :func:`asdict` hands out as they are (``dataclasses.asdict`` deep-copies them,
#: which changes nothing for these and costs a call each).
_ATOMIC = frozenset({type(None), bool, int, float, complex, str, bytes})
_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def asdict(obj: Any) -> dict[str, Any]:
    """Return ``dataclasses.asdict(obj)``, the same value, without deep-copying strings and
    numbers (a header storm writes a thousand crashes)."""
    out: dict[str, Any] = _plain(obj)
    return out


def _plain(obj: Any) -> Any:
    kind = type(obj)
    if kind in _ATOMIC:
        return obj
    if is_dataclass(obj) and not isinstance(obj, type):
        names = _FIELD_NAMES.get(kind)
        if names is None:
            names = _FIELD_NAMES[kind] = tuple(f.name for f in fields(obj))
        return {name: _plain(getattr(obj, name)) for name in names}
    if kind is list:
        return [_plain(v) for v in obj]
    return _plain_other(obj, kind)


def _plain_other(obj: Any, kind: type) -> Any:
    # dataclasses.asdict's rule for the rest: containers rebuilt, anything else copied.
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return kind(*[_plain(v) for v in obj])
    if isinstance(obj, (list, tuple)):
        return kind(_plain(v) for v in obj)
    if isinstance(obj, dict):
        items = ((_plain(k), _plain(v)) for k, v in obj.items())
        if hasattr(kind, "default_factory"):
            return kind(obj.default_factory, items)  # type: ignore[attr-defined]
        return kind(items)
    return copy.deepcopy(obj)


@dataclass
class Frame:
    """One frame of a call trace.

    :param function: the symbol, e.g. ``tcp_close``.
    :param offset: the offset into the function in bytes, or ``None``.
    :param size: the function's size in bytes, or ``None``.
    :param module: the module the function lives in (``[ext4]``), or ``None`` for vmlinux.
    :param file: the source file when the trace is symbolised, e.g. ``net/ipv4/tcp.c``.
    :param line: the source line, or ``None``.
    :param inline: the frame was inlined into the next one.
    """

    function: str
    offset: int | None = None
    size: int | None = None
    module: str | None = None
    file: str | None = None
    line: int | None = None
    inline: bool = False


@dataclass
class KernelInfo:
    """The kernel that crashed, as the report names it.

    :param release: ``uname -r`` of the kernel, e.g. ``6.1.0-21-amd64``.
    :param tainted: the taint letters set, e.g. ``"G        W  O"`` → ``["W", "O"]``.
    :param hardware: the ``Hardware name:`` line's value.
    """

    release: str | None = None
    tainted: list[str] = field(default_factory=list)
    hardware: str | None = None
    #: the taint letters explained, e.g. ``"W: kernel issued warning"``
    taint_reasons: list[str] = field(default_factory=list)


@dataclass
class TaskInfo:
    """The task that was running when the report was printed.

    :param comm: the task's command name (``task_struct.comm``, at most 15 bytes).
    :param pid: its PID.
    :param cpu: the CPU it ran on.
    """

    comm: str | None = None
    pid: int | None = None
    cpu: int | None = None


@dataclass
class CrashTime:
    """When the kernel crashed, as far as the log tells (not when kassist read it).

    :param uptime: seconds since boot at the report's header: its printk stamp.
    :param wall: the same moment in Unix seconds, when a source gave a wall clock.
    :param clock: where ``wall`` came from: ``journal`` (the journal's own stamp),
        ``boot+printk`` (this boot's start plus the printk stamp: the live ring buffer),
        or a network receiver's name.
    """

    uptime: float | None = None
    wall: float | None = None
    clock: str | None = None


@dataclass
class SameAs:
    """A stored signature a crash is probably the same bug as (a non-binding link, see
    :mod:`assistant.triage.similar`).

    :param signature: the other signature.
    :param title: its title.
    :param why: the evidence, in a few words (``call stacks 84% alike; same guilty file
        net/ipv4/tcp.c``).
    """

    signature: str
    title: str
    why: str


@dataclass
class Crash:
    """One kernel crash report found in a log.

    Line numbers are 1-based and inclusive, counted in the input as read.
    """

    title: str
    type: str
    report: str
    start_line: int
    end_line: int
    alt_titles: list[str] = field(default_factory=list)
    frame: str | None = None
    corrupted: bool = False
    corrupted_reason: str | None = None
    suppressed: bool = False
    panicked: bool = False
    guilty_file: str | None = None
    signature: str = ""
    kernel: KernelInfo = field(default_factory=KernelInfo)
    task: TaskInfo = field(default_factory=TaskInfo)
    call_trace: list[Frame] = field(default_factory=list)
    #: when the kernel crashed (the printk stamp; a wall clock where the source has one)
    time: CrashTime = field(default_factory=CrashTime)
    #: what the report says about its own family (see :mod:`assistant.triage.facts`);
    #: extracted from ``report`` on first use by :meth:`crash_facts`
    facts: CrashFacts | None = None
    #: a stored signature it is probably the same bug as (set by the crash store)
    same_as: SameAs | None = None

    def crash_facts(self) -> CrashFacts:
        """Return the report's own facts, extracting them once."""
        if self.facts is None:
            self.facts = extract_facts(self.title, self.report)
        return self.facts

    def to_dict(self, context: Any = None) -> dict[str, Any]:
        """Return the crash as the JSON object of the triage contract, with its faulting
        instruction and assessment (``fault``, ``assessment``: :data:`CRASH_SECTIONS`).

        :param context: what the sections may use besides the crash, passed to each
            (rootcause's: ``RootcauseContext``, the knowledge base and debug files).
        """
        self.crash_facts()
        out = asdict(self)
        for section in CRASH_SECTIONS:
            out |= section(self, context)
        return out


@dataclass
class Event:
    """A production event that is not a crash (OOM kill, I/O error, MCE, ...).

    :param type: kassist's event type, e.g. ``OOM-KILL``.
    :param title: one line for a person.
    :param start_line: first line, 1-based.
    :param end_line: last line, inclusive.
    :param details: the event's own fields (victim, device, ...); ``count`` is how many
        times it happened (repeats merged into it).
    :param signature: one per kind of event (:func:`assistant.triage.events.event_signature`).
    """

    type: str
    title: str
    start_line: int
    end_line: int
    details: dict[str, Any] = field(default_factory=dict)
    signature: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the event as a JSON object."""
        return asdict(self)


@dataclass
class TriageResult:
    """Everything triage found in one input.

    :param source: the input's name (a path, ``-``, ``vmcore:PATH``).
    :param warnings: what reading the input repaired or could not read.
    """

    source: str
    crashes: list[Crash] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    lines: int = 0
    warnings: list[str] = field(default_factory=list)
    #: the drgn analyses of a vmcore (``kassist triage --vmcore``): an
    #: :class:`assistant.vmcore.VmcoreSection`
    vmcore: Findings | None = None

    def to_dict(self, context: Any = None) -> dict[str, Any]:
        """Return the result as the ``kassist.triage/1`` JSON object.

        :param context: what the crashes' sections may use (see :meth:`Crash.to_dict`).
        """
        out: dict[str, Any] = {
            "schema": TRIAGE_SCHEMA,
            "source": self.source,
            "lines": self.lines,
            "crashes": [c.to_dict(context) for c in self.crashes],
            "events": [e.to_dict() for e in self.events],
            "warnings": list(self.warnings),
        }
        if self.vmcore is not None:
            out["vmcore"] = self.vmcore.to_dict()
        return out
