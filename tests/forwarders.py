"""Debian's log forwarders, started by a test with a config of its own: rsyslog, syslog-ng.

rsyslog is installed by ``setup.sh`` (Debian's ``rsyslog``). Debian's ``syslog-ng-core``
conflicts with it (both provide ``system-log-daemon``), so it is not installed: its
package is downloaded once with ``apt-get download`` and unpacked into a cache
(``/var/cache/kassist/syslog-ng/VERSION``, its libraries from ``setup.sh``'s packages),
and run from there. Neither touches the machine's logging: no ``/dev/log``, no journal;
each reads what its config names and forwards to the receiver on loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import require

CACHE = Path(os.environ.get("KASSIST_SYSLOG_NG_CACHE", "/var/cache/kassist/syslog-ng"))


def _candidate_version() -> str | None:
    out = subprocess.run(["apt-cache", "policy", "syslog-ng-core"], capture_output=True,
                         text=True, check=False).stdout  # fmt: skip
    for line in out.splitlines():
        if line.strip().startswith("Candidate:"):
            version = line.split(":", 1)[1].strip()
            return None if version == "(none)" else version
    return None


def syslog_ng() -> tuple[Path, dict[str, str]]:
    """Return Debian's syslog-ng binary and the environment it runs with (unpacked from
    its package into the cache the first time)."""
    installed = Path("/usr/sbin/syslog-ng")
    if installed.exists():
        return installed, {}
    require(shutil.which("apt-get") is not None and os.geteuid() == 0,
            "needs root and apt-get to fetch Debian's syslog-ng-core")  # fmt: skip
    version = _candidate_version()
    require(version is not None, "apt knows no syslog-ng-core (run apt-get update)")
    assert version is not None
    root = CACHE / version.replace(":", "_")
    binary = root / "usr" / "sbin" / "syslog-ng"
    if not binary.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            got = subprocess.run(["apt-get", "download", f"syslog-ng-core={version}"],
                                 cwd=tmp, capture_output=True, text=True, check=False)  # fmt: skip
            debs = list(Path(tmp).glob("syslog-ng-core_*.deb"))
            require(bool(debs), f"apt-get download syslog-ng-core failed: {got.stderr[-200:]}")
            unpacked = Path(tmp) / "root"
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
            if not binary.exists():
                unpacked.rename(root)
    libdir = root / "usr" / "lib" / "syslog-ng"
    return binary, {"LD_LIBRARY_PATH": str(libdir)}


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
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rsyslogd() -> Path:
    """Return Debian's rsyslogd (``setup.sh`` installs it)."""
    path = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    require(Path(path).exists(), "needs rsyslog (Debian package rsyslog; setup.sh installs it)")
    return Path(path)
