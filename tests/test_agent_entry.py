"""The agent's own entry point: ``python -m actions serve`` starts the root daemon without
the assistant, and ``kassist agent serve`` execs it (issue 10, part 3)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.agent_support import AgentProcess, RawConnection, fake_roots
from tests.conftest import HANG_S, ROOT, run_kassist


def _fake_args(tmp: Path) -> tuple[str, ...]:
    proc_sys, sys_root = fake_roots(tmp)
    return ("--proc-sys-root", str(proc_sys), "--sys-root", str(sys_root))


def test_serving_imports_nothing_of_the_assistant_nor_click(tmp_path: Path) -> None:
    # -X importtime logs every module the serving process imports, as it imports it.
    agent = AgentProcess(tmp_path, None, args=_fake_args(tmp_path))
    agent.env["PYTHONPROFILEIMPORTTIME"] = "1"
    agent.start()
    try:
        conn = RawConnection(agent.socket)
        conn.send({"op": "status", "user_data": 1})
        reply = conn.read()
        assert reply is not None and reply["ok"]
        conn.send({"op": "validate", "user_data": 2, "recommendations": {"id": "x"}})
        assert conn.read() is not None
        conn.close()
    finally:
        agent.stop()
    log = agent.log.read_text()
    modules = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)", log, re.M)
    assert "actions.server" in modules and "actions.agent" in modules
    ours = sorted({m for m in modules if m.split(".")[0] in ("assistant", "tui", "click")})
    assert ours == [], ours


def test_kassist_agent_serve_execs_the_agents_own_entry_point(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path, None, args=_fake_args(tmp_path), via="kassist").start()
    try:
        assert agent.proc is not None
        cmdline = Path(f"/proc/{agent.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[1:4] == [b"-m", b"actions", b"serve"], cmdline
    finally:
        agent.stop()


def test_the_entry_point_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    victim = tmp_path / "not-a-socket"
    victim.write_text("precious\n")
    proc = subprocess.run(
        [sys.executable, "-m", "actions", "serve", "--socket", str(victim), "--state-dir",
         str(tmp_path / "state"), "--audit-log", str(tmp_path / "audit.jsonl"), "--group", "",
         *_fake_args(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=HANG_S, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"kassist-agent: {victim} exists and is not a socket: refusing to remove it: "
        "choose another --socket path"
    ], proc.stderr
    assert victim.read_text() == "precious\n"
    usage = run_kassist(["agent", "serve", "--help"])
    assert usage.returncode == 0 and "python -m actions serve" in usage.stdout
