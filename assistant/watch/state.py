"""The watch daemon's small persistent state: where to resume, what was already read.

One JSON file (``STATE_DIR/watch.json``), written atomically (a temporary file, fsync,
rename) so that a SIGKILL leaves either the old or the new state, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from probes.stats import read_boot_id

#: The most kdump files remembered as already triaged.
MAX_SEEN_FILES = 1000


def boot_id() -> str:
    """Return this boot's id (``/proc/sys/kernel/random/boot_id``), or ``""``."""
    return read_boot_id()


@dataclass
class WatchState:
    """What a restart needs.

    :param boot: the boot the resume tokens belong to.
    :param resume: where each resumable stream reads on after, by stream name: the
        /dev/kmsg sequence number (``u64``) under ``kmsg``, the journal's ``__CURSOR`` under
        ``journal``; this boot's only.
    :param pstore_done: the pstore files already triaged (names).
    :param kdump_done: the kdump dmesg files and dumps already triaged (paths).
    """

    boot: str = ""
    resume: dict[str, int | str] = field(default_factory=dict)
    pstore_done: list[str] = field(default_factory=list)
    kdump_done: list[str] = field(default_factory=list)


def _tokens(doc: dict[str, object]) -> dict[str, int | str]:
    # The resume tokens of a state file, also of one written before they were a table.
    raw = doc.get("resume")
    table = dict(raw) if isinstance(raw, dict) else {}
    for name, old in (("kmsg", "kmsg_seq"), ("journal", "journal_cursor")):
        table.setdefault(name, doc.get(old))
    return {
        str(k): v
        for k, v in table.items()
        if (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or isinstance(v, str)
    }


def load_state(path: Path) -> WatchState:
    """Read the state; a missing or damaged file is a fresh start."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return WatchState()
    if not isinstance(doc, dict):
        return WatchState()
    return WatchState(
        boot=str(doc.get("boot", "")),
        resume=_tokens(doc),
        pstore_done=[str(x) for x in doc.get("pstore_done", [])][-MAX_SEEN_FILES:],
        kdump_done=[str(x) for x in doc.get("kdump_done", [])][-MAX_SEEN_FILES:],
    )


def save_state(path: Path, state: WatchState) -> None:
    """Write the state atomically (mode 0600).

    :raises OSError: it cannot be written (a full disk: the previous state stays whole).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(asdict(state)).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
