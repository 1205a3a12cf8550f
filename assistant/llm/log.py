"""The LLM log: every prompt, answer, model, parameters, token counts, timings and
structured result, in SQLite (``$XDG_STATE_HOME/kassist/llm.db``).

The schema evolves through numbered migrations (:mod:`assistant.db`); each runs
once, in a transaction, so opening the log any number of times is safe.
``kassist logs list|show`` reads it; ``llm.log = false`` (``KASSIST_LLM_LOG=0``)
turns it off, and so does ``make_backend(cfg, log=False)`` (what a ``--no-log`` flag sets).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistant.config import LLMConfig, user_state_dir
from assistant.db import Migration, Schema
from assistant.db import migrate as run_migrations
from assistant.errors import KassistError
from assistant.llm.base import Backend, Constraint, GenerationStats, Message, Sampling

LOG_NAME = "llm.db"

#: (number, statements). Append only: never edit a migration that has shipped.
MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE responses (
            id INTEGER PRIMARY KEY,
            started_at REAL NOT NULL,           -- Unix time, seconds
            backend TEXT NOT NULL,
            model TEXT NOT NULL,
            prompt_name TEXT NOT NULL DEFAULT '',
            messages TEXT NOT NULL,             -- JSON list of {role, content}
            response TEXT NOT NULL,
            params TEXT NOT NULL,               -- JSON: max_tokens, temperature, n_ctx...
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            first_token_s REAL,
            total_s REAL,
            error TEXT
        );
        CREATE INDEX responses_started ON responses(started_at);
        """,
    ),
    (
        2,
        """
        ALTER TABLE responses ADD COLUMN cached_tokens INTEGER;
        ALTER TABLE responses ADD COLUMN constraint_kind TEXT NOT NULL DEFAULT '';
        ALTER TABLE responses ADD COLUMN json_schema TEXT;
        ALTER TABLE responses ADD COLUMN structured TEXT;   -- the validated object, JSON
        ALTER TABLE responses ADD COLUMN refusal TEXT;      -- why it was refused
        """,
    ),
]


def log_path() -> Path:
    """Return where the LLM log lives."""
    return user_state_dir() / LOG_NAME


def _split(script: str) -> tuple[str, ...]:
    # SQL comments (``-- ...`` to the end of a line) first, then one statement per ``;``.
    text = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return tuple(s.strip() for s in text.split(";") if s.strip())


#: The log's schema, built from :data:`MIGRATIONS`.
SCHEMA = Schema("the LLM log", tuple(Migration(n, _split(sql)) for n, sql in MIGRATIONS))


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations this database has not seen; return the schema version.

    :raises SchemaTooNew: the log was written by a newer kassist.
    """
    run_migrations(conn, SCHEMA)
    return SCHEMA.version


def connect(path: Path | None = None, create: bool = True) -> sqlite3.Connection:
    """Open (and migrate) the LLM log.

    :param create: create the file when missing; otherwise a missing log is an error.
    :raises KassistError: the log cannot be opened or created.
    """
    where = path or log_path()
    if not create and not where.is_file():
        raise KassistError(f"no LLM log at {where}", "run a command that uses the model first")
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(where, timeout=10)
    except (OSError, sqlite3.Error) as exc:
        raise KassistError(f"cannot open the LLM log {where} ({exc})", "check the path") from None
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        migrate(conn)
    except (OSError, sqlite3.Error) as exc:
        conn.close()
        raise KassistError(f"cannot open the LLM log {where} ({exc})", "check the path") from None
    except KassistError:  # written by a newer kassist
        conn.close()
        raise
    return conn


@dataclass
class LogEntry:
    """One generation to record."""

    backend: str
    model: str
    messages: list[Message]
    params: dict[str, Any]
    stats: GenerationStats
    response: str
    json_schema: dict[str, Any] | None = None
    error: str | None = None
    started_at: float = 0.0


def record(conn: sqlite3.Connection, entry: LogEntry) -> int:
    """Write one generation to the log and return its id."""
    s = entry.stats
    with conn:
        cur = conn.execute(
            """INSERT INTO responses (started_at, backend, model, prompt_name, messages,
                   response, params, prompt_tokens, completion_tokens, first_token_s, total_s,
                   error, cached_tokens, constraint_kind, json_schema)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                entry.started_at,
                entry.backend,
                entry.model,
                s.prompt_name,
                json.dumps([{"role": m.role, "content": m.content} for m in entry.messages]),
                entry.response,
                json.dumps(entry.params),
                s.prompt_tokens,
                s.completion_tokens,
                s.first_token_s,
                s.total_s,
                entry.error,
                s.cached_tokens,
                s.constraint,
                json.dumps(entry.json_schema) if entry.json_schema is not None else None,
            ),
        )
    return int(cur.lastrowid or 0)


