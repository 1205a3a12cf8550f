"""A protocol fuzzer: hypothesis writes entries to a real agent, on one connection and across
several at once, split into chunks at random and interleaved.

Entries vary in nesting, types, sizes (up to and past the 64 KiB line limit) and
encodings (UTF-8, invalid UTF-8, a BOM, UTF-16): well-formed envelopes with random ops
and fields (and real recommendations, so that changes are applied and rolled back),
and lines that are not submissions at all (not JSON, not UTF-8, a BOM, not an object, no
usable ``user_data``, nested too deeply, integers too long to decode). The property:

- every well-formed entry before the first bad line of its connection gets exactly one
  completion (matched by ``user_data``); a bad line gets one ``malformed`` completion
  with ``user_data: null``, after which the connection is closed and nothing more is
  answered on it;
- the agent keeps serving everyone else;
- the journal's state matches the kernel's (a fake tree here): every managed key holds
  its value, nothing is overridden, no changeset is left in flight.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actions.knobs import Roots, resolve
from tests.agent_support import AgentProcess, RawConnection, fake_roots, rec

POLICY = """
version = 1
max_changes_per_hour = 1000000
allow = ["net.core.somaxconn", "net.ipv4.tcp_fin_timeout", "vm.swappiness", "vm.dirty_ratio"]
"""
KEYS = {
    "net.core.somaxconn": (128, 65535),
    "net.ipv4.tcp_fin_timeout": (5, 120),
    "vm.swappiness": (1, 100),
    "vm.dirty_ratio": (5, 80),
}
IN_FLIGHT = ("validated", "applying", "applied", "rolling_back")


@dataclass
class Served:
    agent: AgentProcess
    roots: Roots


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("fuzz")
    proc_sys, sys_root = fake_roots(tmp)
    policy = tmp / "policy.toml"
    policy.write_text(POLICY)
    agent = AgentProcess(
        tmp,
        None,
        policy=policy,
        args=("--proc-sys-root", str(proc_sys), "--sys-root", str(sys_root)),
    ).start()
    yield Served(agent, Roots(proc_sys, sys_root))
    agent.stop()


# --- entries --------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def recommendation(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(st.sampled_from(sorted(KEYS)))
    lo, hi = KEYS[key]
    value: object = draw(
        st.one_of(
            st.integers(min_value=lo, max_value=hi),
            st.integers(min_value=lo, max_value=hi).map(lambda v: f"0{v}"),
            st.integers(),
            json_value,
        )
    )
    doc = rec(key, value, id=f"f{draw(st.integers(0, 99))}")
    if draw(st.booleans()):
        doc[draw(st.sampled_from(["rationale", "evidence", "risk", "source", "kind", "extra"]))] = (
            draw(json_value)
        )
    return doc


@st.composite
def good_entry(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(["validate", "apply", "rollback", "status", "history", "nope"]))
    entry: dict[str, Any] = {"op": op, "user_data": draw(st.sampled_from(["s", "i"]))}
    if op in ("validate", "apply"):
        recs = draw(st.one_of(recommendation(), st.lists(recommendation(), max_size=3), json_value))
        entry["recommendations"] = recs
        if op == "apply" and draw(st.booleans()):
            entry["persist"] = draw(st.one_of(st.booleans(), json_leaf))
    elif op == "rollback":
        entry[draw(st.sampled_from(["id", "since"]))] = draw(
            st.one_of(st.integers(-3, 40), st.integers(), json_leaf)
        )
    elif op == "history" and draw(st.booleans()):
        entry[draw(st.sampled_from(["id", "limit", "since"]))] = draw(json_leaf)
    if draw(st.integers(0, 9)) == 0:
        entry[draw(st.text(max_size=8))] = draw(json_value)
    if draw(st.integers(0, 14)) == 0:  # large, still under the 64 KiB line limit
        entry["pad" if op not in ("validate", "apply") else "recommendations"] = "x" * draw(
            st.integers(1000, 60000)
        )
    return entry


def _deep(n: int) -> bytes:
    return b'{"op":"status","user_data":1,"x":' + b"[" * n + b"]" * n + b"}"


bad_line = st.one_of(
    st.binary(min_size=1, max_size=200).map(lambda b: b"{" + b.replace(b"\n", b" ")),
    json_value.filter(lambda v: not isinstance(v, dict)).map(lambda v: json.dumps(v).encode()),
    st.one_of(st.booleans(), st.floats(), st.lists(st.integers(), max_size=2), st.none()).map(
        lambda u: json.dumps({"op": "status", "user_data": u}).encode()
    ),
    st.just(b'{"op":"status"}'),
    st.integers(min_value=17, max_value=20000).map(_deep),
    st.integers(min_value=4301, max_value=20000).map(
        lambda n: b'{"op":"status","user_data":' + b"7" * n + b"}"
    ),
    st.just(b'\xef\xbb\xbf{"op":"status","user_data":1}'),
    st.just('{"op":"status","user_data":1}'.encode("utf-16")),
    st.integers(65536, 200000).map(
        lambda n: b'{"op":"status","user_data":1,"x":"' + b"y" * n + b'"}'
    ),
    st.just(b'{"op":"status","user_data":"\xff\xfe"}'),
    st.text(min_size=129, max_size=300).map(
        lambda u: json.dumps({"op": "status", "user_data": u}).encode()
    ),
)


@st.composite
def connection_script(draw: st.DrawFn, conn: int) -> tuple[list[bytes], list[object], bool]:
    """The lines one connection sends, the user_data of its good entries, and whether the
    last line is bad (the connection then ends with a malformed completion)."""
    goods = draw(st.lists(good_entry(), max_size=8))
    lines: list[bytes] = []
    expected: list[object] = []
    for j, entry in enumerate(goods):
        entry["user_data"] = f"c{conn}e{j}" if entry["user_data"] == "s" else conn * 100 + j
        expected.append(entry["user_data"])
        lines.append(json.dumps(entry).encode())
    ends_bad = draw(st.booleans())
    if ends_bad:
        lines.append(draw(bad_line))
        # Whatever follows a bad line is never answered.
        after = json.dumps({"op": "status", "user_data": f"after{conn}"}).encode()
        lines += [after] * draw(st.integers(0, 2))
    return lines, expected, ends_bad


@st.composite
def chunks(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(data) - 1)), max_size=6)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if a < b]


# --- the property -------------------------------------------------------------------------


def _read_all(socks: list[socket.socket], timeout: float = 30.0) -> list[list[dict[str, Any]]]:
    bufs = [b""] * len(socks)
    done = [False] * len(socks)
    while not all(done):
        ready, _, _ = select.select(
            [s for s, d in zip(socks, done, strict=True) if not d], [], [], timeout
        )
        assert ready, "the agent stopped answering"
        for s in ready:
            i = socks.index(s)
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                done[i] = True
            bufs[i] += chunk
    return [[json.loads(line) for line in b.splitlines() if line.strip()] for b in bufs]


def _check_state(served: Served) -> None:
    conn = RawConnection(served.agent.socket)
    conn.send({"op": "status", "user_data": "check"})
    reply = conn.read()
    conn.close()
    assert reply is not None and reply["ok"], reply
    status = reply["status"]
    assert status["overridden"] == [], status["overridden"]
    assert not set(status["changesets"]) & set(IN_FLIGHT), status["changesets"]
    for m in status["managed"]:
        assert resolve(m["kind"], m["target"], served.roots).read() == m["value"], m


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(
    scripts=st.integers(1, 3).flatmap(
        lambda n: st.tuples(*(connection_script(i) for i in range(n))).map(list)
    ),
    data=st.data(),
)
def test_every_entry_gets_one_completion_or_a_malformed_close(
    served: Served, scripts: list[tuple[list[bytes], list[object], bool]], data: st.DataObject
) -> None:
    socks = [socket.socket(socket.AF_UNIX) for _ in scripts]
    try:
        for s in socks:
            s.connect(str(served.agent.socket))
        # Each connection's bytes in random chunks, the chunks of all interleaved.
        pieces = [
            data.draw(chunks(b"".join(line + b"\n" for line in lines))) for lines, _, _ in scripts
        ]
        order = data.draw(st.permutations([i for i, p in enumerate(pieces) for _ in p]))
        cursor = [0] * len(pieces)
        for i in order:
            # Closed after a bad line: what follows is never read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                socks[i].sendall(pieces[i][cursor[i]])
            cursor[i] += 1
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_WR)
        replies = _read_all(socks)
    finally:
        for s in socks:
            s.close()
    for (_, expected, ends_bad), got in zip(scripts, replies, strict=True):
        answered = [r["user_data"] for r in got if r["user_data"] is not None]
        assert sorted(map(str, answered)) == sorted(map(str, expected)), (expected, got)
        assert len(answered) == len(set(map(str, answered)))
        nulls = [r for r in got if r["user_data"] is None]
        if ends_bad:
            assert len(nulls) == 1 and got[-1] is nulls[0], got
            assert nulls[0]["verdict"] == "malformed" and not nulls[0]["ok"]
        else:
            assert nulls == [], got
        for r in got:
            assert isinstance(r["ok"], bool) and r["verdict"] and isinstance(r["errors"], list)
    _check_state(served)


def test_after_the_fuzzing_every_malformed_close_was_audited(served: Served) -> None:
    events = served.agent.audit_events()
    assert events, "no audit lines"
    assert "Traceback" not in served.agent.log.read_text()
    _check_state(served)
