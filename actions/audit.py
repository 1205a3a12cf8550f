"""The audit log: one JSON line per submission, verdict, write, read-back, rollback, override.

Lines go to a file (default ``/var/log/kassist/audit.jsonl``) and, when
journald is running, to the journal too (native protocol, one datagram per
line, ``SYSLOG_IDENTIFIER=kassist-agent``).

Two kinds of records, so that nobody allowed to connect can fill the disk and no
write to the kernel goes unrecorded:

- :meth:`Audit.record`, what changes the kernel or the agent's life (an apply or a
  rollback that passed validation, each write, read-back and restore, overrides,
  recovery, start and stop). Always kept, whatever the log's size: their number is
  bounded by the policy's rate limit on changes. When the file system is full the
  reserve (:class:`~actions.files.Reserve`) is given up for them; when even that
  fails they wait in memory, in order, until space is back, and :meth:`Audit.ready`
  tells the agent to start nothing that writes the kernel meanwhile.
- :meth:`Audit.bounded`, what a peer can cause at will (refused connections,
  dry runs, rejected submissions, malformed entries). At most :data:`PER_SECOND`
  lines a second from peers other than root, and :data:`PER_KEY` per key (a peer and
  a rule); the rest of each second becomes one ``suppressed`` line with their counts
  by key. Root's are not rate-limited (root can fill a disk anyway). Past the log's
  size cap, or when its file system's free space falls below twice the reserve, all
  are only counted: the counts are written once there is room again, and at most once
  every :data:`QUIET_SUMMARY` seconds while the log stays over its cap.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from actions.files import RESERVE, Reserve, open_private, private_dir

JOURNALD_SOCKET = "/run/systemd/journal/socket"
#: Bounded records written per second, in all, and per key.
PER_SECOND = 200
PER_KEY = 20
#: The size past which bounded records are only counted (bytes).
MAX_BYTES = 64 << 20
#: Seconds between the summaries of bounded records counted but not written.
QUIET_SUMMARY = 3600.0
#: Records kept in memory at most while the file system is full (then they are counted).
MAX_BACKLOG = 10000


class Audit:
    """Append audit records to ``path`` (mode 0600, never through a symlink) and to journald.

    :param path: the JSON-lines file.
    :param journald: the journald socket path, or ``None`` to skip journald.
    :param max_bytes: the file's size past which bounded records are only counted.
    :param reserve: bytes held back on the file's file system (0: none).
    """

    def __init__(
        self,
        path: Path,
        journald: str | None = JOURNALD_SOCKET,
        max_bytes: int = MAX_BYTES,
        reserve: int = RESERVE,
    ) -> None:
        self.path = path
        private_dir(path.parent)
        self._fd = open_private(path, os.O_WRONLY | os.O_APPEND)
        self._size = os.fstat(self._fd).st_size
        self.max_bytes = max_bytes
        self.reserve = Reserve(path.with_name(f".{path.name}.reserve"), reserve)
        self._lock = threading.Lock()
        self._backlog: list[bytes] = []
        self._why = ""
        #: bounded records not written since start (over the caps, or the disk full)
        self.dropped = 0
        #: kept records lost: the disk stayed full past MAX_BACKLOG of them
        self.lost = 0
        self._window = 0.0
        self._in_window: Counter[str] = Counter()
        self._suppressed: Counter[tuple[str, str]] = Counter()
        self._quiet: Counter[tuple[str, str]] = Counter()
        self._quiet_since = 0.0
        self._room_checked = 0.0
        self._room = True
        self._journal: socket.socket | None = None
        if journald and os.path.exists(journald):
            try:
                self._journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._journal.connect(journald)
            except OSError:
                self._journal = None
        with contextlib.suppress(OSError):  # ready() says so before the kernel is written
            self.reserve.ensure()

    # --- kept records -------------------------------------------------------------------

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Write one record that must be kept: ``{"ts", "event", ...fields}``. Never raises.

        :return: the record as written (or as queued, when the file system is full).
        """
        entry = {"ts": round(time.time(), 6), "event": event, **fields}
        line = json.dumps(entry, default=str)
        with self._lock:
            self._keep(line.encode() + b"\n")
            self._send_journald(event, line)
        return entry

    def _keep(self, data: bytes) -> None:
        if self._backlog:  # behind already: keep the order
            self._queue(data)
            self._catch_up()
            return
        try:
            self._append(data)
            return
        except OSError as exc:
            self._why = exc.strerror or str(exc)
        try:
            if self.reserve.release():
                self._append(data)
                return
        except OSError as exc:
            self._why = exc.strerror or str(exc)
        self._queue(data)

    def _queue(self, data: bytes) -> None:
        if len(self._backlog) < MAX_BACKLOG:
            self._backlog.append(data)
        else:
            self.lost += 1

    def _catch_up(self) -> None:
        # Write what waits in memory, oldest first, as far as space allows.
        while self._backlog:
            try:
                self._append(self._backlog[0])
            except OSError as exc:
                self._why = exc.strerror or str(exc)
                return
            self._backlog.pop(0)

    @property
    def behind(self) -> bool:
        """Tell whether kept records wait in memory for space (the file system is full)."""
        return bool(self._backlog)

    def behind_why(self) -> str:
        """Say in one line why the log is behind (what the kernel said)."""
        return f"the audit log {self.path} cannot be written ({self._why}); free space there"

    def ready(self) -> str | None:
        """Write what waits, and hold the reserve; return why not, or ``None`` when ready.

        The agent calls this before anything that writes the kernel, and refuses the
        operation when the answer is not ``None``.
        """
        with self._lock:
            self._catch_up()
            if self._backlog:
                return self.behind_why()
            try:
                held = self.reserve.ensure()
            except OSError as exc:
                return f"the audit log's reserve cannot be allocated ({exc.strerror})"
            if not held:
                return (
                    f"the audit log's file system ({self.path.parent}) is full: free "
                    f"{self.reserve.size >> 10} KiB there"
                )
            return None

    # --- bounded records ----------------------------------------------------------------

    def bounded(self, event: str, key: str, /, **fields: Any) -> None:
        """Write one record a peer can cause at will, within the rate and size caps.

        The peer is ``fields["who"]`` (a dict with ``uid``), when given: its records are
        counted under ``"<key> uid <uid>"``, and root's are not rate-limited (root can
        fill a disk anyway; the size cap and the free-space floor still apply).

        :param key: what it is counted under when suppressed (e.g. ``validate rejected``).
        """
        now = time.monotonic()
        who = fields.get("who")
        uid = who.get("uid") if isinstance(who, dict) else None
        if uid is not None:
            key = f"{key} uid {uid}"
        with self._lock:
            self._roll(now)
            if not self._has_room(now):
                self._quiet[(event, key)] += 1
                self.dropped += 1
                return
            if uid != 0:
                self._in_window[""] += 1
                self._in_window[key] += 1
                if self._in_window[""] > PER_SECOND or self._in_window[key] > PER_KEY:
                    self._suppressed[(event, key)] += 1
                    return
            entry = {"ts": round(time.time(), 6), "event": event, **fields}
            self._try_append(event, json.dumps(entry, default=str), [(event, key)])

    def _try_append(self, event: str, line: str, counted: list[tuple[str, str]]) -> bool:
        try:
            self._append(line.encode() + b"\n")
        except OSError:
            for item in counted:
                self._quiet[item] += 1
            self.dropped += 1
            return False
        self._send_journald(event, line)
        return True

    def _roll(self, now: float) -> None:
        # A new second: one line with what the last one suppressed.
        if now - self._window < 1.0:
            return
        self._window = now
        self._in_window.clear()
        if self._suppressed:
            counts = self._suppressed
            self._suppressed = Counter()
            if self._has_room(now):
                self._summary("suppressed", counts, "over the rate limit")
            else:
                self._quiet.update(counts)
        # What was only counted: said once the disk has room again, and at most once an
        # hour while the log stays over its size cap.
        over_cap = self._size >= self.max_bytes
        if (
            self._quiet
            and self._fs_room(now)
            and (not over_cap or now - self._quiet_since >= QUIET_SUMMARY)
        ):
            counts, self._quiet = self._quiet, Counter()
            self._quiet_since = now
            self._summary("suppressed", counts, "over the size cap or the disk full")

    def _summary(self, event: str, counts: Counter[tuple[str, str]], why: str) -> None:
        by: dict[str, dict[str, int]] = {}
        for (of, key), n in counts.items():
            by.setdefault(of, {})[key] = n
        entry = {"ts": round(time.time(), 6), "event": event, "why": why, "counts": by}
        if not self._try_append(event, json.dumps(entry), []):
            self._quiet.update(counts)

    def _has_room(self, now: float) -> bool:
        return self._size < self.max_bytes and self._fs_room(now)

    def _fs_room(self, now: float) -> bool:
        # The file system keeps twice the reserve free (checked at most ten times a second).
        if now - self._room_checked >= 0.1:
            self._room_checked = now
            try:
                st = os.fstatvfs(self._fd)
                self._room = st.f_bavail * st.f_frsize > 2 * max(self.reserve.size, 16 << 10)
            except OSError:
                self._room = False
        return self._room

    def flush(self) -> None:
        """Write the last second's summary and what waits in memory (called periodically)."""
        with self._lock:
            self._roll(time.monotonic())
            self._catch_up()

    # --- the file and journald -----------------------------------------------------------

    def _append(self, data: bytes) -> None:
        # One line, whole or not at all: a short write (the disk filled mid-line) is cut
        # back, so the file stays one JSON object per line.
        done = 0
        try:
            while done < len(data):
                done += os.write(self._fd, data[done:])
        except OSError:
            if done:
                os.ftruncate(self._fd, self._size)
            raise
        self._size += done

    def _send_journald(self, event: str, line: str) -> None:
        # Native protocol: KEY=value lines; MESSAGE carries the JSON (no newlines in it).
        if self._journal is None:
            return
        payload = (
            f"MESSAGE={line}\nSYSLOG_IDENTIFIER=kassist-agent\nKASSIST_EVENT={event}\nPRIORITY=5\n"
        ).encode()
        with contextlib.suppress(OSError):
            self._journal.send(payload)

    def close(self) -> None:
        """Write what is pending, then close the file and the journald socket."""
        self.flush()
        with self._lock:
            os.close(self._fd)
            self.reserve.close()
            if self._journal is not None:
                self._journal.close()