def record_outcome(
    conn: sqlite3.Connection, log_id: int, structured: Any = None, refusal: str | None = None
) -> None:
    """Attach a structured step's validated object (or the reason it was refused)."""
    with conn:
        conn.execute(
            "UPDATE responses SET structured = ?, refusal = ? WHERE id = ?",
            (json.dumps(structured) if structured is not None else None, refusal, log_id),
        )


class LoggedBackend:
    """A backend that records every generation in the LLM log, then passes it on.

    Loading, counting and the context size are the wrapped backend's.
    """

    def __init__(self, inner: Backend, cfg: LLMConfig, path: Path | None = None) -> None:
        self.inner = inner
        self.cfg = cfg
        self.name = inner.name
        self.model_name = inner.model_name
        self.location = inner.location
        self.note: str = getattr(inner, "note", "")
        self.constraint: Constraint = inner.constraint
        self.path = path or log_path()
        self._conn: sqlite3.Connection | None = None

    def load(self) -> object:
        """Load the wrapped backend's model."""
        return self.inner.load()

    def context_size(self) -> int:
        """Return the wrapped backend's context window in tokens."""
        return self.inner.context_size()

    def record_outcome(self, stats: GenerationStats, structured: Any, refusal: str | None) -> None:
        """Attach a structured step's outcome to its generation's row (never raises)."""
        if stats.log_id is None:
            return
        with contextlib.suppress(KassistError, sqlite3.Error):  # the log never decides
            record_outcome(self.connection(), stats.log_id, structured, refusal)

    def connection(self) -> sqlite3.Connection:
        """Return the open log, opening (and migrating) it on first use."""
        if self._conn is None:
            self._conn = connect(self.path)
        return self._conn

    def count_tokens(self, text: str) -> int:
        """Count tokens with the wrapped backend's tokenizer."""
        return self.inner.count_tokens(text)

    def stream(
        self,
        messages: list[Message],
        max_tokens: int,
        stats: GenerationStats | None = None,
        json_schema: dict[str, Any] | None = None,
        sampling: Sampling | None = None,
    ) -> Iterator[str]:
        """Stream from the wrapped backend, then log what was generated (even if cut short)."""
        stats = stats if stats is not None else GenerationStats()
        started = time.time()
        pieces: list[str] = []
        error: str | None = None
        try:
            for piece in self.inner.stream(messages, max_tokens, stats, json_schema, sampling):
                pieces.append(piece)
                yield piece
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            params: dict[str, object] = {
                "max_tokens": max_tokens,
                "temperature": self.cfg.temperature,
                "n_ctx": self.cfg.n_ctx,
                "n_threads": self.cfg.n_threads,
            }
            if sampling is not None:
                params.update(
                    stop=list(sampling.stop),
                    repeat_penalty=sampling.repeat_penalty,
                    min_p=sampling.min_p,
                    top_p=sampling.top_p,
                )
                if sampling.temperature is not None:
                    params["temperature"] = sampling.temperature
            entry = LogEntry(
                backend=self.inner.name,
                model=self.inner.model_name,
                messages=messages,
                params=params,
                stats=stats,
                response="".join(pieces),
                json_schema=json_schema,
                error=error,
                started_at=started,
            )
            try:
                stats.log_id = record(self.connection(), entry)
            except (KassistError, sqlite3.Error):
                stats.log_id = None  # a log that cannot be written never stops the answer


def list_entries(conn: sqlite3.Connection, limit: int = 20) -> list[sqlite3.Row]:
    """Return the latest log entries, newest first."""
    return list(
        conn.execute(
            """SELECT id, started_at, backend, model, prompt_name, prompt_tokens, cached_tokens,
                      completion_tokens, first_token_s, total_s, constraint_kind,
                      structured IS NOT NULL AS has_structured, refusal, error,
                      substr(response, 1, 60) AS preview
               FROM responses ORDER BY id DESC LIMIT ?""",
            (limit,),
        )
    )


def get_entry(conn: sqlite3.Connection, log_id: int) -> sqlite3.Row:
    """Return one log entry.

    :raises KassistError: no entry with that id.
    """
    row = conn.execute("SELECT * FROM responses WHERE id = ?", (log_id,)).fetchone()
    if row is None:
        raise KassistError(f"no LLM log entry {log_id}", "see `kassist logs list`")
    return row  # type: ignore[no-any-return]
