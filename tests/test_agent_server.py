"""The agent for real: a daemon in a private network namespace writing real sysctls.

Every write happens inside a namespace created for the test (``unshare -n``), where
``net.*`` keys are private; each test checks the kernel's own value there, and that
the host's value did not move.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions.client import AgentClient
from actions.errors import AgentUnavailable
from tests.agent_support import (
    AgentProcess,
    NetNS,
    RawConnection,
    netns_held,
    plain,
    rec,
)
from tests.conftest import HANG_S, wait_until

TEST_POLICY = """
version = 1
max_changes_per_hour = 1000
allow = [
    "net.core.somaxconn", "net.core.rmem_max", "net.ipv4.tcp_rmem", "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.ip_local_port_range", "net.ipv4.icmp_ratelimit",
    "net.ipv4.ip_default_ttl",
]
deny = ["kernel.**"]

# Wider than the kernel's own 1..255 on purpose: lets a test meet a real EINVAL.
[keys."net.ipv4.ip_default_ttl"]
type = "int"
min = 1
max = 1000
max_step = 0
"""


def host(key: str) -> str:
    return " ".join(Path("/proc/sys", *key.split(".")).read_text().split())


netns = pytest.fixture(netns_held, scope="module", name="netns")


@pytest.fixture(scope="module")
def agent(netns: NetNS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    tmp = tmp_path_factory.mktemp("agent")
    policy = tmp / "policy.toml"
    policy.write_text(TEST_POLICY)
    proc = AgentProcess(tmp, netns, policy=policy).start()
    yield proc
    proc.stop()


@pytest.fixture
def client(agent: AgentProcess) -> Iterator[AgentClient]:
    with AgentClient(agent.socket, timeout=HANG_S) as c:
        yield c


def test_apply_writes_the_kernel_and_rollback_restores_it(
    netns: NetNS, agent: AgentProcess, client: AgentClient
) -> None:
    keys = ("net.core.somaxconn", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_time")
    before = {k: netns.read(k) for k in keys}
    host_before = {k: host(k) for k in keys}
    new = {k: str(int(before[k]) * 2) for k in keys[:1]} | {
        keys[1]: str(int(before[keys[1]]) // 2),
        keys[2]: str(int(before[keys[2]]) // 3),
    }
    recs = [rec(k, int(v), id=f"r{i}") for i, (k, v) in enumerate(new.items())]

    dry = plain(client.validate(recs))
    assert dry["ok"] and dry["verdict"] == "valid"
    assert [(c["target"], c["old"], c["new"]) for c in dry["changeset"]["changes"]] == [
        (k, before[k], new[k]) for k in keys
    ]
    assert {k: netns.read(k) for k in keys} == before  # a dry run writes nothing

    done = plain(client.apply(recs))
    assert done["ok"] and done["verdict"] == "verified", done
    cs = done["changeset"]
    assert cs["state"] == "verified"
    assert {k: netns.read(k) for k in keys} == new  # the kernel has the new values
    assert {k: host(k) for k in keys} == host_before  # and the host does not
    assert cs["who"]["uid"] == 0
    assert cs["changes"][0]["evidence"] == recs[0]["evidence"]

    events = [e["event"] for e in agent.audit_events()]
    for wanted in ("submission", "verdict", "write", "readback"):
        assert wanted in events

    history = plain(client.history())
    assert history["changesets"][0]["id"] == cs["id"]
    shown = plain(client.history(cs["id"]))["changeset"]
    assert [e["event"] for e in shown["events"]][:4] == [
        "validated",
        "applying",
        "applied",
        "verified",
    ]

    back = plain(client.rollback(cs["id"]))
    assert back["ok"] and back["verdict"] == "rolled_back", back
    assert {k: netns.read(k) for k in keys} == before
    assert plain(client.history(cs["id"]))["changeset"]["state"] == "rolled_back"
    again = plain(client.rollback(cs["id"]))
    assert not again["ok"] and "already rolled back" in again["errors"][0]["message"]


def test_a_value_the_kernel_refuses_rolls_back_the_whole_changeset(
    netns: NetNS, client: AgentClient
) -> None:
    before = netns.read("net.core.somaxconn"), netns.read("net.ipv4.ip_default_ttl")
    recs = [
        rec("net.core.somaxconn", int(before[0]) * 2),
        rec("net.ipv4.ip_default_ttl", 300, id="r2"),
    ]  # the kernel max is 255
    done = plain(client.apply(recs))
    assert not done["ok"] and done["verdict"] == "failed"
    assert done["errors"][0]["rule"] == "write"
    assert "net.ipv4.ip_default_ttl" in done["errors"][0]["message"]
    assert done["changeset"]["state"] == "rolled_back"
    assert (netns.read("net.core.somaxconn"), netns.read("net.ipv4.ip_default_ttl")) == before


def test_a_value_the_kernel_silently_rounds_is_a_failure(netns: NetNS, client: AgentClient) -> None:
    # icmp_ratelimit is stored in jiffies: with HZ < 1000, 1003 ms reads back as 1004.
    netns.write("net.ipv4.icmp_ratelimit", "1003")
    rounds = netns.read("net.ipv4.icmp_ratelimit") != "1003"
    netns.write("net.ipv4.icmp_ratelimit", "1000")
    if not rounds:
        pytest.skip("this kernel's HZ stores 1003 ms exactly; nothing rounds")
    somaxconn = netns.read("net.core.somaxconn")
    recs = [
        rec("net.core.somaxconn", int(somaxconn) + 100),
        rec("net.ipv4.icmp_ratelimit", 1003, id="r2"),
    ]
    done = plain(client.apply(recs))
    assert done["verdict"] == "failed"
    assert done["errors"][0]["rule"] == "verify"
    assert "reads back 1004" in done["errors"][0]["message"]
    assert netns.read("net.core.somaxconn") == somaxconn
    assert netns.read("net.ipv4.icmp_ratelimit") == "1000"


def _overridden(client: AgentClient, changeset: object) -> dict[str, Any] | None:
    # The agent's status once it counts ``changeset`` as overridden by the admin, else None.
    status = plain(client.status())
    overridden = status["status"]["overridden"]
    return status if any(o["changeset"] == changeset for o in overridden) else None


def test_the_agent_yields_to_the_admin(netns: NetNS, client: AgentClient) -> None:
    old = netns.read("net.ipv4.tcp_fin_timeout")
    done = plain(client.apply([rec("net.ipv4.tcp_fin_timeout", int(old) - 7)]))
    assert done["ok"], done
    netns.write("net.ipv4.tcp_fin_timeout", "44")  # the admin changes it behind our back
    status = wait_until(
        lambda: _overridden(client, done["changeset"]["id"]), "the agent saw the admin's change"
    )
    overridden = status["status"]["overridden"]
    assert {
        "changeset": done["changeset"]["id"],
        "kind": "sysctl",
        "target": "net.ipv4.tcp_fin_timeout",
        "set": str(int(old) - 7),
    } in overridden
    managed = [m["target"] for m in status["status"]["managed"]]
    assert "net.ipv4.tcp_fin_timeout" not in managed
    back = plain(client.rollback(done["changeset"]["id"]))
    assert not back["ok"] and back["verdict"] == "not_restored", back  # says so (issue 17)
    assert netns.read("net.ipv4.tcp_fin_timeout") == "44"  # never fight the admin
    netns.write("net.ipv4.tcp_fin_timeout", old)


def test_persistence_on_request_only(
    agent: AgentProcess, netns: NetNS, client: AgentClient
) -> None:
    key = "net.ipv4.tcp_keepalive_time"
    old = int(netns.read(key))
    unpersisted = plain(client.apply([rec(key, old - 60)]))
    assert unpersisted["ok"] and not agent.conf.exists(), unpersisted
    kept = plain(client.apply([rec(key, old - 120)], persist=True))
    assert kept["ok"], kept
    text = agent.conf.read_text()
    assert f"# Changesets: {kept['changeset']['id']}" in text
    assert f"{key} = {old - 120}" in text.splitlines()
    assert plain(client.rollback(kept["changeset"]["id"]))["ok"]
    assert not agent.conf.exists()
    assert plain(client.rollback(unpersisted["changeset"]["id"]))["ok"]
    assert int(netns.read(key)) == old


def test_rollback_since_undoes_newest_first(netns: NetNS, client: AgentClient) -> None:
    start = time.time() - 0.001
    old = int(netns.read("net.core.somaxconn"))
    first = plain(client.apply([rec("net.core.somaxconn", old + 1)]))
    second = plain(client.apply([rec("net.core.somaxconn", old + 2)]))
    assert first["ok"] and second["ok"]
    refused = plain(client.rollback(first["changeset"]["id"]))
    assert not refused["ok"] and refused["verdict"] == "refused"
    assert (
        f"changeset {second['changeset']['id']} changed it later" in refused["errors"][0]["message"]
    )
    assert int(netns.read("net.core.somaxconn")) == old + 2
    back = plain(client.rollback(since=start))
    assert back["ok"], back
    assert [c["id"] for c in back["changesets"]] == [
        second["changeset"]["id"],
        first["changeset"]["id"],
    ]
    assert int(netns.read("net.core.somaxconn")) == old


def test_invariants_read_the_live_kernel(netns: NetNS, client: AgentClient) -> None:
    # net.core.rmem_max is read-only in a child namespace, but the invariant still reads it.
    rmem = [int(v) for v in netns.read("net.ipv4.tcp_rmem").split()]
    rmem_max = int(netns.read("net.core.rmem_max"))
    over = max(rmem[2], rmem_max) * 2
    worse = plain(client.validate([rec("net.ipv4.tcp_rmem", [rmem[0], rmem[1], over])]))
    assert worse["errors"][0]["rule"] == "invariant"
    assert f"net.core.rmem_max ({rmem_max})" in worse["errors"][0]["message"]
    closer = max(rmem[1], rmem_max, rmem[2] // 4)
    better = plain(client.validate([rec("net.ipv4.tcp_rmem", [rmem[0], rmem[1], closer])]))
    assert better["ok"], better  # moving towards the invariant is allowed


# --- the queue protocol ---------------------------------------------------------------


def test_many_in_flight_each_gets_exactly_one_completion(agent: AgentProcess) -> None:
    conn = RawConnection(agent.socket)
    n = 200
    for i in range(n):
        op = ("validate", "status", "history")[i % 3]
        entry: dict[str, Any] = {"op": op, "user_data": f"u{i}"}
        if op == "validate":
            entry["recommendations"] = rec("net.core.somaxconn", 100000)
        conn.send(entry)
    seen = [conn.read() for _ in range(n)]
    assert sorted(e["user_data"] for e in seen if e) == sorted(f"u{i}" for i in range(n))
    assert all(e and set(e) >= {"user_data", "ok", "verdict", "errors", "changeset"} for e in seen)
    conn.close()


def test_completions_can_overtake_slow_submissions(netns: NetNS, tmp_path: Path) -> None:
    slow = AgentProcess(tmp_path, netns).start(
        env={"KASSIST_AGENT_FAULT": "pause:applying", "KASSIST_AGENT_PAUSE": "0.6"}
    )
    try:
        old = int(netns.read("net.core.somaxconn"))
        conn = RawConnection(slow.socket)
        conn.send(
            {
                "op": "apply",
                "user_data": "apply",
                "recommendations": rec("net.core.somaxconn", old + 3),
            }
        )
        conn.send(
            {
                "op": "validate",
                "user_data": "check",
                "recommendations": rec("net.core.somaxconn", 1),
            }
        )
        first, second = conn.read(), conn.read()
        assert first and second
        assert (first["user_data"], second["user_data"]) == ("check", "apply")
        assert second["verdict"] == "verified" and first["verdict"] == "rejected"
        assert int(netns.read("net.core.somaxconn")) == old + 3
        conn.send({"op": "rollback", "user_data": 1, "id": second["changeset"]["id"]})
        assert (conn.read() or {}).get("ok")
    finally:
        slow.stop()


def test_bad_input_closes_only_that_connection(netns: NetNS, tmp_path: Path) -> None:
    proc = AgentProcess(tmp_path, netns, args=("--entry-timeout", "0.5")).start()
    try:
        good = RawConnection(proc.socket)
        cases: dict[str, bytes] = {
            "not json": b"this is not json\n",
            "not an object": b"[1, 2, 3]\n",
            "no user_data": b'{"op": "status"}\n',
            "oversized": b'{"op": "validate", "user_data": 1, "x": "' + b"A" * 70000,
            "oversized line": b'{"op":"status","user_data":1,"pad":"' + b"B" * 70000 + b'"}\n',
            "binary": bytes(range(256)) + b"\n",
        }
        for name, data in cases.items():
            bad = RawConnection(proc.socket)
            bad.send(data)
            reply = bad.read()
            assert reply is not None and reply["verdict"] == "malformed", name
            assert reply["user_data"] is None
            assert bad.closed(), name
            good.send({"op": "status", "user_data": name})
            assert (good.read() or {}).get("ok") is True, name
        # Slow loris: half an entry, then silence past the entry timeout.
        loris = RawConnection(proc.socket)
        loris.send(b'{"op": "sta')
        time.sleep(0.8)
        reply = loris.read()
        assert reply is not None and "not finished" in reply["errors"][0]["message"]
        assert loris.closed()
        # An unknown op or field is answered, and the connection stays open.
        good.send({"op": "reboot", "user_data": "x"})
        assert (good.read() or {}).get("verdict") == "malformed"
        good.send({"op": "status", "user_data": "y", "sudo": True})
        assert "unknown field" in (good.read() or {})["errors"][0]["message"]
        good.send({"op": "status", "user_data": "z"})
        assert (good.read() or {}).get("ok") is True
        good.close()
        assert sum(e["event"] == "malformed" for e in proc.audit_events()) >= len(cases) + 1
    finally:
        proc.stop()


# --- privilege separation -------------------------------------------------------------

_AS_NOBODY = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except PermissionError:
    print(json.dumps({"connect": "EACCES"})); sys.exit(0)
try:
    s.sendall(b'{"op": "status", "user_data": 1}\\n')
except BrokenPipeError:
    pass
buf = b""
while not buf.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    buf += chunk
print(buf.decode().strip() or json.dumps({"closed": True}))
"""


