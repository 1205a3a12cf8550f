"""Production events: what syzkaller ignores but an operator needs to see.

OOM kills, hardware errors (MCE, EDAC, PCIe AER, APEI), block I/O errors and
timeouts, filesystem errors, NETDEV watchdog timeouts, user-space faults,
thermal throttling and hard lockups. Each rule is a row: a substring that must
be in the line (the cheap pre-filter), a regex over the line with the printk
prefix removed, an event type, a title template over the regex's named groups,
and the detail fields to keep. A line that is a crash header is the crash, never
an event too (a soft lockup is one report: ``BUG: soft lockup in ...``). The
message formats are the kernel's own:

- ``mm/oom_kill.c``: ``Out of memory: Killed process %d (%s) total-vm:%lukB, ...``,
  ``oom-kill:constraint=%s,nodemask=%s,cpuset=%s,mems_allowed=%s,oom_memcg=%s,
  task_memcg=%s,task=%s,pid=%d,uid=%d`` and ``%s invoked oom-killer: gfp_mask=...``;
- ``block/blk-core.c``: ``I/O error, dev %s, sector %llu op 0x%x:(%s) flags ...``
  (``blk_update_request: `` before v5.16); ``fs/buffer.c``: ``Buffer I/O error on dev
  %pg, logical block %llu``; ``drivers/scsi/scsi_error.c``: ``timing out command,
  waited %lus``; ``drivers/nvme/host/pci.c``: ``I/O %d (%s) QID %d timeout, aborting``;
- ``fs/ext4/super.c``: ``EXT4-fs error (device %s): %s:%d: ...``; ``fs/xfs``:
  ``XFS (%s): ...``; ``fs/btrfs/messages.c``: ``BTRFS error (device %s): ...``;
- ``net/sched/sch_generic.c``: ``NETDEV WATCHDOG: %s (%s): transmit queue %u timed out
  %u ms``; user-space faults (``%s[%d]: segfault at ...``, ``traps: %s[%d] general
  protection fault ip:...``: :data:`assistant.triage.rules.USER_FAULTS`), stored under
  one signature whatever the task's name (any user names its tasks);
- ``arch/x86/kernel/cpu/mce``: ``mce: [Hardware Error]: ...``; ``drivers/edac``:
  ``EDAC MC%d: %d CE|UE ...``; ``drivers/pci/pcie/aer.c``: ``AER: %s error received: %s``;
- ``drivers/thermal/intel/therm_throt.c``: ``CPU%d: %s temperature above threshold, cpu
  clock throttled``; ``kernel/watchdog_hld.c``: ``Watchdog detected hard LOCKUP on cpu %d``.

Memory stays bounded whatever the log: past :data:`MAX_EVENTS` events, a repeat is counted
on the event of its signature, and an event of a new signature is only counted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from assistant.triage import rules
from assistant.triage.model import Event
from assistant.triage.signature import signature_of


@dataclass(frozen=True)
class EventRule:
    """One kind of production event.

    :param needle: a substring every matching line holds.
    :param regex: the line's pattern, with named groups.
    :param type: kassist's event type.
    :param title: a template over the named groups.
    :param key: the groups that tell one instance from another, for merging repeats.
    :param group: the title its signature is made of (``None``: its own title with the
        numbers taken out), for kinds whose titles carry untrusted names.
    """

    needle: str
    regex: re.Pattern[str]
    type: str
    title: str
    key: tuple[str, ...] = ()
    group: str | None = None


def _r(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.ASCII)


EVENT_RULES: tuple[EventRule, ...] = (
    EventRule(
        "Killed process",
        _r(
            r"(?P<scope>Memory cgroup out of memory|Out of memory"
            r"(?: \(oom_kill_allocating_task\))?):"
            r" Killed process (?P<pid>\d+) \((?P<comm>[^)]*)\)"
            r"(?: total-vm:(?P<total_vm_kb>\d+)kB, anon-rss:(?P<anon_rss_kb>\d+)kB)?"
        ),
        "OOM-KILL",
        "OOM kill of {comm} (pid {pid})",
    ),
    EventRule(
        "I/O error, dev ",
        _r(
            r"I/O error, dev (?P<device>[\w.-]+), sector (?P<sector>\d+)(?: op 0x[0-9a-f]+:"
            r"\((?P<op>\w+)\))?"
        ),
        "IO-ERROR",
        "I/O error on {device}",
        ("device",),
    ),
    EventRule(
        "Buffer I/O error on dev",
        _r(r"Buffer I/O error on dev (?P<device>[\w.-]+), logical block (?P<block>\d+)"),
        "IO-ERROR",
        "I/O error on {device}",
        ("device",),
    ),
    EventRule(
        "timing out command",
        _r(r"\[(?P<device>[\w.-]+)\] (?:tag#\d+ )?timing out command, waited (?P<seconds>\d+)s"),
        "IO-TIMEOUT",
        "I/O timeout on {device}",
        ("device",),
    ),
    EventRule(
        "timeout, aborting",
        _r(r"nvme (?P<device>nvme\d+): I/O (?:tag )?\d+ (?:\(\w+\) )?QID (?P<qid>\d+) timeout"),
        "IO-TIMEOUT",
        "I/O timeout on {device}",
        ("device",),
    ),
    EventRule(
        "failed command:",
        _r(r"(?P<device>ata\d+(?:\.\d+)?): failed command: (?P<command>[\w ]+)"),
        "IO-ERROR",
        "ATA command failed on {device}",
        ("device",),
    ),
    EventRule(
        "-fs error",
        _r(r"(?P<fs>EXT[234])-fs error \(device (?P<device>[^)]+)\): (?P<function>\w+)"),
        "FS-ERROR",
        "{fs} error on {device} in {function}",
        ("device",),
    ),
    EventRule(
        "XFS (",
        _r(
            r"XFS \((?P<device>[^)]+)\): (?P<message>(?:Corruption|Metadata corruption|metadata"
            r" I/O error|Filesystem has been shut down|log I/O error|Internal error)[^.]*)"
        ),
        "FS-ERROR",
        "XFS error on {device}: {message}",
        ("device",),
    ),
    EventRule(
        "BTRFS ",
        _r(
            r"BTRFS (?P<level>error|critical|crit) \(device (?P<device>[^)]+)[^)]*\): "
            r"(?P<message>.*)"
        ),
        "FS-ERROR",
        "BTRFS {level} on {device}",
        ("device",),
    ),
    EventRule(
        "NETDEV WATCHDOG",
        _r(
            r"NETDEV WATCHDOG: (?:CPU: \d+: )?(?P<device>[\w.@-]+)(?: \((?P<driver>[\w.-]+)\))?:"
            r" transmit queue (?P<queue>\d+) timed out(?: (?P<ms>\d+) ms)?"
        ),
        "NETDEV-WATCHDOG",
        "transmit timeout on {device}",
        ("device",),
    ),
    EventRule(
        "[Hardware Error]",
        _r(r"(?:mce: )?\[Hardware Error\]: (?P<message>.*)"),
        "HARDWARE-ERROR",
        "hardware error: {message}",
        ("kind",),
    ),
    EventRule(
        "EDAC ",
        _r(r"EDAC (?P<controller>[\w ]*MC\d+): (?P<count>\d+) (?P<kind>CE|UE) (?P<message>[^(]*)"),
        "HARDWARE-ERROR",
        "EDAC {kind} on {controller}: {message}",
        ("controller", "kind"),
    ),
    EventRule(
        "AER:",
        _r(
            r"(?P<device>[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-9a-f]).*AER: "
            r"(?P<severity>Corrected|"
            r"Uncorrected \((?:Non-Fatal|Fatal)\)|Multiple \w+) error"
        ),
        "PCIE-AER",
        "PCIe {severity} error at {device}",
        ("device", "severity"),
    ),
    EventRule(
        "temperature above threshold",
        _r(r"CPU(?P<cpu>\d+): (?P<sensor>Core|Package) temperature above threshold"),
        "THERMAL-THROTTLE",
        "CPU{cpu} {sensor} temperature above threshold, clock throttled",
        ("sensor",),
    ),
    EventRule(
        "critical temperature reached",
        _r(r"(?P<zone>thermal_zone\d+): critical temperature reached"),
        "THERMAL-CRITICAL",
        "critical temperature on {zone}",
        ("zone",),
    ),
    EventRule(
        "hard LOCKUP",
        _r(r"Watchdog detected hard LOCKUP on cpu (?P<cpu>\d+)"),
        "HARD-LOCKUP",
        "hard lockup on CPU{cpu}",
    ),
)

#: The user-space faults of :data:`rules.USER_FAULTS`: a substring each holds, and a title.
_USER_FAULT_TITLES = {
    "segfault": ("segfault at", "segfault in {comm} (pid {pid})"),
    "trap": ("traps: ", "{trap} in {comm} (pid {pid})"),
    "cli": ("traps: ", "CLI/STI in {comm} (pid {pid})"),
    "umip": ("umip: ", "UMIP violation in {comm} (pid {pid})"),
    "exception": ("unhandled exception: ", "unhandled exception in {comm} (pid {pid})"),
}
EVENT_RULES += tuple(
    EventRule(
        _USER_FAULT_TITLES[kind][0],
        regex,
        "SEGFAULT",
        _USER_FAULT_TITLES[kind][1],
        group="user-space fault",
    )
    for regex, kind in rules.USER_FAULTS
)

#: The substrings that may start an event (the engine's pre-filter).
EVENT_NEEDLES = tuple(dict.fromkeys(r.needle for r in EVENT_RULES))

_OOM_CONTEXT = re.compile(
    r"oom-kill:constraint=(?P<constraint>[\w_]+),.*?(?:oom_memcg=(?P<oom_memcg>[^,]*),)?"
    r"(?:task_memcg=(?P<cgroup>[^,]*),)?task=(?P<task>[^,]*),pid=(?P<pid>\d+)",
    re.ASCII,
)
_OOM_INVOKED = re.compile(
    r"(?P<invoker>\S+) invoked oom-killer: gfp_mask=(?P<gfp_mask>0x[0-9a-f]+(?:\([^)]*\))?)",
    re.ASCII,
)
#: Lines that only add context to the next OOM kill.
OOM_CONTEXT_NEEDLES = ("oom-kill:constraint=", "invoked oom-killer")
# One search tells whether a line can matter at all (feed runs for every header line).
_ANY_EVENT_NEEDLE = re.compile(
    "|".join(re.escape(n) for n in (*OOM_CONTEXT_NEEDLES, *EVENT_NEEDLES))
)
#: Repeats of one event within this many lines are merged into one.
MERGE_WITHIN_LINES = 200
#: Most events held; past it a repeat is counted on the event of its signature.
MAX_EVENTS = 1000
_NUMBERS = re.compile(r"\d+")


def event_signature(rule: EventRule, title: str) -> str:
    """Return the signature of an event: its type and its group, or its title with the
    numbers taken out (pids, sizes, sectors), so a thousand OOM kills of one service are
    one signature."""
    return signature_of(rule.group or _NUMBERS.sub("N", title), rule.type)


class EventTracker:
    """Turns candidate lines into events, merging repeats and attaching OOM context."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._last_by_key: dict[tuple[str, ...], Event] = {}
        self._by_signature: dict[str, Event] = {}  # past MAX_EVENTS: where repeats count
        self._oom_invoked: tuple[int, dict[str, str]] | None = None
        self._oom_context: dict[str, str] | None = None
        #: events of a new signature past :data:`MAX_EVENTS`, only counted
        self.dropped = 0
        #: repeats counted on an earlier event of their signature past :data:`MAX_EVENTS`
        self.folded = 0

    def take(self) -> list[Event]:
        """Hand out the events found so far and forget them; a repeat starts a new event."""
        events, self.events = self.events, []
        self._last_by_key.clear()
        self._by_signature.clear()
        return events

    def held(self) -> int:
        """Return how many events and merge keys are held."""
        return len(self.events) + len(self._last_by_key) + len(self._by_signature)

    def feed(self, text: str, lineno: int) -> None:
        """Look at one line (printk prefix removed); ``lineno`` is 1-based."""
        if _ANY_EVENT_NEEDLE.search(text) is None:
            return
        if "oom-kill:constraint=" in text:
            m = _OOM_CONTEXT.search(text)
            if m:
                self._oom_context = {k: v for k, v in m.groupdict().items() if v is not None}
            return
        if "invoked oom-killer" in text:
            m = _OOM_INVOKED.search(text)
            if m:
                self._oom_invoked = (lineno, m.groupdict())
            return
        for rule in EVENT_RULES:
            if rule.needle not in text:
                continue
            m = rule.regex.search(text)
            if m is None:
                continue
            details: dict[str, Any] = {k: v for k, v in m.groupdict().items() if v is not None}
            self._add(rule, details, lineno)
            return

    def _add(self, rule: EventRule, details: dict[str, Any], lineno: int) -> None:
        start = lineno
        if rule.type == "OOM-KILL":
            if self._oom_context:
                details.update({k: v for k, v in self._oom_context.items() if k not in ("pid",)})
                self._oom_context = None
            if self._oom_invoked and lineno - self._oom_invoked[0] < 400:
                start = self._oom_invoked[0]
                details.update(self._oom_invoked[1])
                self._oom_invoked = None
            details.setdefault("constraint", "unknown")
        if rule.key:
            key = (rule.type, *(details.get(k, "") for k in rule.key))
            last = self._last_by_key.get(key)
            if last is not None and lineno - last.end_line <= MERGE_WITHIN_LINES:
                last.end_line = lineno
                last.details["count"] = int(last.details.get("count", 1)) + 1
                return
        title = rule.title.format_map(_Defaulting(details))[:200]
        signature = event_signature(rule, title)
        if len(self.events) >= MAX_EVENTS:
            self._fold(signature, lineno)
            return
        event = Event(rule.type, title, start, lineno, {**details, "count": 1}, signature)
        self.events.append(event)
        self._by_signature.setdefault(signature, event)
        if rule.key:
            self._last_by_key[(rule.type, *(details.get(k, "") for k in rule.key))] = event

    def _fold(self, signature: str, lineno: int) -> None:
        # Past the cap: a repeat is counted on the first event of its signature.
        first = self._by_signature.get(signature)
        if first is None:
            self.dropped += 1
            return
        first.end_line = max(first.end_line, lineno)
        first.details["count"] = int(first.details.get("count", 1)) + 1
        self.folded += 1


class _Defaulting(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"
