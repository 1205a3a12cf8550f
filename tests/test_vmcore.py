"""drgn analyses of a real vmcore: a Debian cloud kernel that crashed in kassist_crash.ko.

The fixture (tests/fixtures/vmcore/build.sh) boots the kernel under QEMU,
loads the module, and writes "crash" to /proc/kassist_crash, which
dereferences NULL three calls deep; a kernel thread waits in D state.
The expected values come from the module's source and the same boot's
serial console log, not from this file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from assistant.triage import triage_path
from assistant.vmcore import analyse_target, open_target, triage_analysis
from probes.drgn import Analysis, DebugSources, DumpFormat, Frame, dmesg_lines, open_vmcore
from tests.conftest import run_kassist
from tests.vmcore_fixture import (
    VmcoreFixture,
    reassemble_flattened,
    source_line,
    vmcore_fixture,
)

__all__ = ["vmcore_fixture"]


@pytest.fixture(scope="module")
def analysis(vmcore_fixture: VmcoreFixture) -> Analysis:
    target = open_target(str(vmcore_fixture.vmcore), debug_dir=str(vmcore_fixture.debug_dir))
    return analyse_target(target)


def _console(fx: VmcoreFixture) -> str:
    return fx.console_log.read_text(errors="replace")


def _frame(a: Analysis, function: str) -> Frame:
    assert a.stack is not None
    return next(f for f in a.stack.frames if f.function == function)


def _local(frame: Frame, name: str) -> str | None:
    return next(v.value for v in frame.locals if v.name == name)


def test_crashed_task_matches_the_console(
    analysis: Analysis, vmcore_fixture: VmcoreFixture
) -> None:
    m = re.search(
        r"CPU: (\d+) PID: (\d+) Comm: (\S+) Tainted: ([^\n]*?) 6\.", _console(vmcore_fixture)
    )
    assert m, "the console log has no oops header"
    assert analysis.crash is not None and analysis.crash.task is not None
    task = analysis.crash.task
    assert (task.comm, task.pid, task.cpu) == (m.group(3), int(m.group(2)), int(m.group(1)))
    assert task.comm == "kassist-crash"  # the script the init ran (build.sh)
    assert analysis.crash.cpu == int(m.group(1))
    # Out-of-tree (O) and unsigned (E) module, and D: the kernel died (oops).
    for letter in "OED":
        assert letter in analysis.crash.tainted
    assert analysis.crash.release == vmcore_fixture.abi


def test_panic_message(analysis: Analysis, vmcore_fixture: VmcoreFixture) -> None:
    assert analysis.crash is not None and analysis.crash.panic_message
    assert analysis.crash.panic_message.startswith("Kernel panic - not syncing")
    assert analysis.crash.panic_message in _console(vmcore_fixture)


def test_guilty_frame_is_in_the_module(analysis: Analysis) -> None:
    assert analysis.stack is not None and analysis.stack.guilty is not None
    frames = analysis.stack.frames
    guilty = frames[analysis.stack.guilty]
    assert guilty.function == "kassist_crash_level3"
    assert guilty.module == "kassist_crash"
    assert guilty.file is not None and guilty.file.endswith("kassist_crash.c")
    assert guilty.line == source_line("READ_ONCE(item->id)")
    callers = [f.function for f in frames[analysis.stack.guilty + 1 :]][:4]
    assert callers == [
        "kassist_crash_level2",
        "kassist_crash_level1",
        "kassist_crash_write",
        # pde_write is inlined into proc_reg_write; drgn shows both.
        "pde_write",
    ]
    # Every frame of the crashed stack is in the kernel and symbolised.
    assert all(f.function for f in frames)


def test_known_locals(analysis: Analysis) -> None:
    level3 = _frame(analysis, "kassist_crash_level3")
    assert int(_local(level3, "magic") or "", 0) == 0xDEADBEEF
    assert int(_local(level3, "item") or "", 0) == 0  # the NULL it dereferenced
    assert int(_local(level3, "index") or "", 0) == 9  # 7 from level1 + depth 2
    level2 = _frame(analysis, "kassist_crash_level2")
    assert int(_local(level2, "depth") or "", 0) == 2
    level1 = _frame(analysis, "kassist_crash_level1")
    assert int(_local(level1, "cookie") or "", 0) == 0x6B617373
    write = _frame(analysis, "kassist_crash_write")
    assert _local(write, "cmd") == '"crash\\n"'
    assert write.line == source_line("kassist_crash_level1())")


def test_blocked_task_in_d_state(analysis: Analysis) -> None:
    assert analysis.blocked is not None and analysis.dmesg is not None
    (blocked,) = [b for b in analysis.blocked if b.task.comm == "kassist_blocker"]
    loaded = next(r.text for r in analysis.dmesg if "blocker pid" in r.text)
    assert blocked.task.pid == int(loaded.rsplit(" ", 1)[1])
    assert blocked.task.state == "D"
    functions = [f.function for f in blocked.frames]
    assert "kassist_blocker_fn" in functions
    assert functions.index("schedule") < functions.index("kassist_blocker_fn")
    waiter = blocked.frames[functions.index("kassist_blocker_fn")]
    assert waiter.module == "kassist_crash"
    assert waiter.line == source_line("wait_for_completion(&kassist_never)")
    # The crashed task is running, not blocked.
    assert all(b.task.comm != "kassist-crash" for b in analysis.blocked)


def test_modules(analysis: Analysis) -> None:
    assert analysis.modules is not None and analysis.stack is not None
    by_name = {m.name: m for m in analysis.modules}
    assert set(by_name) == {"kassist_crash", "pvpanic_mmio", "pvpanic", "qemu_fw_cfg"}
    mine = by_name["kassist_crash"]
    assert mine.taints == "OE" and mine.state == "LIVE" and mine.debug_info
    assert by_name["pvpanic"].taints == ""
    guilty = analysis.stack.frames[analysis.stack.guilty or 0]
    assert mine.address <= guilty.pc < mine.address + mine.size


def test_sysctl_at_crash_time(analysis: Analysis) -> None:
    assert analysis.sysctl is not None
    values = {s.key: s.value for s in analysis.sysctl}
    assert values["vm.swappiness"] == "42"  # set by the fixture's init script
    assert values["kernel.panic_on_oops"] == "1"  # oops=panic on the command line
    assert values["kernel.panic"] == "0"  # panic=0
    assert values["net.ipv4.tcp_congestion_control"].isidentifier()


def test_memory_summary(analysis: Analysis) -> None:
    m = analysis.memory
    assert m is not None
    assert 128 << 20 < m.total <= 256 << 20  # QEMU -m 256
    assert 0 < m.free < m.total
    assert 0 < m.slab_reclaimable + m.slab_unreclaimable < m.total
    sizes = [c.bytes for c in m.top_slab_caches]
    assert sizes == sorted(sizes, reverse=True) and len(sizes) == 10
    assert all(c.active_objects <= c.total_objects for c in m.top_slab_caches)


def test_run_queues(analysis: Analysis) -> None:
    assert analysis.runqueues is not None and analysis.crash is not None
    (rq,) = analysis.runqueues  # QEMU -smp 1
    assert rq.current.comm == "kassist-crash" and rq.nr_running >= 1


def test_printk_buffer_is_the_console(analysis: Analysis, vmcore_fixture: VmcoreFixture) -> None:
    assert analysis.dmesg is not None
    console = set(_console(vmcore_fixture).splitlines())
    lines = dmesg_lines(analysis.dmesg)
    assert lines[-1].endswith("Kernel panic - not syncing: Fatal exception")
    # Every kernel line of the console is in the buffer, and the other way round.
    kernel_console = {line for line in console if line.startswith("[")}
    assert kernel_console <= set(lines) | {""}
    assert sum(line in console for line in lines) / len(lines) > 0.95


def test_printk_records_are_the_one_log_record_type(analysis: Analysis) -> None:
    from probes.logs import LogRecord

    assert analysis.dmesg
    assert all(isinstance(r, LogRecord) and r.source == "vmcore" for r in analysis.dmesg)
    seqs = [r.seq for r in analysis.dmesg if r.seq is not None]
    assert len(seqs) == len(analysis.dmesg)
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(r.level is not None and 0 <= r.level <= 7 for r in analysis.dmesg)
    # The kernel orders records by sequence number; each CPU stamps its own with its own
    # clock, so timestamps need not be monotonic across CPUs (one fixture had 8000 µs
    # then 350 µs at record 101): present and non-negative is what it promises.
    assert all(r.ts_us is not None and r.ts_us >= 0 for r in analysis.dmesg)
    panic = next(r for r in analysis.dmesg if "Kernel panic - not syncing" in r.text)
    assert panic.level == 0  # KERN_EMERG


def test_triage_title_equals_the_console_logs(
    analysis: Analysis, vmcore_fixture: VmcoreFixture
) -> None:
    from_vmcore = triage_analysis(analysis)
    from_console = triage_path(str(vmcore_fixture.console_log))
    assert from_vmcore.crashes and from_console.crashes
    a, b = from_vmcore.crashes[0], from_console.crashes[0]
    assert a.title == b.title
    assert "kassist_crash_level3" in a.title
    assert (a.type, a.frame, a.signature) == (b.type, b.frame, b.signature)
    stack = from_vmcore.vmcore.stack if from_vmcore.vmcore else None
    assert stack is not None and stack.guilty is not None
    assert stack.frames[stack.guilty].function == a.frame


def test_explicit_vmlinux_and_ko(vmcore_fixture: VmcoreFixture) -> None:
    target = open_vmcore(
        str(vmcore_fixture.vmcore),
        DebugSources(vmlinux=str(vmcore_fixture.vmlinux), extra=[str(vmcore_fixture.module_ko)]),
    )
    a = analyse_target(target, ["stack"], with_locals=False)
    assert a.stack is not None and a.stack.guilty is not None
    assert a.stack.frames[a.stack.guilty].function == "kassist_crash_level3"
    # Without the helper modules' debug files, drgn says which are missing.
    assert "pvpanic" in target.missing_debug_info
    assert "kassist_crash" not in target.missing_debug_info


def test_kdump_compressed_gives_the_same_analysis(
    analysis: Analysis, vmcore_fixture: VmcoreFixture, tmp_path: Path
) -> None:
    # QEMU 7.2 writes the flattened form; makedumpfile -R would give this file.
    kdump = tmp_path / "vmcore.kdump"
    reassemble_flattened(vmcore_fixture.vmcore, kdump)
    target = open_vmcore(str(kdump), DebugSources(debug_dir=str(vmcore_fixture.debug_dir)))
    assert target.format is DumpFormat.KDUMP and target.warnings == []
    again = analyse_target(target, ["crash", "stack", "blocked"])
    assert again.crash == analysis.crash
    assert again.stack == analysis.stack
    assert again.blocked == analysis.blocked


def test_debug_info_found_by_build_id(vmcore_fixture: VmcoreFixture, tmp_path: Path) -> None:
    # A debug dir with nothing but .build-id/xx/yyyy.debug links.
    source = vmcore_fixture.debug_dir / ".build-id"
    for link in source.glob("*/*.debug"):
        (tmp_path / ".build-id" / link.parent.name).mkdir(parents=True, exist_ok=True)
        (tmp_path / ".build-id" / link.parent.name / link.name).symlink_to(link.resolve())
    target = open_vmcore(str(vmcore_fixture.vmcore), DebugSources(debug_dir=str(tmp_path)))
    assert target.missing_debug_info == []
    a = analyse_target(target, ["stack"], with_locals=False)
    assert a.stack is not None and a.stack.frames[a.stack.guilty or 0].module == "kassist_crash"


def test_cli_bt_shows_locals(vmcore_fixture: VmcoreFixture) -> None:
    proc = run_kassist(
        ["vmcore", "bt", str(vmcore_fixture.vmcore), "--debug-dir", str(vmcore_fixture.debug_dir)]
    )
    assert proc.returncode == 0, proc.stderr
    guilty = next(line for line in proc.stdout.splitlines() if "faulted here" in line)
    assert "kassist_crash_level3" in guilty and "[kassist_crash]" in guilty
    assert f"magic = {0xDEADBEEF}" in proc.stdout
    assert "loading debug info" in proc.stderr  # progress goes to stderr


def test_cli_triage_vmcore_json(vmcore_fixture: VmcoreFixture) -> None:
    proc = run_kassist(
        [
            "triage",
            "--format",
            "json",
            "--vmcore",
            str(vmcore_fixture.vmcore),
            "--vmlinux",
            str(vmcore_fixture.vmlinux),
            "--debug-dir",
            str(vmcore_fixture.debug_dir),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["schema"] == "kassist.triage/1"
    assert data["source"] == f"vmcore:{vmcore_fixture.vmcore}"
    assert "kassist_crash_level3" in data["crashes"][0]["title"]
    vm = data["vmcore"]
    assert vm["crash"]["task"]["comm"] == "kassist-crash"
    assert "dmesg" not in vm and vm["dmesg_records"] > 100
    assert vm["stack"]["frames"][vm["stack"]["guilty"]]["function"] == "kassist_crash_level3"
    assert [b["task"]["comm"] for b in vm["blocked"]] == ["kassist_blocker"]
    assert {m["name"] for m in vm["modules"]} >= {"kassist_crash"}


def test_cli_report_has_stack_locals_and_blocked_tasks(vmcore_fixture: VmcoreFixture) -> None:
    proc = run_kassist(
        [
            "report",
            "--no-llm",
            "--vmcore",
            str(vmcore_fixture.vmcore),
            "--debug-dir",
            str(vmcore_fixture.debug_dir),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    md = proc.stdout
    assert md.startswith("# BUG: unable to handle kernel NULL pointer dereference")
    stack = md.split("### Stack of the crashed task, with locals", 1)[1]
    assert "kassist_crash_level3" in stack.split("faulted here", 1)[0].splitlines()[-1]
    assert f"magic = {0xDEADBEEF}" in stack
    blocked = md.split("### Tasks blocked in D state (1)", 1)[1]
    assert "kassist_blocker" in blocked and "kassist_blocker_fn" in blocked


def test_cli_dmesg_and_info_json(vmcore_fixture: VmcoreFixture) -> None:
    debug = ["--debug-dir", str(vmcore_fixture.debug_dir), "-q"]
    dmesg = run_kassist(["vmcore", "dmesg", str(vmcore_fixture.vmcore), *debug])
    assert dmesg.returncode == 0, dmesg.stderr
    assert dmesg.stderr == ""  # -q: no progress, and the flattened-format warning is kept quiet
    lines = dmesg.stdout.splitlines()
    assert lines[-1].endswith("Kernel panic - not syncing: Fatal exception")
    assert set(lines) >= {ln for ln in _console(vmcore_fixture).splitlines() if "] Oops:" in ln}
    info = run_kassist(["vmcore", "info", str(vmcore_fixture.vmcore), *debug, "--format", "json"])
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["crash"]["task"]["comm"] == "kassist-crash"
    assert {s["key"]: s["value"] for s in data["sysctl"]}["vm.swappiness"] == "42"
    assert "stack" not in data and "memory" not in data  # info reads only what it shows
