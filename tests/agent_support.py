"""Helpers for the kernel agent's tests: a private network namespace, a real agent in it,
and fake /proc/sys and /sys trees.

Real sysctl writes happen only inside a network namespace held by a ``sleep`` process
(``unshare -n``): the agent runs in it through ``nsenter``, so it can be SIGKILLed and
restarted in the same namespace, and tests read the kernel's value there. Only ``net.*``
keys are per namespace, so the tests write nothing else for real.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from actions.model import Completion
from tests.agent_entry import FAULT_ENV, FILL_NAME, fill
from tests.conftest import HANG_S, ROOT, hang_deadline, require, wait_until

T = TypeVar("T")
EVIDENCE = ["nstat: TcpExtListenOverflows grew by 1200 in 10 min"]


def rec(target: str, value: Any, kind: str = "sysctl", **fields: Any) -> dict[str, Any]:
    """Return a well-formed recommendation for ``target`` (fields override the defaults)."""
    base: dict[str, Any] = {
        "id": fields.pop("id", "r1"),
        "kind": kind,
        "target": target,
        "value": value,
        "rationale": "Listen queue overflows show the backlog is too short.",
        "evidence": list(EVIDENCE),
        "expected_effect": "fewer dropped connections",
        "risk": "low",
        "source": "rules",
    }
    base.update(fields)
    return base


def require_netns() -> None:
    """Require root and unshare(1)/nsenter(1), which the real sysctl tests need."""
    require(os.geteuid() == 0, "needs root to create a network namespace")
    require(
        shutil.which("unshare") is not None and shutil.which("nsenter") is not None,
        "needs unshare and nsenter (util-linux)",
    )


def netns_held() -> Iterator[NetNS]:
    """Yield a private network namespace, closed after (a pytest fixture's body:
    ``netns = pytest.fixture(netns_held, name="netns")``)."""
    require_netns()
    ns = NetNS()
    yield ns
    ns.close()


class NetNS:
    """A private network namespace kept alive by a ``sleep`` process."""

    def __init__(self) -> None:
        self.holder = subprocess.Popen(["unshare", "-n", "sleep", "3600"])
        deadline = hang_deadline()
        mine = os.readlink("/proc/self/ns/net")
        while time.monotonic() < deadline:
            try:
                if os.readlink(f"/proc/{self.holder.pid}/ns/net") != mine:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        else:
            self.close()
            raise RuntimeError("unshare -n did not create a network namespace")
        self.path = f"/proc/{self.holder.pid}/ns/net"
        self.ident = os.readlink(self.path)

    def run(self, *argv: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace."""
        return subprocess.run(
            ["nsenter", f"--net={self.path}", *argv],
            capture_output=True,
            text=True,
            check=True,
            **kwargs,
        )

    def read(self, key: str) -> str:
        """Return a sysctl's value in the namespace, whitespace-normalised."""
        path = "/proc/sys/" + key.replace(".", "/")
        return " ".join(self.run("cat", path).stdout.split())

    def write(self, key: str, value: str) -> None:
        """Write a sysctl in the namespace (the admin's hand, for override tests)."""
        path = "/proc/sys/" + key.replace(".", "/")
        self.run("sh", "-c", f"echo '{value}' > {path}")

    def close(self) -> None:
        """End the holder (and with it the namespace)."""
        self.holder.kill()
        self.holder.wait()


#: clone(2)'s flag for a network namespace (setns(2)'s nstype).
CLONE_NEWNET = 0x40000000


