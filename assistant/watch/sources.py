"""Where ``kassist watch`` reads: the ``--source`` forms, and the streams of kernel records.

A source is named as a user types it (``kmsg``, ``file:/var/log/console``). Most sources
are *streams*: a :class:`StreamSource` is a name and an iterator of
:class:`~probes.logs.LogRecord` s, read in a thread of its own; the daemon feeds each
stream's records to a triage engine of its own and stores every crash as its report
closes. Three are the daemon's own scanners instead (``pstore``, ``kdump:DIR``,
``disks``): they look at files or devices now and then.

To add a stream (a network receiver of netconsole, syslog or OTLP, say), write a
reader in ``probes/logs`` that yields :class:`~probes.logs.LogRecord` s (``facility`` set
where the wire says it: only kernel records feed the crash store; ``realtime_us`` set to
the sender's or the arrival's wall clock), a builder here that wraps it in a
:class:`StreamSource`, and a row of :data:`SOURCE_FORMS`: the CLI, the daemon and the
docs take it from there (``docs/watch.md`` walks through it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

from assistant.errors import InputError
from probes.errors import ProbeUnavailable
from probes.logs import KmsgStats, LogRecord, iter_kmsg
from probes.logs.follow import follow_lines
from probes.logs.journal import InvalidCursor, follow_journal, journal_available
from probes.logs.kmsg import boot_realtime_us

#: A source's records: ``records(stop, idle)``. ``stop()`` is asked between waits (``True``
#: ends the iteration); ``idle()`` is called before each wait by sources that batch.
Records = Callable[[Callable[[], bool], Callable[[], None]], Iterator[LogRecord]]
#: A resume token: the kmsg sequence number or the journal cursor read last.
Token = int | str
#: A network record's (host, store source name, lane): see :attr:`StreamSource.split`.
Split = Callable[[LogRecord], tuple[str, str, str]]


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
    """

    boot: str
    follow: bool
    resume: Mapping[str, Token]
    kmsg_stats: KmsgStats
    log: Callable[[str], None]
    poll_interval: float = 0.1


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


def token_of(record: LogRecord) -> Token | None:
    """Return a record's resume token: its journal cursor, else its sequence number."""
    return record.cursor if record.cursor is not None else record.seq


def kernel_stream(boot: str) -> str:
    """Return the store's source name for this boot's kernel messages.

    /dev/kmsg and the journal hold the same messages: one name for both (and reports
    named by the kernel's timestamp), so that a report read from each is counted once.
    """
    return f"kernel:{boot[:8]}"


def kmsg_source(spec: SourceSpec, ctx: StreamContext) -> StreamSource:
    """Follow /dev/kmsg after the saved sequence number (this boot's only)."""
    after = ctx.resume.get("kmsg")
    boot_us = boot_realtime_us()

    def records(stop: Callable[[], bool], idle: Callable[[], None]) -> Iterator[LogRecord]:
        for rec in iter_kmsg(
            follow=ctx.follow,
            after_seq=after if isinstance(after, int) else None,
            stats=ctx.kmsg_stats,
            stop=stop,
            poll_interval=ctx.poll_interval,
            idle=idle,
        ):
            wall = None if rec.ts_us is None else boot_us + rec.ts_us
            yield replace(rec, realtime_us=wall)

    return StreamSource(
        "kmsg", kernel_stream(ctx.boot), records, batched=True, resumable=True,
        clock="boot+printk",
    )  # fmt: skip


def journal_source(spec: SourceSpec, ctx: StreamContext) -> StreamSource:
    """Follow the journal's kernel messages (or a journal file) after the saved cursor.

    :raises ProbeUnavailable: there is no journal with kernel messages here.
    """
    file = spec.arg or None
    if file is None:
        why = journal_available()
        if why is not None:
            raise ProbeUnavailable(f"journal: not followed: {why}", "watch kmsg instead")
    saved = ctx.resume.get("journal")

    def read(cursor: str | None, stop: Callable[[], bool]) -> Iterator[LogRecord]:
        return follow_journal(
            after_cursor=cursor, file=file, follow=ctx.follow, stop=stop,
            poll_interval=ctx.poll_interval,
        )  # fmt: skip

    def records(stop: Callable[[], bool], idle: Callable[[], None]) -> Iterator[LogRecord]:
        try:
            yield from read(saved if isinstance(saved, str) else None, stop)
        except InvalidCursor as exc:
            # ABRT jumped to the end here and lost oopses; read the boot again instead and
            # let the store count each report once.
            ctx.log(f"{exc.message}: reading this boot's kernel messages again")
            yield from read(None, stop)

    return StreamSource(
        "journal", kernel_stream(ctx.boot), records, resumable=True, clock="journal"
    )


