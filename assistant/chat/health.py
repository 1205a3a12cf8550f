""" "How is the system doing?": a verdict and its evidence, on one screen.

The verdict weighs what each feature found, and each evidence line is that feature's
own renderer's: load against CPUs, PSI and memory (``probes.stats.summary``), the
processes using the most CPU (``probes.stats.tasks``), crashes and warnings in the
kernel log since boot (:mod:`assistant.chat.kernel_log`), tuning findings
(``assistant.tuning.render``), drive findings (``assistant.disks.render``), and the
agent's state with the changes waiting for approval. A source that cannot be read is a
line saying so; it never hides the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from assistant.errors import KassistError
from probes.errors import ProbeError
from probes.stats.summary import StatsSummary

#: Verdicts, from best to worst.
HEALTHY = "healthy"
ADVICE = "healthy, with advice"
ATTENTION = "needs attention"

#: Seconds the CPU and drive figures are measured over.
WINDOW_S = 1.0
#: Processes shown under the verdict.
TOP_TASKS = 3
#: Crash and event lines of the kernel log shown under the verdict.
DETAIL_LINES = 6


@dataclass(frozen=True)
class Limit:
    """A row of the thresholds table: past ``over``, the figure makes the verdict ``level``.

    :param name: the figure's name; only the first row of a name that it passes counts.
    :param figure: reads the figure from a summary (``None``: not known here).
    :param text: the reason, formatted with the figure as ``{v}``.
    """

    name: str
    figure: Callable[[StatsSummary], float | None]
    over: float
    level: str
    text: str


def _psi(resource: str, kind: str) -> Callable[[StatsSummary], float | None]:
    def read(s: StatsSummary) -> float | None:
        line = s.psi.get(resource)
        if line is None:
            return None
        return line.some_avg10 if kind == "some" else line.full_avg10

    return read


def _memory_used(s: StatsSummary) -> float | None:
    share = s.mem_available_share
    return None if share is None else 1.0 - share


def _swap_used(s: StatsSummary) -> float | None:
    return None if not s.swap_total else (s.swap_used or 0) / s.swap_total


def _load(s: StatsSummary) -> float | None:
    return s.load_per_cpu


#: The thresholds, worst first for each figure. PSI in percent of the last 10 s.
LIMITS: tuple[Limit, ...] = (
    Limit("load", _load, 1.5, ATTENTION, "load {v:.2f} per CPU: tasks wait for a CPU"),
    Limit("load", _load, 0.8, ADVICE, "load {v:.2f} per CPU: the CPUs are busy"),
    Limit("cpu", _psi("cpu", "some"), 25.0, ATTENTION, "CPU pressure {v:.1f}%: tasks stall"),
    Limit("cpu", _psi("cpu", "some"), 5.0, ADVICE, "some CPU pressure ({v:.1f}%)"),
    Limit("memory full", _psi("memory", "full"), 2.0, ATTENTION,
          "memory pressure (full) {v:.1f}%: every task stalls in reclaim"),
    Limit("memory", _psi("memory", "some"), 10.0, ATTENTION,
          "memory pressure {v:.1f}%: reclaim stalls tasks"),
    Limit("memory", _psi("memory", "some"), 1.0, ADVICE, "some memory pressure ({v:.1f}%)"),
    Limit("io full", _psi("io", "full"), 10.0, ATTENTION,
          "I/O pressure (full) {v:.1f}%: every task waits on I/O"),
    Limit("io", _psi("io", "some"), 25.0, ATTENTION, "I/O pressure {v:.1f}%: tasks wait on I/O"),
    Limit("io", _psi("io", "some"), 5.0, ADVICE, "some I/O pressure ({v:.1f}%)"),
    Limit("ram", _memory_used, 0.95, ATTENTION, "memory {v:.0%} used: little is left"),
    Limit("ram", _memory_used, 0.85, ADVICE, "memory {v:.0%} used"),
    Limit("swap", _swap_used, 0.8, ADVICE, "swap {v:.0%} used"),
)  # fmt: skip
_RANK = {HEALTHY: 0, ADVICE: 1, ATTENTION: 2}


def judge_stats(s: StatsSummary, limits: Sequence[Limit] = LIMITS) -> list[tuple[str, str]]:
    """Return (level, reason) for each figure of a summary past a threshold (one per figure).

    >>> judge_stats(StatsSummary(cpus=2, load1=4.0))
    [('needs attention', 'load 2.00 per CPU: tasks wait for a CPU')]
    """
    out: list[tuple[str, str]] = []
    done: set[str] = set()
    for limit in limits:
        value = limit.figure(s)
        if limit.name in done or value is None or value < limit.over:
            continue
        done.add(limit.name)
        out.append((limit.level, limit.text.format(v=value)))
    return out


@dataclass
class Health:
    """A verdict, the reasons for it, and the evidence lines (each from a feature's renderer)."""

    verdict: str = HEALTHY
    reasons: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def flag(self, level: str, reason: str) -> None:
        """Add a reason; the verdict becomes at least ``level``."""
        self.reasons.append(reason)
        if _RANK[level] > _RANK[self.verdict]:
            self.verdict = level


def headline(h: Health) -> str:
    """Return the verdict line (Markdown): the verdict and its reasons."""
    why = "; ".join(h.reasons[:4]) if h.reasons else "nothing past a threshold"
    return f"**{h.verdict.capitalize()}**: {why}."


def _guarded(h: Health, what: str, read: Callable[[], list[str]]) -> list[str]:
    # One source that cannot be read is a line saying so; the verdict goes on without it.
    try:
        return read()
    except (KassistError, ProbeError) as exc:
        return [f"{what:<10} not read ({exc.one_line()})"]
    except OSError as exc:
        return [f"{what:<10} not read ({exc.strerror or exc})"]


def stats_section(h: Health, summary: StatsSummary) -> list[str]:
    """Judge load, PSI and memory; return the summary's own lines."""
    from probes.stats.summary import summary_lines

    for level, reason in judge_stats(summary):
        h.flag(level, reason)
    h.data["stats"] = summary.to_dict()
    return summary_lines(summary)


def kernel_log_section(h: Health) -> list[str]:
    """Triage the ring buffer now: a kernel crash since boot needs attention."""
    from assistant.chat.kernel_log import detail_lines, headline, read_kernel_log

    log = read_kernel_log()
    crashes, events = log.result.crashes, log.result.events
    if crashes:
        h.flag(ATTENTION, f"{len(crashes)} kernel crash(es) since boot ({crashes[0].title[:60]})")
    elif events:
        h.flag(ADVICE, f"{len(events)} kernel event(s) since boot ({events[0].title[:60]})")
    h.data["kernel_log"] = {
        "records": log.records,
        "crashes": [c.title for c in crashes],
        "events": [e.title for e in events],
    }
    return [headline(log), *detail_lines(log, DETAIL_LINES)]


def tuning_section(h: Health, status: Any) -> list[str]:
    """Run the tuning scenarios over the counters since boot; recommendations are advice."""
    from assistant.tuning import tune_run
    from assistant.tuning.render import headline as tune_headline

    report, _obs = tune_run(status)
    if report.recommendations:
        h.flag(ADVICE, f"{len(report.recommendations)} tuning recommendation(s)")
    h.data["tuning"] = {"findings": [f.id for f in report.findings]}
    return [
        f"tuning     {tune_headline(report)}",
        *(f"  [{f.id}] {f.title}" for f in report.findings),
    ]


def drives_section(h: Health, monitor: Any) -> list[str]:
    """End the drives' one window: a finding needs attention; I/O errors since boot are advice."""
    from assistant.disks.render import device_rows, finding_lines, run_line

    findings = monitor.sample()
    for f in findings:
        h.flag(ATTENTION, f"drive {f.device}: {f.kind}")
    errors = {
        r["device"]: r["errors_before"] + r["timeouts_before"]
        for r in device_rows(monitor)
        if r["errors_before"] or r["timeouts_before"]
    }
    for device, n in errors.items():
        h.flag(ADVICE, f"{n} I/O error(s) on {device} since boot")
    h.data["drives"] = {"findings": [f.to_dict() for f in findings], "errors_since_boot": errors}
    lines = [f"drives     {run_line(monitor, findings, 1, WINDOW_S)}"]
    lines += [f"  {d}: {n} I/O error(s) or timeout(s) in the kernel log since boot"
              for d, n in errors.items()]  # fmt: skip
    for f in findings:
        lines += finding_lines(f)
    return lines


def agent_section(h: Health, reading: Any, pending: Sequence[str]) -> list[str]:
    """Say whether the agent runs and what waits for approval (information, not a problem)."""
    h.data["agent"] = {"reachable": reading.reachable, "pending": list(pending)}
    lines = [f"agent      {reading.line()}"]
    if pending:
        lines.append(f"pending    {len(pending)} change(s) wait for your approval:")
        lines += [f"  {p}" for p in pending]
    else:
        lines.append("pending    no change waits for approval")
    return lines


def check_health(
    socket: str,
    pending: Sequence[str],
    say: Callable[[str], None],
    wait: Callable[[float], None],
) -> Health:
    """Read every source, judge, and return the verdict with its evidence.

    :param socket: the agent's socket.
    :param pending: the conversation's proposals no one decided yet (one line each).
    :param say: told what is being read (progress for a person).
    :param wait: sleeps for the measuring window (and may raise to cancel).
    """
    import time

    from actions.client import try_status
    from assistant.disks.monitor import DiskMonitor
    from probes.stats.summary import read_summary, user_hz
    from probes.stats.tasks import read_tasks, task_usage, top_lines, top_tasks

    h = Health()
    say("reading load, memory and pressure")
    stats = _guarded(h, "stats", lambda: stats_section(h, read_summary()))
    start, before = time.monotonic(), read_tasks()
    monitor: Any = None
    drives: list[str] = []
    try:
        monitor = DiskMonitor(bpf=False, smart=False)
    except (KassistError, ProbeError, OSError) as exc:  # one reader's failure is one line
        drives = [f"drives     not read ({exc})"]
    try:
        say("reading the kernel log since boot")
        kernel = _guarded(h, "kernel log", lambda: kernel_log_section(h))
        say("running the tuning scenarios over the counters since boot")
        reading = try_status(socket)
        tuning = _guarded(h, "tuning", lambda: tuning_section(h, reading.status))
        left = WINDOW_S - (time.monotonic() - start)
        if left > 0:
            say(f"measuring CPU and drives for {WINDOW_S:g} s")
            wait(left)
        seconds = time.monotonic() - start
        usage = task_usage(before, read_tasks(), seconds, user_hz())
        tasks = top_lines(top_tasks(usage, "cpu", TOP_TASKS), "cpu", seconds)
        if monitor is not None:
            drives = _guarded(h, "drives", lambda: drives_section(h, monitor))
    finally:
        if monitor is not None:
            monitor.close()
    agent = agent_section(h, reading, pending)
    h.lines = [*stats, *tasks, *kernel, *tuning, *drives, *agent]
    return h
