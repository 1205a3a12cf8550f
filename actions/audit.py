"""The audit log: one JSON line per submission, verdict, write, read-back, rollback, override.

Lines go to a file (default ``/var/log/kassist/audit.jsonl``) and, when
journald is running, to the journal too (native protocol, one datagram per
line, ``SYSLOG_IDENTIFIER=kassist-agent``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from actions.files import open_private, private_dir

JOURNALD_SOCKET = "/run/systemd/journal/socket"


class Audit:
    """Append audit records to ``path`` (mode 0600, never through a symlink) and to journald.

    :param path: the JSON-lines file.
    :param journald: the journald socket path, or ``None`` to skip journald.
    """

    def __init__(self, path: Path, journald: str | None = JOURNALD_SOCKET) -> None:
        self.path = path
        private_dir(path.parent)
        fd = open_private(path, os.O_WRONLY | os.O_APPEND)
        self._file = os.fdopen(fd, "a", buffering=1, encoding="utf-8")
        self._lock = threading.Lock()
        self._journal: socket.socket | None = None
        if journald and os.path.exists(journald):
            try:
                self._journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._journal.connect(journald)
            except OSError:
                self._journal = None

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one audit record: ``{"ts", "event", ...fields}``.

        :return: the record as written.
        """
        entry = {"ts": round(time.time(), 6), "event": event, **fields}
        line = json.dumps(entry, sort_keys=False, default=str)
        with self._lock:
            self._file.write(line + "\n")
            if self._journal is not None:
                self._send_journald(event, line)
        return entry

    def _send_journald(self, event: str, line: str) -> None:
        # Native protocol: KEY=value lines; MESSAGE carries the JSON (no newlines in it).
        payload = (
            f"MESSAGE={line}\nSYSLOG_IDENTIFIER=kassist-agent\nKASSIST_EVENT={event}\nPRIORITY=5\n"
        ).encode()
        try:
            assert self._journal is not None
            self._journal.send(payload)
        except OSError:
            pass

    def close(self) -> None:
        """Close the file and the journald socket."""
        with self._lock:
            self._file.close()
            if self._journal is not None:
                self._journal.close()
