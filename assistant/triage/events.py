"""Production events: what syzkaller ignores but an operator needs to see.

OOM kills, hardware errors (MCE, EDAC, PCIe AER, APEI), block I/O errors and
timeouts, filesystem errors, NETDEV watchdog timeouts, user-space segfaults,
thermal throttling and soft lockups. Each rule is a row: a substring that must
be in the line (the cheap pre-filter), a regex over the line with the printk
prefix removed, an event type, a title template over the regex's named groups,
and the detail fields to keep. The message formats are the kernel's own:

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
  %u ms``; ``arch/x86/mm/fault.c``: ``%s[%d]: segfault at %lx ip %px sp %px error %lx``;
- ``arch/x86/kernel/cpu/mce``: ``mce: [Hardware Error]: ...``; ``drivers/edac``:
  ``EDAC MC%d: %d CE|UE ...``; ``drivers/pci/pcie/aer.c``: ``AER: %s error received: %s``;
- ``drivers/thermal/intel/therm_throt.c``: ``CPU%d: %s temperature above threshold, cpu
  clock throttled``; ``kernel/watchdog.c``: ``watchdog: BUG: soft lockup - CPU#%d stuck
  for %us! [%s:%d]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from assistant.triage.model import Event


@dataclass(frozen=True)
class EventRule:
    """One kind of production event.

    :param needle: a substring every matching line holds.
    :param regex: the line's pattern, with named groups.
    :param type: kassist's event type.
    :param title: a template over the named groups.
    :param key: the groups that tell one instance from another, for merging repeats.
    """

    needle: str
    regex: re.Pattern[str]
    type: str
    title: str
    key: tuple[str, ...] = ()


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
        "segfault at",
        _r(
            r"(?P<comm>\S+)\[(?P<pid>\d+)\]: segfault at (?P<address>[0-9a-f]+)"
            r" ip (?P<ip>[0-9a-f]+)"
            r" sp [0-9a-f]+ error (?P<error>[0-9a-f]+)(?: in (?P<object>[^\[ ]+))?"
        ),
        "SEGFAULT",
        "segfault in {comm} (pid {pid})",
    ),
    EventRule(
        "general protection fault ip:",
        _r(r"traps: (?P<comm>\S+)\[(?P<pid>\d+)\] general protection fault ip:(?P<ip>[0-9a-f]+)"),
        "SEGFAULT",
        "general protection fault in {comm} (pid {pid})",
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
        "soft lockup - CPU#",
        _r(
            r"soft lockup - CPU#(?P<cpu>\d+) stuck for (?P<seconds>\d+)s! "
            r"\[(?P<comm>.+):(?P<pid>\d+)\]"
        ),
        "SOFT-LOCKUP",
        "soft lockup on CPU{cpu} in {comm}",
    ),
    EventRule(
        "hard LOCKUP",
        _r(r"Watchdog detected hard LOCKUP on cpu (?P<cpu>\d+)"),
        "HARD-LOCKUP",
        "hard lockup on CPU{cpu}",
    ),
)

#: The substrings that may start an event (the engine's pre-filter).
EVENT_NEEDLES = tuple(dict.fromkeys(r.needle for r in EVENT_RULES))

_OOM_CONTEXT = re.compile(
    r"oom-kill:constraint=(?P<constraint>[\w_]+),.*?(?:oom_memcg=(?P<oom_memcg>[^,]*),)?"
    r"(?:task_memcg=(?P<cgroup>[^,]*),)?task=(?P<task>[^,]*),pid=(?P<pid>\d+)",
    re.ASCII,
)
_OOM_INVOKED = re.compile(r"(?P<invoker>\S+) invoked oom-killer: gfp_mask=(?P<gfp_mask>\S+)")
#: Lines that only add context to the next OOM kill.
OOM_CONTEXT_NEEDLES = ("oom-kill:constraint=", "invoked oom-killer")
# One search tells whether a line can matter at all (feed runs for every header line).
_ANY_EVENT_NEEDLE = re.compile(
    "|".join(re.escape(n) for n in (*OOM_CONTEXT_NEEDLES, *EVENT_NEEDLES))
)
#: Repeats of one event within this many lines are merged into one.
MERGE_WITHIN_LINES = 200


class EventTracker:
    """Turns candidate lines into events, merging repeats and attaching OOM context."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._last_by_key: dict[tuple[str, ...], Event] = {}
        self._oom_invoked: tuple[int, dict[str, str]] | None = None
        self._oom_context: dict[str, str] | None = None

    def take(self) -> list[Event]:
        """Hand out the events found so far and forget them; a repeat starts a new event."""
        events, self.events = self.events, []
        self._last_by_key.clear()
        return events

    def held(self) -> int:
        """Return how many events and merge keys are held."""
        return len(self.events) + len(self._last_by_key)

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
        title = rule.title.format_map(_Defaulting(details))
        event = Event(rule.type, title[:200], start, lineno, {**details, "count": 1})
        self.events.append(event)
        if rule.key:
            self._last_by_key[(rule.type, *(details.get(k, "") for k in rule.key))] = event


class _Defaulting(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"