def in_netns(netns: NetNS, body: Callable[[], T]) -> T:
    """Run ``body`` in a thread that has entered ``netns`` (setns(2) moves the calling
    thread only): the agent's own code, in process, writing real sysctls of the private
    namespace, never the host's. Return what it returns; raise what it raises.

    :raises RuntimeError: the thread could not enter the namespace (``body`` never ran).
    """
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(netns.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            failed = libc.setns(fd, CLONE_NEWNET) != 0
        finally:
            os.close(fd)
        if failed or os.readlink("/proc/thread-self/ns/net") != netns.ident:
            err.append(RuntimeError(f"setns: {os.strerror(ctypes.get_errno())}"))
            return
        try:
            out.append(body())
        except BaseException as exc:  # handed to the caller's thread
            err.append(exc)

    thread = threading.Thread(target=run, name="kassist-test-netns")
    thread.start()
    thread.join()
    if err:
        raise err[0]
    return out[0]


class AgentProcess:
    """The agent running for real, in a namespace, on a temporary socket.

    :param nofile: its open-file limit (``RLIMIT_NOFILE``), set with ``prlimit``.
    :param via: ``actions`` (``python -m actions serve``) or ``kassist`` (``kassist agent
        serve``, which execs the former). Started with ``KASSIST_AGENT_FAULT`` in the
        ``env`` of :meth:`start`, it runs the test entry point instead
        (``tests/agent_entry.py``), which installs the fault-injection step hook.
    """

    def __init__(
        self,
        tmp: Path,
        netns: NetNS | None,
        policy: Path | None = None,
        args: tuple[str, ...] = (),
        env: Mapping[str, str] | None = None,
        nofile: int | None = None,
        via: str = "actions",
    ) -> None:
        self.tmp = tmp
        self.nofile = nofile
        self.via = via
        self.netns = netns
        self.socket = tmp / "agent.sock"
        self.audit = tmp / "audit.jsonl"
        self.state = tmp / "state"
        self.conf = tmp / "90-kassist.conf"
        self.policy = policy
        self.args = args
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "agent.log"

    def command(self, faults: bool = False) -> list[str]:
        """The agent's command line (prefixed with nsenter when in a namespace).

        :param faults: run the test entry point with the fault-injection hook.
        """
        entry = ["actions", "serve"] if self.via == "actions" else ["assistant", "agent", "serve"]
        if faults:
            entry = ["tests.agent_entry", "serve"]
        cmd = [
            sys.executable,
            "-m",
            *entry,
            "--socket",
            str(self.socket),
            "--state-dir",
            str(self.state),
            "--audit-log",
            str(self.audit),
            "--sysctl-conf",
            str(self.conf),
            "--override-interval",
            "0.2",
            *self.args,
        ]
        if self.policy is not None:
            cmd += ["--policy", str(self.policy)]
        if self.nofile is not None:
            # The open-file limit a unit without LimitNOFILE gives, scaled down for a test.
            cmd = ["prlimit", f"--nofile={self.nofile}:{self.nofile}", *cmd]
        if self.netns is not None:
            cmd = ["nsenter", f"--net={self.netns.path}", *cmd]
        return cmd

    def start(self, env: Mapping[str, str] | None = None) -> AgentProcess:
        """Start the agent and wait until its socket accepts connections."""
        faults = bool((env or {}).get(FAULT_ENV))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(faults=faults),
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=log,
                cwd=ROOT,
            )
        deadline = hang_deadline()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.socket))
                break
            except OSError:
                time.sleep(0.02)
        else:
            self.stop()  # a hang: never leave the agent behind (its caller's finally has not begun)
            raise RuntimeError(f"agent did not listen: {self.log.read_text()}")
        if self.netns is not None:
            # The safety check: the agent must be in the private namespace, never the host's.
            assert os.readlink(f"/proc/{self.proc.pid}/ns/net") == self.netns.ident
        return self

    def wait_dead(self) -> int:
        """Wait for the agent to exit (:data:`~tests.conftest.HANG_S` at most: a hang guard)
        and return its status."""
        assert self.proc is not None
        return self.proc.wait(HANG_S)

    def stop(self) -> None:
        """SIGTERM the agent (nothing is rolled back on exit) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(HANG_S)  # its exit status is checked: never cut short
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def audit_events(self) -> list[dict[str, Any]]:
        """Return the audit log's records."""
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def wait_audited(self, event: str, n: int, key: str = "") -> int:
        """Wait until ``n`` records of ``event`` are audited (see :func:`audited`) and
        return their count then (the test fails when they never are).

        Bounded records past the rate limit are counted in a ``suppressed`` line written
        within a second or two; this waits for it.
        """
        wait_until(
            lambda: audited(self.audit_events(), event, key) >= n,
            f"{n} {event} records audited",
            context=lambda: str(self.audit_events())[-2000:],
        )
        return audited(self.audit_events(), event, key)


