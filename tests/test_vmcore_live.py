"""drgn on a live kernel: the fixture's kernel booted under QEMU without crashing, read over QMP.

The guest runs the same initramfs with ``kassist.mode=live``: it loads the
modules (the D-state thread included) and stays up instead of crashing.
"""

from __future__ import annotations

import gc
import importlib.util
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from assistant.vmcore import analyse_target, open_target
from probes.drgn import Analysis
from tests.conftest import HANG_S, require, run_kassist
from tests.vmcore_fixture import BUILD_SCRIPT, VmcoreFixture, vmcore_fixture

__all__ = ["vmcore_fixture"]

BOOT_TIMEOUT = HANG_S


@pytest.fixture(scope="module")
def guest(
    vmcore_fixture: VmcoreFixture, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """Boot the fixture's kernel under QEMU (TCG); yield its QMP socket once it is up."""
    require(shutil.which("qemu-system-x86_64") is not None, "qemu-system-x86_64 is not installed")
    d = tmp_path_factory.mktemp("guest")
    sock, console = d / "qmp.sock", d / "console.log"
    qemu = subprocess.Popen(
        [
            "qemu-system-x86_64",
            *("-machine", "q35,accel=tcg", "-cpu", "max", "-m", "256", "-smp", "1"),
            *("-device", "vmcoreinfo", "-display", "none", "-monitor", "none"),
            *("-kernel", str(vmcore_fixture.vmlinuz), "-initrd", str(vmcore_fixture.initrd)),
            *("-append", "console=ttyS0 panic=0 kassist.mode=live"),
            *("-serial", f"file:{console}", "-qmp", f"unix:{sock},server=on,wait=off"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while "live mode, staying up" not in (console.read_text() if console.exists() else ""):
            if qemu.poll() is not None:
                pytest.fail(f"QEMU exited: {qemu.stderr.read().decode() if qemu.stderr else ''}")
            if time.monotonic() > deadline:
                pytest.fail(f"the guest did not come up in {BOOT_TIMEOUT:.0f} s")
            time.sleep(0.2)
        yield sock
    finally:
        qemu.kill()
        qemu.wait()


def _qmp_client() -> type:
    # The fixture's own stdlib QMP client (tests/fixtures/vmcore/qmp_dump.py).
    spec = importlib.util.spec_from_file_location("qmp_dump", BUILD_SCRIPT.parent / "qmp_dump.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    client: type = module.QMP
    return client


@pytest.fixture(scope="module")
def elf_dump(guest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ELF vmcore of the running guest (QMP dump-guest-memory, format elf)."""
    path = tmp_path_factory.mktemp("elf") / "vmcore.elf"
    qmp = _qmp_client()(str(guest), connect_timeout=30)
    try:
        qmp.command("dump-guest-memory", paging=False, protocol=f"file:{path}")
    finally:
        qmp.sock.close()
    return path


@pytest.fixture(scope="module")
def live(guest: Path, vmcore_fixture: VmcoreFixture) -> Analysis:
    target = open_target(f"qmp:{guest}", debug_dir=str(vmcore_fixture.debug_dir))
    assert target.live
    analysis = analyse_target(target)
    # QEMU serves one QMP client at a time: let go of the connection for the CLI test.
    del target
    gc.collect()
    return analysis


def test_live_guest_has_no_crash(live: Analysis, vmcore_fixture: VmcoreFixture) -> None:
    assert live.crash is not None
    assert live.crash.task is None and live.crash.cpu is None and live.crash.panic_message is None
    assert live.crash.release == vmcore_fixture.abi
    assert live.stack is None


def test_live_guest_blocked_task_and_modules(live: Analysis) -> None:
    assert live.blocked is not None and live.modules is not None
    (blocked,) = [b for b in live.blocked if b.task.comm == "kassist_blocker"]
    assert "kassist_blocker_fn" in [f.function for f in blocked.frames]
    assert {m.name for m in live.modules} == {
        "kassist_crash",
        "pvpanic_mmio",
        "pvpanic",
        "qemu_fw_cfg",
    }


def test_live_guest_log_and_sysctl(live: Analysis) -> None:
    assert live.dmesg is not None and live.sysctl is not None
    texts = [r.text for r in live.dmesg]
    assert any(t.startswith("kassist_crash: loaded, blocker pid") for t in texts)
    assert not any("NULL pointer dereference" in t for t in texts)
    assert {s.key: s.value for s in live.sysctl}["vm.swappiness"] == "42"


def test_live_guest_cli(guest: Path, vmcore_fixture: VmcoreFixture) -> None:
    proc = run_kassist(
        ["vmcore", "tasks", f"qmp:{guest}", "--debug-dir", str(vmcore_fixture.debug_dir), "-q"],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tasks in D state: 1" in proc.stdout
    assert "kassist_blocker_fn" in proc.stdout


def test_busy_qmp_socket_is_one_clear_error(guest: Path) -> None:
    import socket

    from assistant.errors import InputError

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as holder:
        holder.connect(str(guest))
        holder.recv(4096)  # the greeting: this client now owns QMP
        with pytest.raises(InputError, match="does not answer within"):
            open_target(f"qmp:{guest}")


def test_elf_dump_of_the_running_guest(elf_dump: Path, vmcore_fixture: VmcoreFixture) -> None:
    target = open_target(str(elf_dump), debug_dir=str(vmcore_fixture.debug_dir))
    assert target.format is not None and target.format.value == "elf"
    a = analyse_target(target, ["crash", "stack", "blocked", "dmesg", "modules"])
    assert a.errors == []
    assert a.crash is not None and a.crash.release == vmcore_fixture.abi
    # It did not crash: no panic message, no crashed task, no crashed stack.
    assert a.crash.panic_message is None and a.crash.task is None and a.stack is None
    assert a.blocked is not None and "kassist_blocker" in [b.task.comm for b in a.blocked]
    assert a.modules is not None and "kassist_crash" in [m.name for m in a.modules]


def test_truncated_elf_dump(elf_dump: Path, tmp_path: Path) -> None:
    from assistant.errors import InputError

    cut = tmp_path / "vmcore.elf"
    with open(elf_dump, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(elf_dump.stat().st_size // 2))
    with pytest.raises(InputError, match=r"is truncated: \d+ bytes, its segments need \d+"):
        open_target(str(cut))
