"""Helpers for the in-kernel enforcement tests: test cgroups, writers inside them, bpftool.

Everything created is named ``kassist-enforce-*``: child cgroups of the cgroup2 mount and
the bpffs pin root ``/sys/fs/bpf/kassist-enforce-test-<pid>``. Writers run in a private
network namespace (``unshare -n``, or ``nsenter`` into a :class:`tests.agent_support.NetNS`)
so their ``net.*`` writes touch nothing of the host; they write with one ``write(2)`` per
value (Python's buffered file writes retry at close, which the kernel would see twice).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.agent_support import AgentProcess
from tests.conftest import HANG_S, ROOT, hang_deadline, require, wait_until

#: A writer: join the cgroup argv[1], then run the ops in argv[2] (JSON) and print results.
WRITER = r"""
import json, os, sys
open(os.path.join(sys.argv[1], "cgroup.procs"), "w").write(str(os.getpid()))
out = {"pid": os.getpid(), "results": []}
for op, key, value in json.loads(sys.argv[2]):
    path = "/proc/sys/" + key.replace(".", "/")
    res = {"op": op, "key": key, "value": value}
    try:
        if op == "write":
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, value.encode())
            finally:
                os.close(fd)
        res["read"] = " ".join(open(path).read().split())
        res["errno"] = 0
    except OSError as exc:
        res["errno"] = exc.errno
    out["results"].append(res)
print(json.dumps(out))
"""


def require_enforcement() -> None:
    """Require root, unshare, bpftool, and everything the enforcer itself needs.

    The BPF file system is mounted at /sys/fs/bpf where it is missing, as the agent
    itself does (and left mounted: others use it).
    """
    require(os.geteuid() == 0, "needs root to load BPF programs")
    require(shutil.which("unshare") is not None, "needs unshare (util-linux)")
    require(shutil.which("bpftool") is not None, "needs bpftool (Debian: bpftool)")
    from actions.enforce import problems
    from actions.enforce.capability import ensure_bpffs

    ensure_bpffs()
    missing = problems()
    require(not missing, "; ".join(missing))


def cgroup2_mount() -> Path:
    """The cgroup v2 mount (asserted by :func:`require_enforcement`)."""
    from actions.enforce.capability import cgroup2_mount as mount

    found = mount()
    assert found is not None
    return found


def make_cgroup(tag: str) -> Path:
    """Create a child cgroup named ``kassist-enforce-<tag>-<random>``."""
    path = cgroup2_mount() / f"kassist-enforce-{tag}-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    return path


def remove_cgroup(path: Path) -> None:
    """Remove a test cgroup once its (exited) writers are gone."""
    deadline = hang_deadline()
    while path.exists():
        try:
            path.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def run_writer(
    cgroup: Path, ops: Sequence[tuple[str, str, str]], netns: str | None = None
) -> dict[str, Any]:
    """Run a writer in ``cgroup`` and a private network namespace; return its results.

    :param netns: a namespace path to enter (``/proc/PID/ns/net``); default a fresh one.
    """
    prefix = ["nsenter", f"--net={netns}"] if netns else ["unshare", "-n"]
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", WRITER, str(cgroup), json.dumps(list(ops))],
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=True,
        cwd=ROOT,
    )
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def by_key_value(doc: dict[str, Any]) -> dict[tuple[str, str], int]:
    """Map each write of a writer's results to its errno (0: it applied)."""
    return {(r["key"], r["value"]): r["errno"] for r in doc["results"] if r["op"] == "write"}


def bpftool_exists(kind: str, obj_id: int) -> bool:
    """Tell whether the kernel still has a program, map or link with this id."""
    proc = subprocess.run(
        ["bpftool", kind, "show", "id", str(obj_id)], capture_output=True, text=True, check=False
    )
    return proc.returncode == 0


def cgroup_programs(cgroup: Path) -> list[dict[str, Any]]:
    """Return ``bpftool cgroup show`` for one cgroup (programs attached to it)."""
    proc = subprocess.run(
        ["bpftool", "-j", "cgroup", "show", str(cgroup)], capture_output=True, text=True, check=True
    )
    doc: list[dict[str, Any]] = json.loads(proc.stdout.strip() or "[]")
    return doc


def all_gone(kind: str, ids: Sequence[int]) -> bool:
    """Wait until the kernel has freed every object of ``kind`` in ``ids`` (the test fails
    when it never does) and return True.

    The kernel frees maps and programs from deferred work after the last reference
    goes (an RCU grace period later), so a check right after close may still see them.
    """
    return wait_until(
        lambda: not any(bpftool_exists(kind, i) for i in ids),
        f"the kernel freed the {kind}s {list(ids)}",
        poll_s=0.05,
    )