def policed_agent(tmp: Path, netns: NetNS | None, policy: str, *args: str) -> AgentProcess:
    """An agent under ``policy`` (TOML text): in ``netns``, or on fake trees when ``None``."""
    path = tmp / "policy.toml"
    path.write_text(policy)
    if netns is None:
        proc_sys, sys_root = fake_roots(tmp)
        args = ("--proc-sys-root", str(proc_sys), "--sys-root", str(sys_root), *args)
    return AgentProcess(tmp, netns, policy=path, args=args)


def call(agent: AgentProcess, op: str, **fields: Any) -> dict[str, Any]:
    """One submission on its own connection; return its completion (one there must be)."""
    conn = RawConnection(agent.socket)
    try:
        conn.send({"op": op, "user_data": 1, **fields})
        reply = conn.read()
        assert reply is not None, f"no completion for {op}"
        return reply
    finally:
        conn.close()


def audited(events: list[dict[str, Any]], event: str, key: str = "") -> int:
    """Count the records of ``event``: one line each, or counted in a ``suppressed`` line.

    :param key: count only suppressed ones whose key starts so (``validate``, ``auth``...);
        lines are counted when their ``op`` or ``reason`` starts so, or ``key`` is empty.
    """
    n = 0
    for e in events:
        if e["event"] == event:
            about = str(e.get("op") or e.get("reason") or "")
            n += about.startswith(key)
        elif e["event"] == "suppressed":
            n += sum(c for k, c in e["counts"].get(event, {}).items() if k.startswith(key))
    return n


class Tmpfs:
    """A small tmpfs mounted for one test: a file system that really fills (``ENOSPC``).

    :param path: the mount point (created; unique to the test).
    :param size: its size (``mount -o size=``, e.g. ``1m``).
    """

    def __init__(self, path: Path, size: str) -> None:
        require(os.geteuid() == 0 and shutil.which("mount") is not None, "needs root and mount")
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "kassist-test", str(path)],
            check=True,
            capture_output=True,
        )
        self.path = path

    def fill(self) -> int:
        """Fill it (a file ``.fill``) until the kernel says ``ENOSPC``; return the bytes."""
        return fill(self.path)

    def free(self) -> None:
        """Remove what :meth:`fill` wrote (and what the agent's own hook filled)."""
        (self.path / FILL_NAME).unlink(missing_ok=True)

    def close(self) -> None:
        """Unmount it (lazily, should a process still hold a file there)."""
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)


class RawConnection:
    """A raw protocol connection: send lines, read completions."""

    def __init__(self, path: Path, timeout: float = HANG_S) -> None:
        # every read waits for a completion that must come: the timeout is a hang guard
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, entry: dict[str, Any] | bytes) -> None:
        data = entry if isinstance(entry, bytes) else json.dumps(entry).encode() + b"\n"
        self.sock.sendall(data)

    def read(self) -> dict[str, Any] | None:
        """Return the next completion, or ``None`` when the agent closed the connection."""
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        doc: dict[str, Any] = json.loads(line)
        return doc

    def closed(self) -> bool:
        """Tell whether the agent has closed the connection (after any pending completions)."""
        while True:
            entry = self.read()
            if entry is None:
                return True

    def close(self) -> None:
        self.sock.close()


# --- fake kernel trees ----------------------------------------------------------------

