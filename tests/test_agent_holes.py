"""The ten holes an adversarial test found in the agent (issue 17), each reproduced.

Every test here replays one attack: it failed on the agent as it was, and passes now.
Real sysctl writes happen only in a private network namespace; the rest use fake trees.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from actions.agent import Agent, Paths
from actions.errors import ActionError
from actions.knobs import Roots
from actions.policy import load_policy, policy_from_dict
from actions.server import AgentServer, ServerSettings
from tests.agent_support import (
    AgentProcess,
    NetNS,
    RawConnection,
    call,
    fake_roots,
    netns_held,
    rec,
)
from tests.conftest import HANG_S, require, run_kassist, wait_until

WHO = {"uid": 0, "gid": 0, "pid": 1, "user": "root"}

NETNS_POLICY = """
version = 1
max_changes_per_hour = 1000
allow = [
    "net.core.somaxconn", "net.ipv4.tcp_fin_timeout",
    "net.ipv4.ipfrag_high_thresh", "net.ipv4.ipfrag_low_thresh",
]
"""


def _plain(res: Any) -> dict[str, Any]:
    # A completion as JSON data, whichever form the in-process agent returns it in.
    if isinstance(res, dict):
        return res
    out: dict[str, Any] = res.model_dump(mode="json")
    return out


netns = pytest.fixture(netns_held, name="netns")


@pytest.fixture
def roots(tmp_path: Path) -> Roots:
    proc_sys, sys_root = fake_roots(tmp_path)
    return Roots(proc_sys, sys_root)


def _in_process(tmp_path: Path, roots: Roots, policy: Any = None) -> Agent:
    state = tmp_path / "state"
    return Agent(
        policy or load_policy(),
        Paths(state / "journal.db", state / "audit.jsonl", tmp_path / "90-kassist.conf"),
        roots,
    )


def _netns_agent(tmp_path: Path, netns: NetNS, **kwargs: Any) -> AgentProcess:
    policy = tmp_path / "policy.toml"
    policy.write_text(NETNS_POLICY)
    return AgentProcess(tmp_path, netns, policy=policy, **kwargs)


def _fake_agent(tmp_path: Path, **kwargs: Any) -> tuple[AgentProcess, Path]:
    proc_sys, sys_root = fake_roots(tmp_path)
    args = ("--proc-sys-root", str(proc_sys), "--sys-root", str(sys_root))
    return AgentProcess(tmp_path, None, args=args, **kwargs), proc_sys


# --- 1. running out of file descriptors -------------------------------------------------


def test_emfile_while_reading_a_key_is_an_error_never_an_override(
    tmp_path: Path, roots: Roots
) -> None:
    agent = _in_process(tmp_path, roots)
    try:
        assert _plain(agent.apply(rec("net.core.somaxconn", 8192), WHO))["ok"]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        held: list[int] = []
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
            with pytest.raises(OSError) as exc:
                while True:
                    held.append(os.open("/dev/null", os.O_RDONLY))
            assert exc.value.errno == errno.EMFILE
            notices = agent.check_overrides()
        finally:
            for fd in held:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert not any("no longer manages" in n for n in notices), notices
        status = _plain(agent.status())["status"]
        assert [m["target"] for m in status["managed"]] == ["net.core.somaxconn"]
        assert status["overridden"] == []
        done = _plain(agent.rollback(WHO, 1))
        assert done["ok"] and done["verdict"] == "rolled_back"
        assert (roots.proc_sys / "net/core/somaxconn").read_text().strip() == "4096"
    finally:
        agent.close()


def test_a_flood_of_idle_connections_drops_no_managed_key(tmp_path: Path, netns: NetNS) -> None:
    # The attack, scaled to a 128-file limit: more idle connections than the agent
    # has descriptors, while its override check keeps reading the keys it manages.
    agent = _netns_agent(tmp_path, netns, nofile=128).start()
    try:
        before = netns.read("net.core.somaxconn")
        new = int(before) * 2
        done = call(agent, "apply", recommendations=rec("net.core.somaxconn", new), persist=True)
        assert done["ok"], done
        flood: list[socket.socket] = []
        for _ in range(200):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(0.2)
            try:
                s.connect(str(agent.socket))
            except OSError:
                s.close()
                continue
            flood.append(s)
        time.sleep(2.0)  # ten override checks at 0.2 s
        for s in flood:
            s.close()
        time.sleep(1.5)
        status = call(agent, "status")["status"]
        assert status["overridden"] == [], status
        assert [m["target"] for m in status["managed"]] == ["net.core.somaxconn"]
        assert f"net.core.somaxconn = {new}" in agent.conf.read_text()
        back = call(agent, "rollback", id=done["changeset"]["id"])
        assert back["ok"] and back["verdict"] == "rolled_back", back
        assert netns.read("net.core.somaxconn") == before
        # The periodic override check survived the flood: it still sees the admin's hand.
        again = call(agent, "apply", recommendations=rec("net.core.somaxconn", new + 2))
        assert again["ok"], again
        netns.write("net.core.somaxconn", str(new + 9))
        wait_until(
            lambda: "no longer manages it" in agent.log.read_text(),
            "the override check saw the admin's hand",
            context=lambda: agent.log.read_text()[-2000:],
        )
    finally:
        agent.stop()


def test_connections_past_the_cap_are_refused_clearly(tmp_path: Path) -> None:
    agent, _ = _fake_agent(tmp_path, nofile=128)
    agent.start()
    conns: list[RawConnection] = []
    try:
        for _ in range(100):
            conns.append(RawConnection(agent.socket))
        refusals: list[dict[str, Any] | None] = []

        def refused_now() -> list[dict[str, Any]]:
            # A refusal comes unasked, then the close; a connection within the cap says
            # nothing, so each is only peeked at (a partial line stays in its buffer).
            for c in conns[-20:]:
                c.sock.settimeout(0.05)
                with contextlib.suppress(TimeoutError):
                    refusals.append(c.read())
            return [r for r in refusals if r is not None and r["verdict"] == "refused"]

        refused = wait_until(refused_now, "a connection past the cap refused",
                             context=lambda: str(refusals))  # fmt: skip
        assert refused[0]["errors"][0]["rule"] == "busy"
        assert "connections" in refused[0]["errors"][0]["message"]
        for c in conns:
            c.close()
        conns.clear()
        time.sleep(0.5)
        assert call(agent, "status")["ok"]
        assert any(e["event"] == "refused" and e.get("reason", "").startswith("busy")
                   for e in agent.audit_events())  # fmt: skip
    finally:
        for c in conns:
            c.close()
        agent.stop()


def test_rollback_never_says_rolled_back_for_a_key_it_did_not_restore(
    tmp_path: Path, netns: NetNS
) -> None:
    agent = _netns_agent(tmp_path, netns).start()
    try:
        before = int(netns.read("net.core.somaxconn"))
        done = call(agent, "apply", recommendations=rec("net.core.somaxconn", before * 2))
        assert done["ok"], done
        netns.write("net.core.somaxconn", str(before + 7))  # the admin's hand
        back = call(agent, "rollback", id=done["changeset"]["id"])
        assert back["verdict"] != "rolled_back" and not back["ok"], back
        text = " ".join(e["message"] for e in back["errors"])
        assert "net.core.somaxconn" in text and "not restored" in text
        assert netns.read("net.core.somaxconn") == str(before + 7)
    finally:
        agent.stop()


# --- 2. the baseline ------------------------------------------------------------------


def test_a_policy_baseline_list_adds_to_the_builtin_floors(roots: Roots) -> None:
    from actions.model import parse_recommendations
    from actions.validate import validate

    policy = policy_from_dict(
        {
            "allow": ["net.ipv4.tcp_syncookies", "kernel.dmesg_restrict"],
            "baseline": {"keys": ["fs.protected_regular"]},
            "keys": {
                "net.ipv4.tcp_syncookies": {"type": "int", "min": 0, "max": 2},
                "kernel.dmesg_restrict": {"type": "int", "min": 0, "max": 1},
            },
        },
        "test",
    )
    for key in ("net.ipv4.tcp_syncookies", "kernel.dmesg_restrict"):
        recs, _ = parse_recommendations(rec(key, 0))
        errors = validate(recs, policy, roots)[1]
        assert [e.rule for e in errors] == ["baseline"], (key, errors)
    assert policy.in_baseline("fs.protected_regular", ".")
    overridden = policy_from_dict(
        {
            "allow": ["net.ipv4.tcp_syncookies"],
            "baseline": {"override": ["net.ipv4.tcp_syncookies"]},
            "keys": {"net.ipv4.tcp_syncookies": {"type": "int", "min": 0, "max": 2}},
        },
        "test",
    )
    recs, _ = parse_recommendations(rec("net.ipv4.tcp_syncookies", 0))
    assert validate(recs, overridden, roots)[1] == []


# --- 3. rollback and invariants ---------------------------------------------------------


def test_rollback_refuses_a_state_that_breaks_an_invariant(tmp_path: Path, netns: NetNS) -> None:
    agent = _netns_agent(tmp_path, netns).start()
    high, low = "net.ipv4.ipfrag_high_thresh", "net.ipv4.ipfrag_low_thresh"
    try:
        was = {k: netns.read(k) for k in (high, low)}
        first = call(agent, "apply", recommendations=rec(high, 2 * int(was[high])))
        assert first["ok"], first
        second = call(agent, "apply", recommendations=rec(low, 2 * int(was[low])))
        assert second["ok"], second
        back = call(agent, "rollback", id=first["changeset"]["id"])
        assert not back["ok"] and back["verdict"] == "refused", back
        assert back["errors"][0]["rule"] == "invariant"
        assert netns.read(high) == str(2 * int(was[high]))
        state = call(agent, "history", id=first["changeset"]["id"])["changeset"]["state"]
        assert state == "verified"
        since = call(agent, "rollback", since=first["changeset"]["created"] - 1)
        assert since["ok"], since
        assert {k: netns.read(k) for k in (high, low)} == was
    finally:
        agent.stop()


def test_writes_are_ordered_so_that_every_intermediate_state_is_valid(
    tmp_path: Path, netns: NetNS
) -> None:
    agent = _netns_agent(tmp_path, netns).start()
    high, low = "net.ipv4.ipfrag_high_thresh", "net.ipv4.ipfrag_low_thresh"
    try:
        was = {k: netns.read(k) for k in (high, low)}
        # Low first as given: written in that order, the kernel refuses low > high.
        recs = [rec(low, 2 * int(was[low]), id="low"), rec(high, 2 * int(was[high]), id="high")]
        done = call(agent, "apply", recommendations=recs)
        assert done["ok"], done
        back = call(agent, "rollback", id=done["changeset"]["id"])
        assert back["ok"] and back["verdict"] == "rolled_back", back
        assert {k: netns.read(k) for k in (high, low)} == was
    finally:
        agent.stop()


def test_a_failed_restore_ends_cleanly_and_can_be_retried(tmp_path: Path, roots: Roots) -> None:
    agent = _in_process(tmp_path, roots)
    fin = roots.proc_sys / "net/ipv4/tcp_fin_timeout"
    try:
        recs = [rec("net.core.somaxconn", 8192), rec("net.ipv4.tcp_fin_timeout", 30, id="r2")]
        assert _plain(agent.apply(recs, WHO))["ok"]
        fin.unlink()
        fin.mkdir()  # reads and writes of the key now fail (EISDIR)
        back = _plain(agent.rollback(WHO, 1))
        assert not back["ok"] and back["verdict"] in ("refused", "failed"), back
        assert "net.ipv4.tcp_fin_timeout" in json.dumps(back["errors"])
        cs = _plain(agent.history(1))["changeset"]
        assert cs["state"] != "rolling_back", cs["state"]
        assert (roots.proc_sys / "net/core/somaxconn").read_text().strip() == "8192"
        fin.rmdir()
        fin.write_text("30\n")
        again = _plain(agent.rollback(WHO, 1))
        assert again["ok"] and again["verdict"] == "rolled_back", again
        assert (roots.proc_sys / "net/core/somaxconn").read_text().strip() == "4096"
        assert fin.read_text().strip() == "60"
    finally:
        agent.close()


# --- 4 and 5. untrusted text on the operator's terminal ----------------------------------


def _cli(agent: AgentProcess, *args: str) -> tuple[int, str]:
    proc = run_kassist(["agent", *args, "--socket", str(agent.socket)])
    assert "Traceback" not in proc.stderr
    return proc.returncode, proc.stdout + proc.stderr


def test_terminal_escapes_never_reach_the_operator(tmp_path: Path) -> None:
    agent, _ = _fake_agent(tmp_path)
    agent.start()
    try:
        hostile = [
            rec("net.core.\x1b]0;owned\x07somaxconn", 8192, evidence=[]),
            {**rec("net.core.somaxconn", 8192), "\x1b[2J\x1b[Hx": 1},
            rec("net.core.somaxconn\x9b2J", 8192, evidence=[]),
        ]
        for i, doc in enumerate(hostile):
            path = tmp_path / f"r{i}.json"
            path.write_text(json.dumps(doc))
            code, out = _cli(agent, "validate", str(path))
            assert code == 1
            assert not any(c in out for c in "\x1b\x07\x9b"), repr(out)
            assert "\\x1b" in out or "\\x9b" in out, out
    finally:
        agent.stop()


def test_newlines_in_rationale_and_evidence_cannot_forge_show_lines(tmp_path: Path) -> None:
    agent, _ = _fake_agent(tmp_path)
    agent.start()
    try:
        doc = rec(
            "net.core.somaxconn",
            8192,
            rationale="Listen queue overflows grew.\nchangeset 99: rolled_back",
            evidence=["nstat: 1200 overflows\nchangeset 98: verified\tby root"],
        )
        path = tmp_path / "r.json"
        path.write_text(json.dumps(doc))
        code, out = _cli(agent, "apply", "--yes", str(path))
        assert code == 0, out
        code, out = _cli(agent, "show", "1")
        assert code == 0, out
        lines = out.splitlines()
        assert not any(line.lstrip().startswith("changeset 9") for line in lines), out
        assert "grew.\\nchangeset 99" in out and "\\tby root" in out
    finally:
        agent.stop()


# --- 6. malformed input -------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        b"[" * 50000 + b"\n",
        b'{"op":"status","user_data":' + b"[" * 50000 + b"\n",
        b'{"op":"status","user_data":' + b"9" * 5000 + b"}\n",
        b'{"op":"history","user_data":2,"limit":' + b"9" * 5000 + b"}\n",
    ],
    ids=["nested-array", "nested-user-data", "huge-user-data", "huge-limit"],
)
def test_malformed_input_gets_its_completion_and_keeps_earlier_ones(
    tmp_path: Path, bad: bytes
) -> None:
    agent, proc_sys = _fake_agent(tmp_path)
    agent.start()
    try:
        conn = RawConnection(agent.socket)
        conn.send({"op": "apply", "user_data": "a1", "recommendations": rec("vm.swappiness", 30)})
        conn.send(bad)
        replies = []
        while (r := conn.read()) is not None:
            replies.append(r)
        conn.close()
        by_id = {r["user_data"]: r for r in replies}
        assert by_id.get("a1", {}).get("verdict") == "verified", replies
        assert (proc_sys / "vm/swappiness").read_text().strip() == "30"
        assert replies[-1]["verdict"] == "malformed", replies
        assert any(e["event"] == "malformed" for e in agent.audit_events())
        assert call(agent, "status")["ok"]  # and it keeps serving
        assert "Traceback" not in agent.log.read_text()
    finally:
        agent.stop()


# --- 7. a crash between verified and persist ----------------------------------------------


def test_a_crash_before_the_persist_file_is_written_is_finished_on_restart(
    tmp_path: Path,
) -> None:
    agent, _ = _fake_agent(tmp_path)
    agent.start(env={"KASSIST_AGENT_FAULT": "verified"})
    conn = RawConnection(agent.socket)
    conn.send({"op": "apply", "user_data": 1, "recommendations": rec("net.core.somaxconn", 8192),
               "persist": True})  # fmt: skip
    assert conn.read() is None  # killed before its completion
    conn.close()
    agent.wait_dead()
    assert not agent.conf.exists()
    agent.start()
    try:
        assert "net.core.somaxconn = 8192" in agent.conf.read_text()
        cs = call(agent, "history", id=1)["changeset"]
        assert cs["state"] == "verified"
        assert any(e["event"] == "persisted" for e in cs["events"]), cs["events"]
    finally:
        agent.stop()


# --- 8. values in canonical decimal ---------------------------------------------------------


def test_values_are_parsed_to_canonical_decimal_and_written_so(
    tmp_path: Path, netns: NetNS
) -> None:
    agent = _netns_agent(tmp_path, netns).start()
    try:
        dry = call(agent, "validate", recommendations=rec("net.core.somaxconn", "010000"))
        assert dry["ok"] and dry["changeset"]["changes"][0]["new"] == "10000", dry
        done = call(agent, "apply", recommendations=rec("net.core.somaxconn", "010000"))
        assert done["ok"], done
        assert netns.read("net.core.somaxconn") == "10000"
        writes = [e for e in agent.audit_events() if e["event"] == "write"]
        assert [w["new"] for w in writes] == ["10000"]
        low = call(agent, "validate", recommendations=rec("net.ipv4.tcp_fin_timeout", "0x10"))
        assert not low["ok"]
    finally:
        agent.stop()


# --- 9. default_qdisc words ------------------------------------------------------------------


def test_default_qdisc_words_come_from_what_the_kernel_offers(tmp_path: Path) -> None:
    from actions.model import parse_recommendations
    from actions.validate import validate

    proc_sys, sys_root = fake_roots(tmp_path)
    (proc_sys / "net/core/default_qdisc").write_text("fq_codel\n")
    (sys_root / "module/sch_fq").mkdir(parents=True)
    roots = Roots(proc_sys, sys_root)
    policy = load_policy()
    verdicts = {}
    for word in ("sfq", "cake", "fq", "pfifo_fast"):
        recs, _ = parse_recommendations(rec("net.core.default_qdisc", word))
        verdicts[word] = [e.rule for e in validate(recs, policy, roots)[1]]
    assert verdicts == {"sfq": ["range"], "cake": ["range"], "fq": [], "pfifo_fast": []}


# --- 10. files and paths ------------------------------------------------------------------


def test_state_files_are_private_and_symlinks_are_refused(tmp_path: Path, roots: Roots) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        agent = _in_process(tmp_path, roots)
        assert _plain(agent.apply(rec("net.core.somaxconn", 8192), WHO))["ok"]
        agent.close()
    finally:
        os.umask(old)
    for name in ("journal.db", "audit.jsonl"):
        assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600, name
    for name in ("journal.db", "audit.jsonl"):
        other = tmp_path / f"other-{name}"
        other.mkdir()
        victim = other / "victim"
        victim.write_text("precious\n")
        link = tmp_path / f"linked-{name}"
        link.mkdir()
        (link / name).symlink_to(victim)
        paths = {"journal.db": link / "journal.db", "audit.jsonl": link / "audit.jsonl"}
        with pytest.raises(ActionError, match="symlink"):
            Agent(load_policy(), Paths(paths["journal.db"], paths["audit.jsonl"],
                                       tmp_path / "c.conf"), roots)  # fmt: skip
        assert victim.read_text() == "precious\n"


def test_a_socket_path_that_is_not_a_socket_is_never_deleted(tmp_path: Path, roots: Roots) -> None:
    agent = _in_process(tmp_path, roots)
    try:
        victim = tmp_path / "not-a-socket"
        victim.write_text("precious\n")
        server = AgentServer(agent, ServerSettings(victim, group=None), log=lambda _: None)
        with pytest.raises(ActionError, match="not a socket"):
            server._bind()
        assert victim.read_text() == "precious\n"
        link = tmp_path / "link.sock"
        link.symlink_to(victim)
        server = AgentServer(agent, ServerSettings(link, group=None), log=lambda _: None)
        with pytest.raises(ActionError):
            server._bind()
        assert link.is_symlink() and victim.read_text() == "precious\n"
        stale = tmp_path / "stale.sock"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(stale))
        s.close()  # a socket file nobody listens on: the one thing the agent may remove
        server = AgentServer(agent, ServerSettings(stale, group=None), log=lambda _: None)
        server._bind().close()
        assert stat.S_ISSOCK(os.lstat(stale).st_mode)
    finally:
        agent.close()


def test_a_restore_the_kernel_refuses_puts_back_what_it_wrote(tmp_path: Path, roots: Roots) -> None:
    # An immutable file (chattr +i) reads but refuses writes even to root: the second
    # restore of the rollback fails after the first one was written.
    require(shutil.which("chattr") is not None, "needs chattr (e2fsprogs)")
    agent = _in_process(tmp_path, roots)
    som = roots.proc_sys / "net/core/somaxconn"
    fin = roots.proc_sys / "net/ipv4/tcp_fin_timeout"
    try:
        recs = [rec("net.core.somaxconn", 8192), rec("net.ipv4.tcp_fin_timeout", 30, id="r2")]
        assert _plain(agent.apply(recs, WHO))["ok"]
        locked = subprocess.run(["chattr", "+i", str(som)], capture_output=True, check=False)
        require(locked.returncode == 0, f"chattr +i not supported here: {locked.stderr!r}")
        try:
            back = _plain(agent.rollback(WHO, 1))
        finally:
            subprocess.run(["chattr", "-i", str(som)], check=True)
        assert not back["ok"] and back["verdict"] == "failed", back
        assert "the rollback was undone" in back["errors"][0]["message"]
        assert back["changeset"]["state"] == "verified"
        assert (som.read_text().strip(), fin.read_text().strip()) == ("8192", "30")
        again = _plain(agent.rollback(WHO, 1))
        assert again["ok"] and again["verdict"] == "rolled_back", again
        assert (som.read_text().strip(), fin.read_text().strip()) == ("4096", "60")
    finally:
        agent.close()


def test_an_operators_own_sysctl_conf_is_never_replaced(tmp_path: Path, roots: Roots) -> None:
    agent = _in_process(tmp_path, roots)
    conf = tmp_path / "90-kassist.conf"
    conf.write_text("net.core.somaxconn = 1024\n")  # the operator's, not the agent's
    try:
        done = _plain(agent.apply(rec("net.core.somaxconn", 8192), WHO, persist=True))
        assert done["ok"], done
        assert any("refusing to replace it" in n for n in done["notices"]), done["notices"]
        assert conf.read_text() == "net.core.somaxconn = 1024\n"
        assert _plain(agent.rollback(WHO, 1))["ok"]
        assert conf.read_text() == "net.core.somaxconn = 1024\n"
    finally:
        agent.close()


def test_the_client_reconnects_after_the_agents_idle_timeout(tmp_path: Path) -> None:
    from actions.client import AgentClient

    agent, _ = _fake_agent(tmp_path)
    agent.args = (*agent.args, "--idle-timeout", "0.5")
    agent.start()
    try:
        with AgentClient(agent.socket, timeout=HANG_S) as client:
            assert client.status().ok
            time.sleep(1.5)  # the agent closes the idle connection
            assert client.status().ok
        assert any(e["event"] == "start" for e in agent.audit_events())
    finally:
        agent.stop()


def test_a_crash_between_a_rollback_and_the_persist_file_is_finished_on_restart(
    tmp_path: Path,
) -> None:
    agent, _ = _fake_agent(tmp_path)
    agent.start()
    done = call(agent, "apply", recommendations=rec("net.core.somaxconn", 8192), persist=True)
    assert done["ok"] and "net.core.somaxconn = 8192" in agent.conf.read_text()
    agent.stop()
    agent.start(env={"KASSIST_AGENT_FAULT": "rolled_back"})
    conn = RawConnection(agent.socket)
    conn.send({"op": "rollback", "user_data": 1, "id": 1})
    assert conn.read() is None  # killed between the journal and the file
    conn.close()
    agent.wait_dead()
    assert "net.core.somaxconn = 8192" in agent.conf.read_text()  # stale
    agent.start()
    try:
        assert not agent.conf.exists()  # nothing is persisted any more
        assert call(agent, "history", id=1)["changeset"]["state"] == "rolled_back"
    finally:
        agent.stop()