def remove_pins(pin_root: Path) -> None:
    """Detach and unpin whatever a failed test left under its own pin root (ours only)."""
    if not pin_root.exists():
        return
    from actions.enforce.enforcer import detach_run

    for run in pin_root.glob("run-*"):
        detach_run(run)
    # the queues' pins and their owner's directory: deepest first
    for path in sorted(pin_root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()
    pin_root.rmdir()


def serve_until_exit(agent: AgentProcess) -> subprocess.CompletedProcess[str]:
    """Run the agent's command and return once it exits (it is expected to refuse to start).

    An agent still serving after :data:`~tests.conftest.HANG_S` is killed and the test fails.
    """
    try:
        return subprocess.run(
            agent.command(), capture_output=True, text=True, timeout=HANG_S, env=agent.env,
            cwd=ROOT, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(
            f"the agent served instead of refusing to start: {exc.stderr!r}"
        ) from None


def agent_errors(stderr: str) -> list[str]:
    """The lines the agent's entry point printed as its error (``kassist-agent: ...``)."""
    return [ln for ln in stderr.splitlines() if ln.startswith("kassist-agent: ")]


#: Run argv[2:] as a process whose pid is argv[1] (clone3 with set_tid, CAP_SYS_ADMIN in
#: the initial pid namespace): the way a pid comes back after wrapping, made exact.
AT_PID = r"""
import ctypes, os, sys
pid = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
tid = (ctypes.c_int * 1)(pid)
args = (ctypes.c_uint64 * 11)(0, 0, 0, 0, 17, 0, 0, 0, ctypes.addressof(tid), 1, 0)
got = libc.syscall(435, args, ctypes.sizeof(args))  # clone3
if got == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
if got < 0:
    sys.exit(f"clone3 with set_tid={pid}: {os.strerror(ctypes.get_errno())}")
_, status = os.waitpid(got, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_writer_at_pid(
    pid: int, cgroup: Path, ops: Sequence[tuple[str, str, str]]
) -> dict[str, Any]:
    """Run a writer (in a fresh network namespace) as process ``pid``; return its results."""
    proc = subprocess.run(
        [sys.executable, "-c", AT_PID, str(pid), "unshare", "-n", sys.executable, "-c", WRITER,
         str(cgroup), json.dumps(list(ops))],
        capture_output=True, text=True, timeout=HANG_S, check=True, cwd=ROOT,
    )  # fmt: skip
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


#: An enforcing agent stand-in: joins argv[1]'s cgroup, guards argv[2], then obeys JSON
#: commands on stdin (write KEY VALUE from itself, move to a cgroup, reload, stop).
HOLDER = r"""
import json, os, sys
from pathlib import Path
home, guarded, pin_root, cache, table = sys.argv[1:6]
(Path(home) / "cgroup.procs").write_text(str(os.getpid()))
from actions.enforce import Enforcer
e = Enforcer(Path(pin_root), Path(cache), state_file=None)
e.start(json.loads(table), guard=[Path(guarded)])
print(json.dumps({"pid": os.getpid(), "agent": e.agent, "agent_cgroup": e.agent_cgroup,
                  "link": e.attachments()[0].link_id}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    out = {"op": cmd["op"]}
    if cmd["op"] == "write":
        fd = os.open("/proc/sys/" + cmd["key"].replace(".", "/"), os.O_WRONLY)
        try:
            os.write(fd, cmd["value"].encode())
            out["errno"] = 0
        except OSError as exc:
            out["errno"] = exc.errno
        finally:
            os.close(fd)
    elif cmd["op"] == "move":
        (Path(cmd["cgroup"]) / "cgroup.procs").write_text(str(os.getpid()))
    elif cmd["op"] == "reload":
        e.reload(json.loads(table))
        out["agent"] = e.agent
    elif cmd["op"] == "stop":
        e.stop()
    print(json.dumps(out), flush=True)
"""


class Holder:
    """An enforcer in a process of its own (its own network namespace), driven by commands.

    :param home: the cgroup it runs in; :param guarded: the cgroup it guards.
    """

    def __init__(
        self, home: Path, guarded: Path, pin_root: Path, cache: Path,
        table: Sequence[dict[str, Any]], netns: str | None = None,
    ) -> None:  # fmt: skip
        prefix = ["nsenter", f"--net={netns}"] if netns else ["unshare", "-n"]
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-c", HOLDER, str(home), str(guarded), str(pin_root),
             str(cache), json.dumps(list(table))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the holder did not start (exit {self.proc.wait()})")
        self.started: dict[str, Any] = json.loads(line)
        self.pid: int = self.started["pid"]
        # the safety check: it writes only inside a private network namespace
        assert os.readlink(f"/proc/{self.pid}/ns/net") != os.readlink("/proc/self/ns/net")

    def send(self, **cmd: Any) -> dict[str, Any]:
        """Send one command and return its answer."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        doc: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return doc

    def kill(self) -> None:
        """SIGKILL it (its pins stay) and reap it."""
        self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """Stop it cleanly if it still runs."""
        if self.proc.poll() is None:
            self.send(op="stop")
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(HANG_S)


# --- fixtures: a test module imports them (registered under the names in quotes) -------


@pytest.fixture(scope="module", name="bpf_cache")
def bpf_cache_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private cache for the compiled objects (0700, as the agent's own)."""
    path = tmp_path_factory.mktemp("bpf-cache")
    os.chmod(path, 0o700)
    return path


@pytest.fixture(name="pin_root")
def pin_root_fixture() -> Iterator[Path]:
    """A bpffs pin root of this test's own; whatever is left in it is detached after."""
    path = Path(f"/sys/fs/bpf/kassist-enforce-test-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    yield path
    remove_pins(path)


@pytest.fixture(name="cgroup")
def cgroup_fixture() -> Iterator[Path]:
    """A test cgroup (its child cgroups are removed with it)."""
    require_enforcement()
    path = make_cgroup("t")
    yield path
    for child in sorted(path.iterdir()):
        if child.is_dir():
            remove_cgroup(child)
    remove_cgroup(path)