FAKE_SYSCTL: dict[str, str] = {
    "net/core/somaxconn": "4096",
    "net/core/rmem_max": "212992",
    "net/core/wmem_max": "212992",
    "net/core/rmem_default": "212992",
    "net/core/wmem_default": "212992",
    "net/ipv4/tcp_rmem": "4096\t131072\t6291456",
    "net/ipv4/tcp_wmem": "4096\t16384\t4194304",
    "net/ipv4/ip_local_port_range": "32768\t60999",
    "net/ipv4/tcp_fin_timeout": "60",
    "net/ipv4/tcp_keepalive_time": "7200",
    "net/ipv4/tcp_syncookies": "1",
    "net/ipv4/tcp_congestion_control": "cubic",
    "net/ipv4/ip_default_ttl": "64",
    "net/ipv4/conf/all/rp_filter": "2",
    "vm/swappiness": "60",
    "vm/dirty_ratio": "20",
    "vm/dirty_background_ratio": "10",
    "vm/min_free_kbytes": "67584",
    "vm/zone_reclaim_mode": "0",
    "vm/drop_caches": "0",
    "vm/overcommit_memory": "0",
    "kernel/kptr_restrict": "1",
    "kernel/dmesg_restrict": "1",
    "kernel/randomize_va_space": "2",
    "kernel/yama/ptrace_scope": "1",
    "kernel/unprivileged_bpf_disabled": "2",
    "kernel/modules_disabled": "0",
    "kernel/kexec_load_disabled": "0",
    "kernel/perf_event_paranoid": "2",
    "fs/protected_symlinks": "1",
    "fs/protected_hardlinks": "1",
    "fs/protected_regular": "2",
    "fs/inotify/max_user_watches": "8192",
}
FAKE_SYSCTL_READONLY = {
    "kernel/osrelease": "6.18.0-kassist",
    "net/ipv4/tcp_available_congestion_control": "reno cubic",
}
FAKE_SYSFS: dict[str, str] = {
    "block/vda/queue/scheduler": "none [mq-deadline] kyber bfq",
    "block/vda/queue/read_ahead_kb": "128",
    "block/vda/queue/nr_requests": "256",
    "block/vda/queue/rotational": "0",
    "kernel/mm/transparent_hugepage/enabled": "always [madvise] never",
    "kernel/mm/transparent_hugepage/defrag": "always defer defer+madvise [madvise] never",
    "devices/system/cpu/cpu0/cpufreq/scaling_governor": "schedutil",
}
FAKE_SYSFS_READONLY = {
    "devices/system/cpu/cpu0/cpufreq/scaling_available_governors": "performance schedutil",
}


def _populate(root: Path, files: Mapping[str, str], mode: int) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
        path.chmod(mode)


def fake_roots(tmp: Path) -> tuple[Path, Path]:
    """Build fake /proc/sys and /sys trees under ``tmp``; return (proc_sys, sys)."""
    proc_sys, sys_root = tmp / "proc_sys", tmp / "sys"
    _populate(proc_sys, FAKE_SYSCTL, 0o644)
    _populate(proc_sys, FAKE_SYSCTL_READONLY, 0o444)
    _populate(sys_root, FAKE_SYSFS, 0o644)
    _populate(sys_root, FAKE_SYSFS_READONLY, 0o444)
    secret = tmp / "outside-secret"
    secret.write_text("42\n")
    (proc_sys / "net" / "core" / "escape").symlink_to(secret)
    (sys_root / "block" / "vdb").symlink_to(tmp)  # a device whose path leaves /sys
    (tmp / "queue").mkdir()
    (tmp / "queue" / "scheduler").write_text("none [mq-deadline]\n")
    return proc_sys, sys_root


def iter_keys(root: Path) -> Iterator[tuple[str, str]]:
    """Yield (relative path, text) of every file of a fake tree."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield str(path.relative_to(root)), path.read_text()


def plain(completion: Completion) -> dict[str, Any]:
    """Return a typed completion as the JSON object the agent sends on the wire."""
    return completion.to_wire(completion.user_data)
