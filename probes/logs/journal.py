"""Kernel messages from the systemd journal, through ``journalctl -k -o json``."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

from probes.errors import ProbeError, ProbeUnavailable
from probes.logs.records import LogRecord

#: Journal fields copied into :attr:`LogRecord.dictionary` (the kernel's dictionary, renamed).
_DICT_FIELDS = {"_KERNEL_SUBSYSTEM": "SUBSYSTEM", "_KERNEL_DEVICE": "DEVICE", "_UDEV_SYSNAME": ""}


def journal_available() -> str | None:
    """Return why kernel messages cannot be read from the journal here, or ``None`` if they can."""
    if shutil.which("journalctl") is None:
        return "journalctl is not installed (no systemd journal on this machine)"
    proc = subprocess.run(
        ["journalctl", "-k", "-n", "1", "-o", "json", "--no-pager", "-q"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        return f"the journal has no kernel messages ({why[0] if why else 'journald not running'})"
    return None


def _message(value: Any) -> str:
    # journalctl prints non-UTF-8 or binary messages as an array of byte values.
    if isinstance(value, list):
        return bytes(b & 0xFF for b in value if isinstance(b, int)).decode("utf-8", "replace")
    return str(value) if value is not None else ""


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def parse_journal_entry(line: bytes | str) -> LogRecord | None:
    """Turn one line of ``journalctl -o json`` output into a record, or ``None`` if it is not one.

    :param line: one JSON object.
    :return: the record; ``ts_us`` is ``_SOURCE_MONOTONIC_TIMESTAMP`` (µs since boot).
    """
    try:
        entry = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict) or "MESSAGE" not in entry:
        return None
    dictionary = {
        (name or key): str(entry[key]) for key, name in _DICT_FIELDS.items() if key in entry
    }
    ts = _int(entry.get("_SOURCE_MONOTONIC_TIMESTAMP"))
    if ts is None:
        ts = _int(entry.get("__MONOTONIC_TIMESTAMP"))
    return LogRecord(
        text=_message(entry["MESSAGE"]),
        source="journal",
        seq=_int(entry.get("__SEQNUM")),
        level=_int(entry.get("PRIORITY")),
        facility=_int(entry.get("SYSLOG_FACILITY")),
        ts_us=ts,
        dictionary=dictionary,
        realtime_us=_int(entry.get("__REALTIME_TIMESTAMP")),
        cursor=entry["__CURSOR"] if isinstance(entry.get("__CURSOR"), str) else None,
    )


def iter_journal(boot: int = 0) -> Iterator[LogRecord]:
    """Yield the kernel messages the journal holds for one boot.

    :param boot: 0 for the current boot, -1 for the previous one (``journalctl -b``).
    :raises ProbeUnavailable: journalctl is missing or there is no journal here.
    :raises ProbeError: the journal has nothing for that boot.
    """
    why = journal_available()
    if why is not None:
        raise ProbeUnavailable(
            f"journal: not available: {why}", "read /dev/kmsg or a log file instead"
        )
    with subprocess.Popen(
        ["journalctl", "-k", "-b", str(boot), "-o", "json", "--no-pager", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            record = parse_journal_entry(line)
            if record is not None:
                yield record
        err = proc.stderr.read() if proc.stderr else b""
    if proc.returncode != 0:
        why = err.decode("utf-8", "replace").strip() or "journalctl failed"
        raise ProbeError(
            f"journal: boot {boot}: {why}",
            "list the boots the journal knows with `journalctl --list-boots`",
        )


class InvalidCursor(ProbeError):
    """journalctl refused a saved cursor (another journal, or one that was rotated away)."""


def follow_journal(
    *,
    after_cursor: str | None = None,
    file: str | None = None,
    follow: bool = False,
    stop: Callable[[], bool] | None = None,
    poll_interval: float = 0.25,
) -> Iterator[LogRecord]:
    """Yield this boot's kernel messages from the journal, each with its cursor
    (:attr:`LogRecord.cursor`).

    :param after_cursor: resume after this ``__CURSOR``.
    :param file: read this journal file instead of the system's (``journalctl --file``).
    :param follow: keep waiting for new messages (``journalctl -f``).
    :param stop: called every ``poll_interval`` seconds while following; ``True`` ends it.
    :raises InvalidCursor: the cursor does not point into this journal.
    :raises ProbeError: journalctl is missing or failed.
    """
    if shutil.which("journalctl") is None:
        raise ProbeUnavailable("journal: journalctl is not installed", "use the kmsg source")
    argv = ["journalctl", "-k", "-o", "json", "--no-pager", "-q"]
    argv += ["--file", file] if file else []
    argv += ["--after-cursor", after_cursor] if after_cursor else []
    argv += ["-f"] if follow else []
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    done = threading.Event()

    def stopper() -> None:
        while not done.wait(poll_interval):
            if stop is not None and stop():
                proc.terminate()
                return

    threading.Thread(target=stopper, daemon=True).start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            record = parse_journal_entry(line)
            if record is not None and record.cursor:
                yield record
    finally:
        done.set()
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)
    error = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
    if proc.returncode not in (0, -15) and "cursor" in error.lower():
        raise InvalidCursor(f"journal: {error.splitlines()[0]}", "the boot is read again")
    if proc.returncode not in (0, -15):
        first = error.splitlines()[0] if error else f"journalctl exited {proc.returncode}"
        raise ProbeError(f"journal: {first}", "check `journalctl -k`")
