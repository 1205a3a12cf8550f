"""Helpers for tune's real-condition tests: workloads that run real processes inside a
private network namespace or a cgroup, and a runner for ``kassist tune``.

Every workload is a small Python program run with ``nsenter`` (so its sockets live in
the namespace); everything it creates is named ``kassist-tune-...`` and removed after.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.agent_support import NetNS, require_netns
from tests.conftest import HANG_S, hang_deadline, run_kassist

#: A server whose accept queue fills: listen(4096) (capped by somaxconn), never accept
#: during the hold, while N clients connect at once (and, with a third argument, that
#: many more every 0.1 s of the hold).
LISTEN_FLOOD = r"""
import socket, sys, time
n, hold = int(sys.argv[1]), float(sys.argv[2])
more = int(sys.argv[3]) if len(sys.argv) > 3 else 0
backlog = int(sys.argv[4]) if len(sys.argv) > 4 else 4096
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(backlog)
port = srv.getsockname()[1]
clients = []


def connect(count):
    for _ in range(count):
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        clients.append(c)


connect(n)
print(port, flush=True)  # ready: the first clients are queued
end = time.monotonic() + hold
while time.monotonic() < end:
    time.sleep(0.1)
    connect(more)
"""

#: A UDP sink with a 4 KiB receive buffer that never reads, and a sender that blasts it.
UDP_FLOOD = r"""
import socket, sys, time
hold = float(sys.argv[1])
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
sink.bind(("127.0.0.1", 0))
out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + hold
payload = b"x" * 1000
ready = False
while time.monotonic() < end:
    for _ in range(200):
        out.sendto(payload, sink.getsockname())
    if not ready:
        print("ready", flush=True)  # the sink's buffer is full: it drops from here on
        ready = True
    time.sleep(0.001)
"""

#: Short connections closed by the client first, so each leaves a TIME-WAIT socket;
#: connect errors (EADDRNOTAVAIL once the port range is used up) are counted.
SHORT_CONNECTIONS = r"""
import errno, socket, sys, time
hold = float(sys.argv[1])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(4096)
srv.setblocking(False)
addr = srv.getsockname()
end = time.monotonic() + hold
failed = made = 0
print("ready", flush=True)
while time.monotonic() < end:
    c = socket.socket()
    try:
        c.connect(addr)
        made += 1
    except OSError as exc:
        failed += exc.errno == errno.EADDRNOTAVAIL
        c.close()
        time.sleep(0.002)
        continue
    try:
        s, _ = srv.accept()
    except BlockingIOError:
        s = None
    c.close()
    if s is not None:
        s.close()
print(made, failed, flush=True)
"""

#: A process that opens inotify instances until EMFILE and holds them.
INOTIFY_INSTANCES = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fds, failures = [], 0
for _ in range(int(sys.argv[1])):
    fd = libc.inotify_init1(0)
    if fd < 0:
        failures += 1
    else:
        fds.append(fd)
print(len(fds), failures, flush=True)
time.sleep(float(sys.argv[2]))
"""

#: A process that forks sleeping children until fork fails, and holds them.
FORK_UNTIL_EAGAIN = r"""
import os, sys, time
kids, failures = [], 0
for _ in range(int(sys.argv[1])):
    try:
        pid = os.fork()
    except BlockingIOError:
        failures += 1
        continue
    if pid == 0:
        time.sleep(float(sys.argv[2]) + 1)
        os._exit(0)
    kids.append(pid)
print(len(kids), failures, flush=True)
time.sleep(float(sys.argv[2]))
for k in kids:
    os.kill(k, 9)
    os.waitpid(k, 0)
"""

#: Datagrams to ever new addresses of an on-link /16 nobody answers ARP for: each one
#: leaves an INCOMPLETE neighbour entry, until the (global) table reaches gc_thresh3.
NEIGH_FLOOD = r"""
import socket, sys, time
hold, rate = float(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
# Unresolved datagrams wait in the neighbour queue, charged to the socket: as root, take
# a send buffer big enough that the sender never blocks on them (SO_SNDBUFFORCE).
s.setsockopt(socket.SOL_SOCKET, 32, 64 << 20)
s.setblocking(False)
end = time.monotonic() + hold
i = 0
while time.monotonic() < end:
    for _ in range(rate // 10):
        i += 1
        try:
            s.sendto(b"x", (f"10.77.{(i >> 8) & 255}.{i & 255}", 9))
        except OSError:
            pass
    if i == rate // 10:
        print("ready", flush=True)
    time.sleep(0.1)
"""

#: One-way UDP flows to every port from several sockets: each is a new conntrack entry
#: (30 s timeout) until the namespace's table holds nf_conntrack_max of them.
CONNTRACK_FLOOD = r"""
import socket, sys, time
flows, hold = int(sys.argv[1]), float(sys.argv[2])
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(flows // 60000 + 1)]
for s in socks:
    s.setblocking(False)
end = time.monotonic() + hold
first = True
while first or time.monotonic() < end:
    sent = 0
    for s in socks:
        for port in range(1024, 61024):
            try:
                s.sendto(b"", ("127.0.0.1", port))
            except OSError:
                pass
            sent += 1
            if sent >= flows:
                break
    if first:
        print(sent, flush=True)  # ready: every flow has been sent once
        first = False
    time.sleep(10)  # again well within the entries' 30 s
"""

