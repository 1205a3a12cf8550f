"""Keys someone else manages: set by a sysctl.d file, or overridden in the agent's journal.

tune reports such a key (naming the file, or the changeset whose value an admin
overrode) instead of recommending it again.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from actions.model import AgentStatus

#: Where systemd-sysctl and procps read settings, in their order.
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d",
               "/lib/sysctl.d")  # fmt: skip
SYSCTL_CONF = "/etc/sysctl.conf"
#: The file the agent itself persists to (``kassist agent apply --persist``): not someone else.
AGENT_FILE = "90-kassist.conf"

_LINE = re.compile(r"^\s*-?\s*([A-Za-z0-9_./*-]+)\s*=\s*(.*?)\s*$")


def parse_sysctl_conf(text: str) -> dict[str, str]:
    """Parse a sysctl.d file: dotted key (``/`` accepted) → value; comments are skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.lstrip().startswith(("#", ";")):
            continue
        m = _LINE.match(line)
        if m:
            out[m.group(1).replace("/", ".")] = m.group(2)
    return out


def sysctl_files(dirs: Iterable[str] = SYSCTL_DIRS, conf: str = SYSCTL_CONF) -> list[Path]:
    """Return the sysctl.d files that apply, excluding the agent's own."""
    files: list[Path] = []
    seen: set[str] = set()
    for d in dirs:
        try:
            entries = sorted(Path(d).glob("*.conf"))
        except OSError:
            continue
        for path in entries:
            if path.name in seen or path.name == AGENT_FILE:
                continue  # an earlier directory's file of the same name masks it
            seen.add(path.name)
            files.append(path)
    if Path(conf).is_file():
        files.append(Path(conf))
    return files


def sysctl_d_settings(files: Iterable[Path] | None = None) -> dict[str, str]:
    """Return key → the file that sets it (the last one read wins, as at boot)."""
    owners: dict[str, str] = {}
    for path in sysctl_files() if files is None else files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for key in parse_sysctl_conf(text):
            owners[key] = str(path)
    return owners


def agent_overrides(status: AgentStatus) -> dict[str, str]:
    """Return key → why, for keys the agent's status lists as overridden by someone else."""
    return {
        entry.target: (
            f"overridden by someone else after kassist changeset {entry.changeset} set {entry.set}"
        )
        for entry in status.overridden
        if entry.kind == "sysctl"
    }


def managed_keys(status: AgentStatus | None, files: Iterable[Path] | None = None) -> dict[str, str]:
    """Return every key someone else manages → one line saying who."""
    owners = {k: f"set by {f}" for k, f in sysctl_d_settings(files).items()}
    if status is not None:
        owners.update(agent_overrides(status))
    return owners
