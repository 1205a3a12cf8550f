"""The watch daemon's small persistent state: where to resume, what was already read.

One JSON file (``STATE_DIR/watch.json``), written atomically (a temporary file, fsync,
rename) so that a SIGKILL leaves either the old or the new state, never half of one.
"""

from __future__ import annotations

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

    :param boot: the boot the sequence numbers belong to.
    :param kmsg_seq: resume /dev/kmsg after this sequence number (``u64``), same boot only.
    :param journal_cursor: resume the journal after this ``__CURSOR``, same boot only.
    :param pstore_done: the pstore files already triaged (names).
    :param kdump_done: the kdump dmesg files already triaged (paths).
    """

    boot: str = ""
    kmsg_seq: int | None = None
    journal_cursor: str | None = None
    pstore_done: list[str] = field(default_factory=list)
    kdump_done: list[str] = field(default_factory=list)


def load_state(path: Path) -> WatchState:
    """Read the state; a missing or damaged file is a fresh start."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return WatchState()
    if not isinstance(doc, dict):
        return WatchState()
    seq = doc.get("kmsg_seq")
    return WatchState(
        boot=str(doc.get("boot", "")),
        kmsg_seq=seq if isinstance(seq, int) and seq >= 0 else None,
        journal_cursor=cursor if isinstance(cursor := doc.get("journal_cursor"), str) else None,
        pstore_done=[str(x) for x in doc.get("pstore_done", [])][-MAX_SEEN_FILES:],
        kdump_done=[str(x) for x in doc.get("kdump_done", [])][-MAX_SEEN_FILES:],
    )


def save_state(path: Path, state: WatchState) -> None:
    """Write the state atomically (mode 0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(asdict(state)).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