def file_source(spec: SourceSpec, ctx: StreamContext) -> StreamSource:
    """Follow a file like ``tail -F`` (a console capture), or a pipe (``-``) to its end."""
    name = f"file:{spec.arg}"

    def records(stop: Callable[[], bool], idle: Callable[[], None]) -> Iterator[LogRecord]:
        for line in follow_lines(
            spec.arg, follow=ctx.follow, stop=stop, idle=idle, poll_interval=ctx.poll_interval
        ):
            yield LogRecord(text=line, source=name)

    return StreamSource(name, name, records, batched=True)


def _network(name: str) -> StreamBuilder:
    # The network receivers live in assistant.watch.network (loaded when used).
    def build(spec: SourceSpec, ctx: StreamContext) -> StreamSource:
        from assistant.watch import network

        builder: StreamBuilder = getattr(network, name)
        return builder(spec, ctx)

    return build


StreamBuilder = Callable[[SourceSpec, StreamContext], StreamSource]
_ADDR = r"(?P<arg>(?:(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):)?\d{1,5})"


@dataclass(frozen=True)
class SourceForm:
    """One form ``--source`` takes.

    :param kind: its name in :class:`SourceSpec`.
    :param pattern: the whole source text; group ``arg`` is what follows the colon.
    :param usage: how a person writes it.
    :param what: what it reads, for ``--help``.
    :param build: the stream's builder; ``None`` for a scanner the daemon runs itself.
    """

    kind: str
    pattern: re.Pattern[str]
    usage: str
    what: str
    build: StreamBuilder | None = None


SOURCE_FORMS: tuple[SourceForm, ...] = (
    SourceForm("kmsg", re.compile(r"kmsg"), "kmsg", "the kernel's ring buffer", kmsg_source),
    SourceForm(
        "journal",
        re.compile(r"journal(?::(?P<arg>.+))?"),
        "journal[:FILE]",
        "the journal's kernel messages, or a journal file",
        journal_source,
    ),
    SourceForm("pstore", re.compile(r"pstore"), "pstore", "the previous boot's panic"),
    SourceForm(
        "kdump",
        re.compile(r"kdump:(?P<arg>.+)"),
        "kdump:DIR",
        "kdump's crash directories, waited for",
    ),
    SourceForm(
        "file",
        re.compile(r"file:(?P<arg>.+)"),
        "file:PATH",
        "a console log followed like tail -F; - is stdin",
        file_source,
    ),
    SourceForm(
        "netconsole",
        re.compile(rf"netconsole:{_ADDR}"),
        "netconsole:[ADDR:]PORT",
        "netconsole (extended or plain) from many hosts, on a UDP port",
        _network("netconsole_source"),
    ),
    SourceForm(
        "syslog",
        re.compile(rf"syslog:{_ADDR}"),
        "syslog:[ADDR:]PORT",
        "syslog (RFC 5424/3164) from rsyslog or syslog-ng, on a UDP and a TCP port",
        _network("syslog_source"),
    ),
    SourceForm(
        "otlp",
        re.compile(rf"otlp:{_ADDR}"),
        "otlp:[ADDR:]PORT",
        "OTLP/HTTP logs (POST /v1/logs) from a collector",
        _network("otlp_source"),
    ),
    SourceForm(
        "disks",
        re.compile(r"disks(?::(?P<arg>\d+(?:\.\d+)?))?"),
        "disks[:SECONDS]",
        "fail-slow and failing drives",
    ),
)


def source_usage() -> str:
    """Return the forms ``--source`` takes, for a message: ``kmsg, journal[:FILE], ...``."""
    return ", ".join(f.usage for f in SOURCE_FORMS)


def source_help() -> str:
    """Return the forms ``--source`` takes and what each reads, for ``--help``."""
    return ", ".join(f"{f.usage} ({f.what})" for f in SOURCE_FORMS)


def parse_source(text: str) -> SourceSpec:
    """Parse one ``--source``.

    :raises InputError: it is no form of :data:`SOURCE_FORMS`.
    """
    for form in SOURCE_FORMS:
        m = form.pattern.fullmatch(text)
        if m is not None:
            return SourceSpec(form.kind, m.groupdict().get("arg") or "", text)
    raise InputError(f"watch: unknown source {text!r}", f"use {source_usage()}")


def stream_builder(spec: SourceSpec) -> StreamBuilder | None:
    """Return the builder of a stream source, or ``None`` for the daemon's own scanners."""
    return next(f.build for f in SOURCE_FORMS if f.kind == spec.kind)
