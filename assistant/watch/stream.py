"""The streams ``kassist watch`` follows: what a ``--source`` is, what a stream builder
gets, and what it returns (:class:`StreamSource`).

The builders live in :mod:`assistant.watch.sources` (the local ones) and
:mod:`assistant.watch.network` (the receivers); both take these types from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

from assistant.watch.spool import Spool
from probes.logs import KmsgStats, LogRecord

#: A source's records: ``records(stop, idle)``. ``stop()`` is asked between waits (``True``
#: ends the iteration); ``idle()`` is called before each wait by sources that batch.
Records = Callable[[Callable[[], bool], Callable[[], None]], Iterator[LogRecord]]
#: A resume token: the kmsg sequence number or the journal cursor read last.
Token = int | str
#: A network record's (host, store source name, lane): see :attr:`StreamSource.split`.
Split = Callable[[LogRecord], tuple[str, str, str]]
#: The ``--source`` kinds that listen on the network (:mod:`assistant.watch.network`).
NETWORK_KINDS = frozenset({"netconsole", "syslog", "otlp"})


@dataclass(frozen=True)
class SourceSpec:
    """One ``--source`` as parsed.

    :param kind: the form's kind (``kmsg``, ``journal``, ``file``...).
    :param arg: what follows the colon, or ``""``.
    :param text: the source as given.
    """

    kind: str
    arg: str
    text: str


@dataclass
class StreamContext:
    """What a stream builder may use.

    :param boot: this boot's id (``/proc/sys/kernel/random/boot_id``).
    :param follow: keep reading at the end (``False`` with ``--once``).
    :param resume: the resume tokens saved in this boot, by stream name.
    :param kmsg_stats: counters of the /dev/kmsg reader (records lost to overwrite).
    :param log: one line for the operator (journald-friendly, sanitised by the caller).
    :param poll_interval: seconds between two looks at a stop request or an idle input.
    :param allow: the sender networks a network source accepts (``--allow-from``; empty:
        all, allowed only on loopback).
    :param spool_dir: where a network source spools what it receives
        (:mod:`assistant.watch.spool`); ``None``: no spool.
    """

    boot: str
    follow: bool
    resume: Mapping[str, Token]
    kmsg_stats: KmsgStats
    log: Callable[[str], None]
    poll_interval: float = 0.1
    allow: tuple[IPv4Network | IPv6Network, ...] = ()
    spool_dir: Path | None = None


@dataclass
class StreamSource:
    """A stream of kernel log records the daemon follows.

    :param name: unique among the daemon's sources (``kmsg``, ``journal``, ``file:PATH``);
        the state keeps its resume token under it.
    :param stream: the store's source name of its crashes (a report is counted once per
        host and source: /dev/kmsg and the journal share ``kernel:<boot>``).
    :param records: the iterator (see :data:`Records`).
    :param batched: ``records`` calls ``idle()`` before it waits, so that records may be
        handed on in batches; otherwise each record is handed on at once.
    :param resumable: its records carry a resume token (``seq``, or ``cursor`` when set),
        saved so that a restart reads on after it; names reports by ``ts_us``.
    :param clock: what its records' ``realtime_us`` come from (see
        :attr:`assistant.triage.model.CrashTime.clock`), ``None`` when they have none.
    :param split: for a source many hosts send to (a network receiver): a record's host,
        the store's source name of its crashes, and its *lane* (the CPU that printed it,
        or ``""``); each host and lane gets a triage engine of its own, and its crashes
        are stored under that host.
    :param counters: what the source counted so far (``{"lost": 3, ...}``), exported as
        metrics.
    :param backlog: how many messages it received that wait to be read (a network
        source): its hosts' reports do not close on quiet while others' records wait.
    :param spool: a network source's spool: the daemon saves the position to read it on
        from after a restart (the first message an open report needs) and releases what
        is before it.
    """

    name: str
    stream: str
    records: Records
    batched: bool = False
    resumable: bool = False
    clock: str | None = None
    split: Split | None = None
    counters: Callable[[], dict[str, int]] | None = None
    backlog: Callable[[], int] | None = None
    spool: Spool | None = None


def token_of(record: LogRecord) -> Token | None:
    """Return a record's resume token: its journal cursor, else its sequence number."""
    return record.cursor if record.cursor is not None else record.seq


#: Makes a source's stream: ``build(spec, context)``.
StreamBuilder = Callable[[SourceSpec, StreamContext], StreamSource]
