"""A real PostgreSQL server for the fleet store's tests: initdb + pg_ctl in a temp dir.

Debian's ``postgresql`` package (installed by setup.sh) ships the server binaries under
``/usr/lib/postgresql/VERSION/bin``. The server refuses to run as root, so as root it runs
as the package's ``postgres`` user; it listens only on a Unix socket in its directory.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from tests.conftest import HANG_S, require


def server_bin() -> Path | None:
    """Return the newest PostgreSQL server's bin directory, or ``None``."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


@contextmanager
def postgres() -> Iterator[str]:
    """Start a throwaway server; yield its URL (database ``kassist``).

    Its files live in a new directory under /tmp (the server's user must reach it, and
    pytest's own temporary directories are private to root); removed afterwards.
    """
    tmp = Path(tempfile.mkdtemp(prefix="kassist-pg-"))
    try:
        yield from _serve(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pg_ctl(bindir: Path, tmp: Path) -> list[str]:
    # pg_ctl on the server in `tmp`: its data, its options (a Unix socket only), its log.
    opts = f"-k {tmp / 'pgsock'} -c listen_addresses='' -c fsync=off -c max_connections=64"
    return [
        str(bindir / "pg_ctl"),
        "-D",
        str(tmp / "pgdata"),
        "-o",
        opts,
        "-l",
        str(tmp / "pg.log"),
        # pg_ctl -w gives up after 60 s by default: only a hang may end its wait
        "-t",
        f"{HANG_S:.0f}",
    ]


def _as_owner() -> list[str]:
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextmanager
def server_down(url: str) -> Iterator[None]:
    """Stop the server :func:`postgres` started (``url``) for the block (as a crash would:
    ``-m immediate``), then start it again on the same data and socket."""
    bindir = server_bin()
    assert bindir is not None
    tmp = Path(parse_qs(urlsplit(url).query)["host"][0]).parent
    argv = [*_as_owner(), *_pg_ctl(bindir, tmp)]
    subprocess.run([*argv, "-m", "immediate", "-w", "stop"], check=True, capture_output=True,
                   timeout=HANG_S)  # fmt: skip
    try:
        yield
    finally:
        subprocess.run([*argv, "-w", "start"], check=True, capture_output=True, timeout=HANG_S)


def _serve(tmp: Path) -> Iterator[str]:
    bindir = server_bin()
    require(bindir is not None, "needs PostgreSQL's server (Debian package postgresql)")
    assert bindir is not None
    as_user: list[str] = []
    user = pwd.getpwuid(os.getuid()).pw_name
    if os.geteuid() == 0:
        require(shutil.which("runuser") is not None, "needs runuser to start PostgreSQL")
        user = "postgres"
        as_user = _as_owner()
    data = tmp / "pgdata"
    sock = tmp / "pgsock"
    for d in (data, sock):
        d.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(d, user, user)
    if os.geteuid() == 0:
        os.chmod(tmp, 0o755)

    def run(*argv: str) -> None:
        subprocess.run([*as_user, *argv], check=True, capture_output=True, timeout=HANG_S)

    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "--no-sync")
    log = tmp / "pg.log"
    if os.geteuid() == 0:
        log.touch()
        shutil.chown(log, user, user)
    run(*_pg_ctl(bindir, tmp), "-w", "start")
    try:
        run(str(bindir / "createdb"), "-h", str(sock), "-U", user, "kassist")
        yield f"postgresql:///kassist?host={sock}&user={user}"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            check=False,
            timeout=HANG_S,
        )
