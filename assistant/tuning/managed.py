"""Keys someone else manages: set by a sysctl.d file, or overridden in the agent's journal.

tune reports such a key (naming the file, or the changeset whose value an admin
overrode) instead of recommending it again. The files are read as systemd-sysctl
reads them (:mod:`assistant.sysctl_d`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from actions.model import AgentStatus
from assistant.sysctl_d import SYSCTL_CONF, SYSCTL_D_DIRS, effective, read_settings, sysctl_d_files
from assistant.tuning.scenarios import KNOWN_KEYS

#: The file the agent itself persists to (``kassist agent apply --persist``): not someone else.
AGENT_FILE = "90-kassist.conf"


def sysctl_files(dirs: Iterable[str] = SYSCTL_D_DIRS, conf: str = SYSCTL_CONF) -> list[Path]:
    """Return the sysctl.d files that apply at boot, in order, excluding the agent's own."""
    return [p for p in sysctl_d_files(dirs, conf) if p.name != AGENT_FILE]


def sysctl_d_settings(
    files: Iterable[Path] | None = None, names: Iterable[str] = KNOWN_KEYS
) -> dict[str, str]:
    """Return key → the file that sets it at boot (the assignment that wins).

    :param names: the keys a glob assignment (``net.ipv4.neigh.*.gc_thresh3``) is matched
        against: the keys tune may propose.
    """
    settings = read_settings(sysctl_files() if files is None else files)
    return {key: s.path for key, s in effective(settings, names).items()}


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