def _as_nobody(sock: Path, groups: tuple[str, ...]) -> dict[str, object]:
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=nobody",
            *groups,
            "/usr/bin/python3",
            "-c",
            _AS_NOBODY,
            str(sock),
        ],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=True,
    )
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


NOGROUP = ("--regid=nogroup", "--clear-groups")
SUPPLEMENTARY = ("--regid=daemon", "--groups=nogroup")  # a member only by a supplementary group
OUTSIDER = ("--regid=daemon", "--clear-groups")


@pytest.mark.parametrize(
    ("mode", "group", "groups", "expect"),
    [
        ("0666", "kassist-no-such-group", NOGROUP, "refused"),
        ("0660", "kassist-no-such-group", NOGROUP, "EACCES"),
        ("0660", "nogroup", NOGROUP, "ok"),
        ("0666", "nogroup", SUPPLEMENTARY, "ok"),
        ("0666", "nogroup", OUTSIDER, "refused"),
    ],
)
def test_peer_credentials_decide_who_may_talk(
    netns: NetNS, tmp_path: Path, mode: str, group: str, groups: tuple[str, ...], expect: str
) -> None:
    # A directory nobody may enter (pytest's own is 0700), so only the socket's mode decides.
    reachable = Path(tempfile.mkdtemp(prefix="kassist-peer-"))
    reachable.chmod(0o755)
    proc = AgentProcess(tmp_path, netns, args=("--socket-mode", mode, "--group", group))
    proc.socket = reachable / "agent.sock"
    proc.start()
    try:
        reply = _as_nobody(proc.socket, groups)
        if expect == "EACCES":
            assert reply == {"connect": "EACCES"}
        elif expect == "refused":
            assert reply["verdict"] == "refused" and reply["ok"] is False
            assert reply["errors"][0]["rule"] == "auth"  # type: ignore[index]
            refused = [e for e in proc.audit_events() if e["event"] == "refused"]
            assert refused and refused[0]["who"]["uid"] == 65534
        else:
            assert reply["ok"] is True and reply["verdict"] == "ok"
        with AgentClient(proc.socket) as root_client:  # root is always allowed
            assert plain(root_client.status())["ok"]
    finally:
        proc.stop()
        shutil.rmtree(reachable, ignore_errors=True)


def test_a_client_without_an_agent_gets_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AgentUnavailable, match="no agent socket"):
        AgentClient(tmp_path / "nothing.sock").connect()


def test_the_client_pipelines_and_matches_completions(agent: AgentProcess) -> None:
    with AgentClient(agent.socket) as client:
        entries: list[dict[str, Any]] = [
            {"op": "validate", "recommendations": rec("net.core.somaxconn", v)}
            for v in (100000, 64, 8192)
        ] + [{"op": "history", "limit": 1}, {"op": "status"}]
        done = [plain(x) for x in client.many(entries)]
    assert [d["verdict"] for d in done] == ["rejected", "rejected", "valid", "ok", "ok"]
    assert [d["errors"][0]["rule"] for d in done[:2]] == ["range", "range"]
    assert "above the limit" in done[0]["errors"][0]["message"]
    assert "below the floor" in done[1]["errors"][0]["message"]
