"""The chat as a new user meets it: a verdict, what uses the CPU, crashes since boot, the
routing of operator questions, and the referents of a conversation.

Figures are checked against /proc read here on its own, and against the command line's.
"""

from __future__ import annotations

import doctest
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.chat.health import ADVICE, ATTENTION, HEALTHY, judge_stats
from assistant.chat.session import ChatSession
from assistant.chat.tools import Context, run_tool
from probes.stats.summary import PsiLine, StatsSummary, pressure_line, summary_lines
from tests.chat_support import cpus, crashes_by_cli, kernel_dmesg, memory_total_line
from tests.conftest import DATA, hang_deadline, require, run_kassist


@pytest.fixture
def session(tmp_path: Path) -> ChatSession:
    return ChatSession(
        None, Context(store=str(tmp_path / "crashes.db"), socket=str(tmp_path / "no.sock"))
    )


@pytest.mark.parametrize(
    "module",
    [
        "assistant.markdown",
        "assistant.chat.cues",
        "assistant.chat.health",
        "probes.stats.summary",
        "probes.stats.tasks",
        "tui.widgets.panels",
    ],
)
def test_the_examples_in_the_docstrings_hold(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


# -- the verdict -------------------------------------------------------------------------------


def test_how_is_the_system_doing_gives_a_verdict_and_its_evidence(session: ChatSession) -> None:
    turn = session.ask("how is the system doing?")
    assert turn.decision.action == "health", turn.decision
    assert not turn.error, turn.error
    assert turn.answer.startswith(
        ("**Healthy**", "**Healthy, with advice**", "**Needs attention**")
    )
    text = turn.answer
    # each line from the feature's own renderer, with /proc's figures
    assert memory_total_line() in text
    assert f"({cpus()} CPUs:" in text
    assert "pressure   " in text and "processes by CPU over" in text
    assert "kernel log " in text and "since boot (read now from /dev/kmsg" in text
    assert "tuning     " in text and "drives     " in text
    assert "agent      not reachable at" in text and "no change waits for approval" in text
    data = turn.result.data if turn.result else {}
    assert data["verdict"] in (HEALTHY, ADVICE, ATTENTION)
    # the verdict follows from its reasons: no reason, healthy
    assert (data["verdict"] == HEALTHY) == (data["reasons"] == [])


def test_the_verdict_table() -> None:
    calm = StatsSummary(cpus=2, load1=0.1, mem_total=100, mem_available=90,
                        psi={"cpu": PsiLine(0.0), "memory": PsiLine(0.0, 0.0)})  # fmt: skip
    assert judge_stats(calm) == []
    loaded = StatsSummary(cpus=2, load1=4.0, psi={"memory": PsiLine(12.0, 0.5)})
    levels = dict((reason.split(" ")[0], level) for level, reason in judge_stats(loaded))
    assert levels == {"load": ATTENTION, "memory": ATTENTION}
    busy = StatsSummary(cpus=4, load1=3.6)  # 0.9 per CPU: busy, not overloaded
    assert [level for level, _ in judge_stats(busy)] == [ADVICE]


def test_memory_without_swap_says_so() -> None:
    lines = summary_lines(StatsSummary(cpus=1, mem_total=1 << 30, mem_available=1 << 29,
                                       swap_total=0, swap_free=0))  # fmt: skip
    assert any("no swap" in line for line in lines)
    assert not any("swap free" in line or "swap 0.0" in line for line in lines)


def test_no_figure_is_cut_at_any_load() -> None:
    # Under load every PSI avg10 has two or three digits: the line is wider than 80
    # columns, and the CLI, which cuts its lines at 80, showed "io 48.29%/0.0…".
    big = StatsSummary(
        cpus=256, load1=123.45, load5=110.2, load15=99.87, runnable=1234, tasks=123456,
        mem_total=1 << 40, mem_available=1 << 39, swap_total=1 << 36, swap_free=1 << 35,
        psi={r: PsiLine(100.0, 100.0) for r in ("cpu", "memory", "io")},
        tcp_inuse=123456, tcp_tw=654321, tcp_established=99999,
    )  # fmt: skip
    lines = summary_lines(big)
    assert all(len(line) <= 80 for line in lines), [len(line) for line in lines]
    text = " ".join(" ".join(lines).split())
    for figure in ("cpu 100.00%/100.00%", "memory 100.00%/100.00%", "io 100.00%/100.00%",
                   "123.45 110.20 99.87", "runnable 1234/123456", "256 CPUs: 0.48 per CPU",
                   "time-wait 654321"):  # fmt: skip
        assert figure in text, (figure, lines)
    # a line that fits is left as it was
    idle = StatsSummary(cpus=2, psi={r: PsiLine(0.0, 0.0) for r in ("cpu", "memory", "io")})
    assert summary_lines(idle) == [pressure_line(idle)]


# -- what is using the CPU and the memory ---------------------------------------------------


@pytest.fixture
def workload() -> Iterator[tuple[int, int]]:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    hog = subprocess.Popen(
        [sys.executable, "-c", "import time; b = b'x' * (256 << 20); time.sleep(600)"]
    )
    try:
        deadline = hang_deadline()
        while _rss_kib(hog.pid) < 200 << 10:  # the 256 MiB are written
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield busy.pid, hog.pid
    finally:
        for p in (busy, hog):
            p.kill()
            p.wait()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_what_is_using_the_most_cpu_and_memory(
    session: ChatSession, workload: tuple[int, int]
) -> None:
    busy, hog = workload
    turn = session.ask("what is using the most CPU?")
    assert turn.decision.action == "top" and turn.decision.args == {"by": "cpu"}
    assert "processes by CPU over" in turn.answer and "PID" in turn.answer
    ranked = run_tool("top", {"by": "cpu", "limit": 100}, session.ctx).data["tasks"]
    by_pid = {t["pid"]: t for t in ranked}
    assert busy in by_pid and by_pid[busy]["cpu_percent"] > 5.0
    assert hog not in by_pid or by_pid[hog]["cpu_percent"] < by_pid[busy]["cpu_percent"]
    memory = run_tool("top", {"by": "memory", "limit": 100}, session.ctx).data["tasks"]
    row = next(t for t in memory if t["pid"] == hog)
    assert abs(row["rss_bytes"] / 1024 - _rss_kib(hog)) <= 0.05 * _rss_kib(hog)
    assert [t["rss_bytes"] for t in memory] == sorted(
        (t["rss_bytes"] for t in memory), reverse=True
    )


# -- crashes: the store, and the kernel log when the store knows nothing of this boot --------


def _kernel_dmesg() -> str:
    require(os.access("/dev/kmsg", os.R_OK), "needs read access to /dev/kmsg")
    return kernel_dmesg()


def test_any_crashes_reads_the_kernel_log_when_the_store_is_empty(session: ChatSession) -> None:
    dmesg = _kernel_dmesg()
    turn = session.ask("any kernel crashes recently?")
    assert turn.decision.action == "crashes"
    assert "is empty" in turn.answer and "I read the kernel log now" in turn.answer
    log = turn.result.data["kernel_log"] if turn.result else {}
    # the command line, on the kernel's own records of the same ring buffer, finds as many
    assert len(log["crashes"]) == crashes_by_cli(dmesg)
    assert log["records"] >= len(dmesg.splitlines()) // 2  # the buffer read, not the store


def test_user_space_lines_in_kmsg_are_not_kernel_records() -> None:
    from assistant.chat.kernel_log import read_kernel_log

    require(os.geteuid() == 0, "needs root to write to /dev/kmsg")
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write(f"kassist-chat-test {os.getpid()}: a line from user space\n")
    log = read_kernel_log()
    assert log.user_records >= 1
    assert log.records - log.user_records == log.result.lines


@pytest.mark.parametrize(
    "question", ["check dmesg for crashes", "triage the kernel log", "/triage", "/dmesg"]
)
def test_crash_questions_about_dmesg_triage_the_ring_buffer(
    session: ChatSession, question: str
) -> None:
    _kernel_dmesg()
    turn = session.ask(question)
    assert turn.decision.action == "triage" and not turn.error, turn.error
    assert "since boot (read now from /dev/kmsg" in turn.answer
    assert "Field required" not in turn.answer


# -- routing by what the question asks, and the conversation's referents ---------------------


def test_should_i_raise_a_key_answers_for_that_key(session: ChatSession) -> None:
    turn = session.ask("should I raise somaxconn?")
    assert (turn.decision.action, turn.decision.args) == ("tune", {"key": "net.core.somaxconn"})
    now = " ".join(Path("/proc/sys/net/core/somaxconn").read_text().split())
    assert f"net.core.somaxconn is {now} now" in turn.answer
    assert "proposes changing it" in turn.answer or "recommend net.core.somaxconn" in turn.answer
    assert session.memory.key == "net.core.somaxconn"
    docs = session.ask("what does it do?")  # the key just talked about
    assert docs.decision.action == "docs" and "net.core.somaxconn" in docs.answer


def test_explain_the_last_tuning_recommendation(session: ChatSession) -> None:
    turn = session.ask("explain the last tuning recommendation")
    assert turn.decision.action == "explain", turn.decision
    report = session.memory.tune_report
    assert report is not None
    if report.findings:
        assert report.findings[0].title in turn.answer
    else:
        assert "no finding to explain" in turn.answer


def test_a_report_for_that_crash_is_for_the_crash_just_triaged(session: ChatSession) -> None:
    log = DATA / "kasan-uaf-ip6_send_skb.log"
    triaged = session.ask(f"/triage {log}")
    signature = triaged.result.data["crashes"][0]["signature"] if triaged.result else ""
    assert session.memory.crash == signature
    turn = session.ask("write a bug report for that crash")
    assert turn.decision.action == "report", turn.decision
    assert "KASAN: use-after-free Read in ip6_send_skb" in turn.answer
    assert turn.result is not None and turn.result.data["signature"] == signature


def test_help_is_a_command(session: ChatSession) -> None:
    turn = session.ask("/help")
    assert turn.decision.action == "help" and "/health" in turn.answer
    assert "intel-speed-select" not in turn.answer
    hello = run_kassist(["ask", "--no-llm", "--no-history", "hello"])
    assert hello.returncode == 0 and "/help" in hello.stdout


def test_probe_stats_interval_shows_cpu_as_a_share_of_a_cpu() -> None:
    proc = run_kassist(["probe", "stats", "--interval", "0.5"])
    assert proc.returncode == 0, proc.stderr
    assert "cpu time, % of one CPU (all CPUs together)" in proc.stdout
    busiest = proc.stdout.split("busiest other counters", 1)[-1]
    assert "stat.cpu" not in busiest  # no CPU time left in USER_HZ ticks
