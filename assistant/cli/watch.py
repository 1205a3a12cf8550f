"""``kassist watch``: the crash triage daemon (see :mod:`assistant.watch.daemon`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from assistant.cli.common import LlmFlags, backend_or_none, llm_options
from assistant.triage.model import Crash
from assistant.watch.daemon import WatchOptions
from assistant.watch.sources import source_help


def _log(message: str) -> None:
    # journald-friendly: one line a message on stderr, no timestamps of our own; crash
    # titles are attacker-influenced, so no control character reaches the journal.
    from actions.text import printable

    print(f"kassist-watch: {printable(message)}", file=sys.stderr, flush=True)


_DEFAULT_SOURCES = ", ".join(WatchOptions.sources)


def _default_state() -> Path:
    from assistant.config import user_state_dir

    return Path(os.environ.get("STATE_DIRECTORY", "") or user_state_dir())


@click.command()
@click.option("--db", "db_path", type=click.Path(), default=None, help="The SQLite crash store.")
@click.option("--store", "store_url", default=None, metavar="URL",
              help="The fleet store (postgresql://...) instead of --db.")  # fmt: skip
@click.option("--state-dir", type=click.Path(path_type=Path), default=None,
              help="Where the resume point lives (default: the state directory).")  # fmt: skip
@click.option("--outbox", type=click.Path(path_type=Path), default=None,
              help="Draft a report for each new signature here (SIG.md, SIG.json).")  # fmt: skip
@click.option("--source", "sources", multiple=True, metavar="SRC",
              help=f"{source_help()}; repeat (default: {_DEFAULT_SOURCES}).")  # fmt: skip
@click.option("--allow-from", "allow_from", multiple=True, metavar="CIDR",
              help="Accept network sources' senders from this network only; repeat. "
              "Needed to listen beyond loopback (a source's default).")  # fmt: skip
@click.option("--once", is_flag=True, help="Read what is there, store it, and exit.")
@click.option("--host", default=None, help="The host name recorded (default: this host's).")
@click.option("--drafts-per-hour", type=click.IntRange(0), default=12, show_default=True)
@click.option("--hook-cmd", default=None, help="Run this with each new signature's JSON on stdin.")
@click.option("--hook-url", default=None, help="POST each new signature's JSON here.")
@click.option("--otlp-endpoint", default=None, metavar="URL",
              help="Export each new signature as an OTLP log record (.../v1/logs).")  # fmt: skip
@click.option("--retention-days", type=float, default=90.0, show_default=True)
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=0,
              help="Serve Prometheus metrics on 127.0.0.1:PORT.")  # fmt: skip
@click.option("--metrics-file", type=click.Path(path_type=Path), default=None,
              help="Write Prometheus metrics to this textfile (node_exporter).")  # fmt: skip
@click.option("--debug-dir", type=click.Path(), default=None,
              help="A /usr/lib/debug tree for the kdump vmcores drgn reads.")  # fmt: skip
@llm_options
def watch(
    db_path: str | None,
    store_url: str | None,
    state_dir: Path | None,
    outbox: Path | None,
    sources: tuple[str, ...],
    allow_from: tuple[str, ...],
    once: bool,
    host: str | None,
    drafts_per_hour: int,
    hook_cmd: str | None,
    hook_url: str | None,
    otlp_endpoint: str | None,
    retention_days: float,
    metrics_port: int,
    metrics_file: Path | None,
    debug_dir: str | None,
    llm_flags: LlmFlags,
) -> None:
    """Follow the kernel's logs and store every crash once, as its report closes."""
    from assistant.watch.background import HookTargets
    from assistant.watch.daemon import Watcher, install_signals
    from assistant.watch.sources import parse_source

    for source in sources:
        parse_source(source)  # a typo is one line before anything starts
    cfg = llm_flags.config()
    opts = WatchOptions(
        store=store_url or db_path,
        state_dir=state_dir or _default_state(),
        outbox=outbox,
        sources=sources or WatchOptions().sources,
        once=once,
        host=host,
        drafts_per_hour=drafts_per_hour,
        hooks=HookTargets(hook_cmd, hook_url, otlp_endpoint),
        retention_days=retention_days,
        metrics_port=metrics_port,
        metrics_file=metrics_file,
        debug_dir=debug_dir,
        allow_from=allow_from,
    )
    draft = _drafter(cfg, llm_flags.no_llm) if outbox is not None else None
    watcher = Watcher(opts, draft=draft, log=_log)
    install_signals(watcher)
    stored = watcher.run()
    if once:
        _log(f"stored {stored} crash(es) and event(s)")


def _drafter(cfg: object, no_llm: bool) -> Callable[[Crash], str]:
    # The model is loaded by the outbox thread on its first draft, never on the store path.
    from assistant.config import Config
    from assistant.drafters.bug_report import draft_report

    assert isinstance(cfg, Config)
    loaded: list[object] = []

    def draft(crash: Crash) -> str:
        if not loaded:
            loaded.append(backend_or_none(cfg, no_llm))
        llm = loaded[0]
        return draft_report(crash, llm, cfg.llm.max_tokens).markdown  # type: ignore[arg-type]

    return draft
