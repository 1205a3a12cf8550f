"""Helpers for the watch daemon's tests: real oopses for /dev/kmsg, a daemon process."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.conftest import DATA, HANG_S, ROOT, require

_STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")


def oops_lines(token: str, marker: int = 0) -> list[str]:
    """Return a real oops (the Debian 6.1 fixture's), made unique by ``token``, without stamps.

    ``marker`` goes into a line of the report, so that reports of one signature differ.
    """
    lines = (DATA / "oops-null-deref-debian-6.1.log").read_text().splitlines()
    start = next(i for i, x in enumerate(lines) if "BUG: kernel NULL pointer" in x)
    end = next(i for i, x in enumerate(lines) if "---[ end trace" in x)
    body = [_STAMP.sub("", x) for x in lines[start : end + 1]]
    out = [x.replace("kassist_crash_level", f"kassist_w{token}_level") for x in body]
    out.insert(1, f"kassist_watch_marker: {marker}")
    return out


def require_kmsg_writer() -> None:
    """Require root and a writable /dev/kmsg."""
    require(os.geteuid() == 0 and os.access("/dev/kmsg", os.W_OK), "needs root to write /dev/kmsg")


@contextlib.contextmanager
def devkmsg_on() -> Iterator[None]:
    """Let user space write /dev/kmsg without the default rate limit (restored after)."""
    path = Path("/proc/sys/kernel/printk_devkmsg")
    before = path.read_text().strip()
    path.write_text("on\n")
    try:
        yield
    finally:
        path.write_text(before + "\n")


def kmsg_write(lines: list[str], pause: float = 0.0) -> None:
    """Write each line as one /dev/kmsg record (level 4)."""
    fd = os.open("/dev/kmsg", os.O_WRONLY)
    try:
        for line in lines:
            os.write(fd, f"<4>{line}\n".encode())
            if pause:
                time.sleep(pause)
    finally:
        os.close(fd)


#: ``kassist watch`` itself, as a user runs it (for WatchProcess's ``command``).
REAL_WATCH = ("assistant", "watch")


class WatchProcess:
    """``kassist watch`` following /dev/kmsg (or ``sources``) for real, readiness told by
    sd_notify.

    By default it runs through ``tests/watch_entry.py``: the oopses the tests write to
    /dev/kmsg have the facility ``LOG_USER``, which the daemon otherwise leaves out;
    ``command=REAL_WATCH`` runs ``kassist watch`` itself.
    """

    def __init__(
        self,
        tmp: Path,
        *args: str,
        sources: tuple[str, ...] = ("kmsg",),
        command: tuple[str, ...] = ("tests.watch_entry",),
        db: Path | None = None,
        state: Path | None = None,
    ) -> None:
        self.tmp = tmp
        self.db = db or tmp / "crashes.db"
        self.state = state or tmp / "state"
        self.args = args
        self.sources = sources
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tmp / "watch.log"

    def start(self) -> WatchProcess:
        notify = self.tmp / f"notify-{time.monotonic_ns()}.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(str(notify))
            s.settimeout(HANG_S)  # a hang guard: a loaded machine starts Python slowly
            env = {**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(notify)}
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        *self.command,
                        *(a for src in self.sources for a in ("--source", src)),
                        "--db",
                        str(self.db),
                        "--state-dir",
                        str(self.state),
                        *self.args,
                    ],
                    env=env,
                    stdout=log,
                    stderr=log,
                    cwd=ROOT,
                )
            while True:
                try:
                    data = s.recv(4096)
                except TimeoutError:
                    raise AssertionError(f"watch never got ready: {self.log.read_text()}") from None
                if b"READY=1" in data:
                    break
        return self

    def alive(self) -> bool:
        """Tell whether it still runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL it (no chance to save anything)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(HANG_S)

    def stop(self) -> None:
        """SIGTERM it and wait."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(HANG_S)  # its exit status is checked: never cut short
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def rss_kib(self) -> int:
        """Return its resident memory in KiB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def stored_count(db: Path, title_part: str) -> int:
    """Return the stored count of the crashes whose title holds ``title_part``."""
    if not db.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=HANG_S)) as c:
        try:
            rows = c.execute(
                "SELECT COALESCE(SUM(count), 0) FROM crashes WHERE title LIKE ?",
                (f"%{title_part}%",),
            ).fetchall()
        except sqlite3.OperationalError:
            return 0
    return int(rows[0][0])


def wait_for(predicate: Callable[[], object], timeout: float) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` seconds passed, and tell which.

    Only for what may rightly not happen (a line printk's ratelimit ate, a storm's lost
    records); what must happen is awaited with :func:`tests.conftest.wait_until`.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def journal_file(
    path: Path, lines: list[str], start_us: int, realtime_us: int | None = None
) -> None:
    """Append kernel messages of this boot to a real journal file (systemd-journal-remote).

    :param start_us: the kernel timestamp of the first line, microseconds since boot.
    :param realtime_us: the journal's wall-clock stamp of the first line (default: now);
        line ``i`` gets both plus ``i`` microseconds.
    """
    remote = Path("/lib/systemd/systemd-journal-remote")
    require(remote.exists(), "needs systemd-journal-remote (Debian package of that name)")
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    now = int(time.time() * 1e6) if realtime_us is None else realtime_us
    entries = []
    for i, line in enumerate(lines):
        entries.append(
            f"__REALTIME_TIMESTAMP={now + i}\n__MONOTONIC_TIMESTAMP={start_us + i}\n"
            f"_SOURCE_MONOTONIC_TIMESTAMP={start_us + i}\n_BOOT_ID={boot}\n_TRANSPORT=kernel\n"
            f"SYSLOG_IDENTIFIER=kernel\nPRIORITY=4\nMESSAGE={line}\n"
        )
    export = path.with_suffix(".export")
    export.write_text("\n".join(entries) + "\n")
    subprocess.run([str(remote), f"--output={path}", str(export)], check=True,
                   capture_output=True, timeout=60)  # fmt: skip


def _read_address_0() -> None:
    ctypes.string_at(0)


def segfault_as(comm: str, fault: Callable[[], None] = _read_address_0) -> int:
    """Fork a child as nobody, named ``comm``, that reads address 0 (or commits ``fault``):
    the kernel logs its user-space fault (``comm[pid]: segfault at 0 ...``). Return the
    child's pid."""
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            ctypes.CDLL(None).prctl(15, comm.encode(), 0, 0, 0)  # PR_SET_NAME
            signal.signal(signal.SIGSEGV, signal.SIG_DFL)
            fault()
        finally:
            os._exit(1)
    os.waitpid(pid, 0)
    return pid
