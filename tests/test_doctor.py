"""`kassist doctor` inspects everything, with a fix hint for each gap, and exits 0."""

from __future__ import annotations

import json
import os

from tests.conftest import run_kassist

EXPECTED = {
    "root",
    "/dev/kmsg",
    "bpftrace",
    "tracefs",
    "drgn",
    "/proc/kcore",
    "BTF",
    "/dev/kvm",
    "model",
    "agent socket",
}


def test_doctor_reports_every_check_with_hints(tmp_path) -> None:  # type: ignore[no-untyped-def]
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
    assert checks["agent socket"]["status"] == "missing"
    assert "kassist agent serve" in checks["agent socket"]["hint"]


def test_doctor_names_a_missing_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = run_kassist(["doctor", "--model", str(tmp_path / "gone.gguf")])
    assert proc.returncode == 0, proc.stderr
    model_line = next(line for line in proc.stdout.splitlines() if " model " in f" {line} ")
    assert "does not exist" in model_line
