"""Where ``kassist watch`` reads: the ``--source`` forms, and the streams of kernel records.

A source is named as a user types it (``kmsg``, ``file:/var/log/console``). Most sources
are *streams*: a :class:`~assistant.watch.stream.StreamSource` is a name and an iterator of
:class:`~probes.logs.LogRecord` s, read in a thread of its own; the daemon feeds each
stream's records to a triage engine of its own and stores every crash as its report
closes. Three are the daemon's own scanners instead (``pstore``, ``kdump:DIR``,
``disks``): they look at files or devices now and then.

To add a stream (a network receiver of netconsole, syslog or OTLP, say), write a
reader in ``probes/logs`` that yields :class:`~probes.logs.LogRecord` s (``facility`` set
where the wire says it: only kernel records feed the crash store; ``realtime_us`` set to
the sender's or the arrival's wall clock), a builder here that wraps it in a
:class:`~assistant.watch.stream.StreamSource`, and a row of :data:`SOURCE_FORMS`: the
CLI, the daemon and the docs take it from there (``docs/watch.md`` walks through it).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from assistant.errors import InputError
from assistant.watch.stream import (
    SourceSpec,
    StreamBuilder,
    StreamContext,
    StreamSource,
)
from probes.errors import ProbeUnavailable
from probes.logs import LogRecord, iter_kmsg
from probes.logs.follow import follow_lines
from probes.logs.journal import InvalidCursor, follow_journal, journal_available
from probes.logs.kmsg import boot_realtime_us


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
