"""Crash signatures: one stable key per bug, whatever the run that hit it.

A signature is computed from the crash's normalised title (addresses, numbers,
pids, ``file.c:123`` and ``+0x../0x..`` already replaced, as syzbot does) and
its type, so two hits of one bug on different machines, boots and tasks share it,
and so do kassist versions that name the bug the same way.
"""

from __future__ import annotations

import hashlib

from assistant.triage.model import Crash

SIGNATURE_VERSION = "kassist-sig/1"


def signature_of(title: str, crash_type: str) -> str:
    """Return the 16-hex-digit signature of a normalised title and crash type."""
    key = f"{SIGNATURE_VERSION}\n{crash_type}\n{title}"
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:16]


def crash_signature(crash: Crash) -> str:
    """Return the signature of a crash (see :func:`signature_of`)."""
    return signature_of(crash.title, crash.type)
