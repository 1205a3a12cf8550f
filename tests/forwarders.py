"""Debian's log forwarders, started by a test with a config of its own: rsyslog, syslog-ng.

rsyslog is installed by ``setup.sh`` (Debian's ``rsyslog``). Debian's ``syslog-ng-core``
conflicts with it (both provide ``system-log-daemon``), so it is not installed: ``setup.sh``
downloads its package once and unpacks it into a cache
(``/var/cache/kassist/syslog-ng/VERSION``, its libraries from ``setup.sh``'s packages);
the tests run it from there. Neither touches the machine's logging: no ``/dev/log``, no journal;
each reads what its config names and forwards to the receiver on loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import HANG_S, require

CACHE = Path(os.environ.get("KASSIST_SYSLOG_NG_CACHE", "/var/cache/kassist/syslog-ng"))


def syslog_ng() -> tuple[Path, dict[str, str]]:
    """Return Debian's syslog-ng binary and the environment it runs with: the installed
    one, else the newest ``setup.sh`` unpacked into the cache."""
    installed = Path("/usr/sbin/syslog-ng")
    if installed.exists():
        return installed, {}
    unpacked = sorted(CACHE.glob("*/usr/sbin/syslog-ng"))
    require(bool(unpacked), f"needs Debian's syslog-ng-core unpacked into {CACHE} "
                            "(./setup.sh does it, as root)")  # fmt: skip
    root = unpacked[-1].parent.parent.parent
    return unpacked[-1], {"LD_LIBRARY_PATH": str(root / "usr" / "lib" / "syslog-ng")}


def syslog_ng_modules(binary: Path) -> list[str]:
    """Return the ``--module-path`` argument for an unpacked syslog-ng (none installed)."""
    if binary == Path("/usr/sbin/syslog-ng"):
        return []
    found = sorted((binary.parent.parent / "lib" / "syslog-ng").glob("3.*"))
    return [f"--module-path={found[-1]}"] if found else []


@contextmanager
def running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a forwarder until the block ends (SIGTERM, then SIGKILL)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=out)
    try:
        time.sleep(0.2)
        assert proc.poll() is None, log.read_text(errors="replace")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(HANG_S)  # a forwarder flushes what it holds on SIGTERM: a hang guard
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rsyslogd() -> Path:
    """Return Debian's rsyslogd (``setup.sh`` installs it)."""
    path = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    require(Path(path).exists(), "needs rsyslog (Debian package rsyslog; setup.sh installs it)")
    return Path(path)
