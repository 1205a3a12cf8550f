"""`kassist doctor` inspects everything, with a fix hint for each gap, and exits 0."""

from __future__ import annotations

import grp
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, require, run_kassist

EXPECTED = {
    "root",
    "/dev/kmsg",
    "bpftrace",
    "tracefs",
    "bpffs",
    "drgn",
    "/proc/kcore",
    "BTF",
    "/dev/kvm",
    "model",
    "knowledge base",
    "agent group",
    "agent socket",
}


def test_doctor_reports_every_check_with_hints(tmp_path: Path) -> None:
    proc = run_kassist(
        ["doctor", "--format", "json"], env={"KASSIST_SOCKET": str(tmp_path / "no-agent.sock")}
    )
    assert proc.returncode == 0, proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    assert set(checks) == EXPECTED
    for check in checks.values():
        assert check["status"] in {"ok", "missing"}, check
        if check["status"] != "ok":
            assert check["hint"], check
    # facts of this machine that the doctor must get right
    assert checks["root"]["status"] == ("ok" if os.geteuid() == 0 else "missing")
    assert checks["BTF"]["status"] == (
        "ok" if os.path.exists("/sys/kernel/btf/vmlinux") else "missing"
    )
    assert checks["/proc/kcore"]["status"] == ("ok" if os.path.exists("/proc/kcore") else "missing")
    assert checks["bpffs"]["status"] == (
        "ok" if " - bpf " in Path("/proc/self/mountinfo").read_text() else "missing"
    )
    try:
        grp.getgrnam("kassist")
        group_exists = True
    except KeyError:
        group_exists = False
    if not group_exists:
        assert checks["agent group"]["status"] == "missing"
        assert "groupadd --system kassist" in checks["agent group"]["hint"]
    assert checks["agent socket"]["status"] == "missing"
    assert "kassist agent serve" in checks["agent socket"]["hint"]


def test_doctor_names_a_missing_model(tmp_path: Path) -> None:
    proc = run_kassist(["doctor", "--model", str(tmp_path / "gone.gguf")])
    assert proc.returncode == 0, proc.stderr
    model_line = next(line for line in proc.stdout.splitlines() if " model " in f" {line} ")
    assert "does not exist" in model_line


def test_doctor_names_a_missing_knowledge_base_and_how_to_build_it(tmp_path: Path) -> None:
    proc = run_kassist(
        ["doctor", "--backend", "none", "--format", "json"],
        env={"KASSIST_KB": str(tmp_path / "kb.sqlite")},
    )
    assert proc.returncode == 0, proc.stderr
    kb = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "knowledge base")
    assert kb["status"] == "missing"
    assert str(tmp_path / "kb.sqlite") in kb["detail"]
    assert "kassist kb build" in kb["hint"]


def test_doctor_names_the_knowledge_base_it_found_and_its_kernel() -> None:
    from assistant.knowledge import try_open

    found = try_open()
    require(found is not None, "the knowledge base is not built (./setup.sh as root builds it)")
    assert found is not None
    proc = run_kassist(["doctor", "--backend", "none", "--format", "json"])
    kb = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "knowledge base")
    assert kb["status"] == "ok", kb
    assert kb["detail"].startswith(f"{found.path}: linux {found.kernel_version} (linux-source-6.1 ")


def _doctor_as_nobody_with_groups(etc_group: str, tmp_path: Path) -> dict[str, str]:
    """Run doctor as nobody in a mount namespace whose /etc/group is ``etc_group``."""
    require(os.geteuid() == 0, "needs root (a private mount namespace and setpriv)")
    require(shutil.which("unshare") is not None, "needs unshare (util-linux)")
    require(shutil.which("setpriv") is not None, "needs setpriv (util-linux)")
    group_file = tmp_path / "group"
    group_file.write_text(etc_group)
    group_file.chmod(0o644)
    kassist = f"{shlex.quote(sys.executable)} -m assistant doctor --backend none --format json"
    script = (
        f"mount --bind {shlex.quote(str(group_file))} /etc/group && "
        "exec env HOME=/nonexistent XDG_CONFIG_HOME=/nonexistent XDG_STATE_HOME=/nonexistent"
        f" setpriv --reuid=65534 --regid=65534 --clear-groups {kassist}"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
    return checks["agent group"]  # type: ignore[no-any-return]


def test_doctor_says_how_to_create_the_agents_group(tmp_path: Path) -> None:
    check = _doctor_as_nobody_with_groups("root:x:0:\nnogroup:x:65534:\n", tmp_path)
    assert check["status"] == "missing"
    assert check["detail"] == "no group 'kassist': only root may talk to the agent"
    assert check["hint"] == "as root: groupadd --system kassist, then usermod -aG kassist USER"


def test_doctor_says_how_to_join_the_agents_group(tmp_path: Path) -> None:
    check = _doctor_as_nobody_with_groups("root:x:0:\nkassist:x:990:daemon\n", tmp_path)
    assert check["status"] == "missing"
    assert check["detail"] == "nobody is not in group 'kassist': the agent will refuse nobody"
    assert check["hint"] == "as root: usermod -aG kassist nobody, then log in again"


def test_doctor_sees_a_member_of_the_agents_group(tmp_path: Path) -> None:
    check = _doctor_as_nobody_with_groups("root:x:0:\nkassist:x:990:daemon,nobody\n", tmp_path)
    assert check == {
        "name": "agent group",
        "status": "ok",
        "detail": "nobody is in group 'kassist'",
        "hint": "",
    }