#: Reads a file bigger than its memory cgroup's limit, over and over (page-cache thrash).
THRASH = r"""
import os, sys, time
path, hold = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + hold
ready = False
while time.monotonic() < end:
    with open(path, "rb", buffering=0) as f:
        # Drop what is cached (it may be charged to another cgroup), then read it back.
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        while f.read(1 << 20):
            pass
    if not ready:
        print("ready", flush=True)  # the cgroup is at its limit from the first pass on
        ready = True
"""


class TuneNetNS(NetNS):
    """A private network namespace with loopback up."""

    def __init__(self) -> None:
        super().__init__()
        self.run("ip", "link", "set", "lo", "up")

    def spawn(self, script: str, *args: str) -> subprocess.Popen[str]:
        """Start a Python workload inside the namespace."""
        return spawn(script, *args, prefix=("nsenter", f"--net={self.path}"))

    def sockstat_tw(self) -> int:
        """Return how many TCP sockets are in TIME-WAIT inside the namespace."""
        words = self.run("cat", "/proc/net/sockstat").stdout.split()
        return int(words[words.index("tw") + 1]) if "tw" in words else 0

    def netstat(self, name: str) -> int:
        """Return a TcpExt counter of /proc/net/netstat inside the namespace."""
        lines = self.run("cat", "/proc/net/netstat").stdout.splitlines()
        for head, values in zip(lines[::2], lines[1::2], strict=False):
            names = head.split()
            if names[0] == "TcpExt:" and name in names:
                return int(values.split()[names.index(name)])
        raise KeyError(name)


def spawn(
    script: str,
    *args: str,
    user: str | None = None,
    cgroup: Path | None = None,
    prefix: tuple[str, ...] = (),
) -> subprocess.Popen[str]:
    """Start a Python workload, optionally as a user, in a cgroup, or under a prefix command."""
    argv = [*prefix]
    if user is not None:
        argv += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
    argv += [sys.executable, "-c", script, *args]
    if cgroup is not None:
        # Join the cgroup before exec, so every child is born in it.
        argv = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh", *argv]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextlib.contextmanager
def private_netns() -> Iterator[TuneNetNS]:
    """A private network namespace with loopback up, for the length of a test (root only)."""
    require_netns()
    ns = TuneNetNS()
    try:
        yield ns
    finally:
        ns.close()


def tune(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    """Run ``kassist tune --format json ...``; return the exit status, the object, stderr."""
    proc = run_kassist(["tune", "--format", "json", *args], env=env)
    assert proc.returncode in (0, 3), proc.stderr
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def proposals(doc: dict[str, Any], scenario: str) -> dict[str, dict[str, Any]]:
    """Return the proposals of one finding by key (empty when the finding is absent)."""
    for f in doc["findings"]:
        if f["id"] == scenario:
            return {p["key"]: p for p in f["proposals"]}
    return {}


def finish(proc: subprocess.Popen[str]) -> str:
    """Wait for a workload and return its stdout (kill it if it hangs: :data:`HANG_S`)."""
    try:
        out, _ = proc.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


#: A workload's hold when it runs until it is stopped (seconds).
UNTIL_STOPPED = "3600"


def wait_ready(proc: subprocess.Popen[str]) -> str:
    """Wait for a workload's first line (it prints one when its steady state begins).

    :raises AssertionError: it ended, or hung silent for :data:`HANG_S` seconds.
    """
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], HANG_S)
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the workload never became ready: {out!r} {err!r}")
    return line


@contextlib.contextmanager
def running(
    script: str,
    *args: str,
    ns: TuneNetNS | None = None,
    user: str | None = None,
    cgroup: Path | None = None,
) -> Iterator[subprocess.Popen[str]]:
    """Run a workload until stopped: from when it says it is ready until the block ends.

    However long tune takes to start on a loaded machine, the workload is still there.
    """
    prefix = ("nsenter", f"--net={ns.path}") if ns is not None else ()
    proc = spawn(script, *args, user=user, cgroup=cgroup, prefix=prefix)
    try:
        wait_ready(proc)
        yield proc
    finally:
        proc.terminate()
        if cgroup is not None:
            kill_cgroup(cgroup)  # its children hold the output pipe too
        finish(proc)


def make_cgroup(controller: str, name: str) -> Path:
    """Create a cgroup v1 directory of ``controller`` (removed by :func:`remove_cgroup`)."""
    path = Path("/sys/fs/cgroup") / controller / name
    path.mkdir()
    return path


def kill_cgroup(path: Path) -> None:
    """Kill every process of a cgroup, until it holds none (new ones may still be forking)."""
    deadline = hang_deadline()
    while pids := [int(p) for p in (path / "cgroup.procs").read_text().split()]:
        assert time.monotonic() < deadline, f"{path} still holds {pids}"
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        time.sleep(0.05)


def remove_cgroup(path: Path) -> None:
    """Kill what is left in a cgroup and remove it."""
    kill_cgroup(path)
    path.rmdir()
