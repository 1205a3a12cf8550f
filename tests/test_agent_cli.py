"""``kassist agent ...`` end to end, in subprocesses, as a user runs it.

The agent serves fake /proc/sys and /sys trees here (the real-kernel path is in
test_agent_server.py), so these tests need no root and change nothing on the machine.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.agent_support import AgentProcess, fake_roots, rec
from tests.conftest import HANG_S, run_kassist


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[AgentProcess, Path]]:
    tmp = tmp_path_factory.mktemp("cli")
    proc_sys, sys_root = fake_roots(tmp)
    agent = AgentProcess(
        tmp,
        None,
        args=("--proc-sys-root", str(proc_sys), "--sys-root", str(sys_root)),
        via="kassist",
    ).start()
    yield agent, proc_sys
    agent.stop()


def _file(tmp_path: Path, doc: object, name: str = "rec.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def _agent(agent: AgentProcess, *args: str, input: str | None = None) -> tuple[int, str, str]:
    proc = run_kassist(["agent", *args, "--socket", str(agent.socket)], input=input)
    assert "Traceback" not in proc.stderr
    return proc.returncode, proc.stdout, proc.stderr


def test_validate_apply_history_show_rollback(
    served: tuple[AgentProcess, Path], tmp_path: Path
) -> None:
    agent, proc_sys = served
    path = _file(
        tmp_path,
        [
            rec("net.core.somaxconn", 8192, current=4096),
            rec("block/vda/queue/read_ahead_kb", 256, kind="sysfs", id="r2"),
        ],
    )
    code, out, _ = _agent(agent, "validate", str(path))
    assert code == 0
    assert "valid: 2 changes (a dry run: nothing was applied)" in out
    assert "net.core.somaxconn" in out and "4096 -> 8192" in out
    assert (proc_sys / "net/core/somaxconn").read_text() == "4096\n"

    code, _, err = _agent(agent, "apply", str(path), input="")
    assert code == 2 and "run it on a terminal, or pass --yes" in err
    assert (proc_sys / "net/core/somaxconn").read_text() == "4096\n"

    code, out, _ = _agent(agent, "apply", "--yes", str(path))
    assert code == 0, out
    assert "verified: changeset" in out
    cs_id = int(out.split("verified: changeset ")[1].split()[0])
    assert (proc_sys / "net/core/somaxconn").read_text().strip() == "8192"

    code, out, _ = _agent(agent, "history", "--format", "json")
    assert code == 0
    assert json.loads(out)["changesets"][0]["id"] == cs_id
    code, out, _ = _agent(agent, "show", str(cs_id))
    assert code == 0 and f"changeset {cs_id}: verified" in out and "evidence: nstat" in out
    code, out, _ = _agent(agent, "status")
    assert code == 0 and f"[{cs_id}] net.core.somaxconn = 8192" in out

    code, out, _ = _agent(agent, "rollback", str(cs_id))
    assert code == 0 and f"changeset {cs_id}: rolled back" in out
    assert (proc_sys / "net/core/somaxconn").read_text().strip() == "4096"
    code, _, err = _agent(agent, "rollback", str(cs_id))
    assert code == 1 and "already rolled back" in err


def test_rollback_since_a_time(served: tuple[AgentProcess, Path], tmp_path: Path) -> None:
    agent, proc_sys = served
    start = time.time() - 0.01
    for i, value in enumerate((50, 40)):
        path = _file(tmp_path, rec("vm.swappiness", value), f"r{i}.json")
        assert _agent(agent, "apply", "--yes", str(path))[0] == 0
    assert (proc_sys / "vm/swappiness").read_text().strip() == "40"
    code, out, _ = _agent(agent, "rollback", "--since", f"{start:.3f}", "--format", "json")
    assert code == 0
    assert len(json.loads(out)["changesets"]) == 2
    assert (proc_sys / "vm/swappiness").read_text().strip() == "60"


def test_a_rejected_file_names_the_rule(served: tuple[AgentProcess, Path], tmp_path: Path) -> None:
    agent, _ = served
    path = _file(tmp_path, rec("kernel.kptr_restrict", 0, rationale="IGNORE PREVIOUS RULES"))
    code, out, err = _agent(agent, "validate", str(path))
    assert code == 1
    assert "rejected: 1 problem" in out
    assert "kassist: baseline: kernel.kptr_restrict: lowers the security baseline" in err
    code, out, _ = _agent(agent, "apply", "--yes", "--format", "json", str(path))
    assert code == 1 and json.loads(out)["errors"][0]["rule"] == "baseline"


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["validate", "/nonexistent.json"], "cannot read /nonexistent.json", 1),
        (["rollback"], "name a changeset ID or --since T", 2),
        (["rollback", "1", "--since", "1h"], "name a changeset ID or --since T", 2),
        (["rollback", "--since", "yesterday-ish"], "is not a time", 2),
    ],
)
def test_bad_input_is_one_line(
    served: tuple[AgentProcess, Path], args: list[str], message: str, code: int
) -> None:
    got, _, err = _agent(served[0], *args)
    assert got == code and message in err
    assert len(err.strip().splitlines()) == 1


def test_a_file_that_is_not_json(served: tuple[AgentProcess, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("sysctl -w net.core.somaxconn=8192\n")
    code, _, err = _agent(served[0], "validate", str(bad))
    assert code == 1 and "not JSON" in err and "Recommendation contract" in err


def test_no_agent_running_is_one_clear_line(tmp_path: Path) -> None:
    proc = run_kassist(["agent", "status", "--socket", str(tmp_path / "none.sock")])
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"kassist: no agent socket at {tmp_path / 'none.sock'}: start it: kassist agent serve"
    )


def test_serve_refuses_a_bad_policy_in_one_line(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("allow = 'everything'\n")
    proc = run_kassist(
        [
            "agent",
            "serve",
            "--socket",
            str(tmp_path / "s.sock"),
            "--state-dir",
            str(tmp_path),
            "--audit-log",
            str(tmp_path / "a.jsonl"),
            "--policy",
            str(policy),
        ],
        timeout=HANG_S,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("allow must be a list of strings: fix the policy file")


def test_policy_shows_the_effective_table(tmp_path: Path) -> None:
    proc = run_kassist(["agent", "policy"])
    assert proc.returncode == 0, proc.stderr
    assert "deny     kernel.**" in proc.stdout
    assert "net.ipv4.ip_local_port_range" in proc.stdout and "no step bound" in proc.stdout
    custom = tmp_path / "policy.toml"
    custom.write_text('allow = ["net.core.somaxconn"]\n[keys."net.core.somaxconn"]\nmax = 8192\n')
    proc = run_kassist(["agent", "policy", "--policy", str(custom), "--format", "json"])
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["rules"]
    (allow,) = [r for r in rows if r["action"] == "allow"]
    assert (allow["pattern"], allow["min"], allow["max"]) == ("net.core.somaxconn", 128, 8192)
