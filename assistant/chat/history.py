"""Conversations kept in SQLite: listable, and exportable to Markdown.

``$XDG_STATE_HOME/kassist/chat.db`` (``/var/lib/kassist/chat.db`` as root). A row per
conversation, a row per turn (question, routing decision, answer, notice, proposals),
and a row per outcome (what became of a proposal: the agent's verdict, a refusal, the
person's no). :func:`conversation_markdown` is the one Markdown export: of a stored
conversation (:meth:`ChatHistory.markdown`) and of a live one (the TUI's export key).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from assistant.chat.memory import Outcome
from assistant.chat.session import Turn
from assistant.config import user_state_dir
from assistant.db import Migration, Schema, migrate
from assistant.errors import InputError, KassistError
from assistant.markdown import markdown_safe

#: The chat history's numbered migrations. Append only: never edit one that has shipped.
SCHEMA = Schema(
    "the chat history",
    (
        Migration(
            1,
            (
                """CREATE TABLE IF NOT EXISTS conversations (
                    id      INTEGER PRIMARY KEY AUTOINCREMENT,
                    started REAL NOT NULL,
                    title   TEXT NOT NULL
                )""",
                """CREATE TABLE IF NOT EXISTS turns (
                    id           INTEGER PRIMARY KEY AUTOINCREMENT,
                    conversation INTEGER NOT NULL REFERENCES conversations(id),
                    asked        REAL NOT NULL,
                    question     TEXT NOT NULL,
                    action       TEXT NOT NULL,
                    args         TEXT NOT NULL,
                    answer       TEXT NOT NULL,
                    notice       TEXT NOT NULL,
                    proposed     TEXT NOT NULL
                )""",
                "CREATE INDEX IF NOT EXISTS turns_by_conversation ON turns(conversation, id)",
            ),
        ),
        Migration(
            2,
            (
                """CREATE TABLE IF NOT EXISTS outcomes (
                    id           INTEGER PRIMARY KEY AUTOINCREMENT,
                    turn         INTEGER NOT NULL REFERENCES turns(id),
                    decided      REAL NOT NULL,
                    summary      TEXT NOT NULL,
                    verdict      TEXT NOT NULL,
                    ok           INTEGER NOT NULL,
                    detail       TEXT NOT NULL
                )""",
                "CREATE INDEX IF NOT EXISTS outcomes_by_turn ON outcomes(turn, id)",
            ),
        ),
    ),
)


@dataclass
class Entry:
    """One turn as the export shows it."""

    question: str
    action: str
    answer: str
    notice: str = ""
    proposed: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


def conversation_markdown(title: str, entries: Iterable[Entry]) -> str:
    """Render a conversation as Markdown: each question, answer, notice, and what became of
    every proposal (a proposal no one decided says so)."""
    out = [f"# {title}", ""]
    for e in entries:
        out += [f"**You:** {markdown_safe(e.question)}", "", f"**kassist** (`{e.action}`):", ""]
        out += [markdown_safe(e.answer), ""]
        if e.notice:
            out += [f"> {markdown_safe(e.notice)}", ""]
        decided = {o.summary for o in e.outcomes}
        for o in e.outcomes:
            out += [f"> **Outcome:** {markdown_safe(o.line())}", ""]
        for summary in e.proposed:
            if summary not in decided:
                out += [f"> **Outcome:** {markdown_safe(summary)}: not decided (still pending)", ""]
    return "\n".join(out)


def turns_markdown(title: str, turns: Sequence[Turn]) -> str:
    """Render a live conversation's turns (with their outcomes) as Markdown."""
    entries = [
        Entry(t.question, t.decision.action, t.answer, t.notice or t.error,
              [p.summary for p in t.proposals], list(t.outcomes))
        for t in turns
    ]  # fmt: skip
    return conversation_markdown(title, entries)


def default_path() -> Path:
    """Return the chat history's default path."""
    return user_state_dir() / "chat.db"


@dataclass(frozen=True)
class ConversationRow:
    """One conversation in the list."""

    id: int
    started: float
    title: str
    turns: int


class ChatHistory:
    """An open chat history; :meth:`start` begins a conversation, :meth:`record` adds turns.

    :raises KassistError: the file cannot be opened, or its schema is newer than this kassist.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=10.0, isolation_level=None)
            self._db.execute("PRAGMA journal_mode = WAL")
            migrate(self._db, SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise KassistError(
                f"cannot open the chat history {self.path}: {exc}",
                "check its permissions, or set XDG_STATE_HOME to a writable directory",
            ) from None
        self.conversation: int | None = None
        self._turn_of: dict[int, int] = {}  # proposal id -> its turn's row

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> ChatHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, title: str) -> int:
        """Begin a conversation and return its id."""
        cur = self._db.execute(
            "INSERT INTO conversations(started, title) VALUES (?, ?)", (time.time(), title[:120])
        )
        self.conversation = int(cur.lastrowid or 0)
        return self.conversation

    def record(self, turn: Turn) -> None:
        """Add a turn to the current conversation (one is started on the first turn)."""
        if self.conversation is None:
            self.start(turn.question)
        cur = self._db.execute(
            "INSERT INTO turns(conversation, asked, question, action, args, answer, notice,"
            " proposed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.conversation,
                turn.started,
                turn.question,
                turn.decision.action,
                json.dumps(turn.decision.args),
                turn.answer,
                turn.notice or turn.error,
                json.dumps([p.to_dict() for p in turn.proposals]),
            ),
        )
        for p in turn.proposals:
            self._turn_of[p.id] = int(cur.lastrowid or 0)

    def record_outcome(self, outcome: Outcome) -> None:
        """Record what became of a proposal, with the turn that proposed it."""
        turn = self._turn_of.get(outcome.proposal)
        if turn is None:
            return  # proposed before this history was opened: nothing to attach it to
        self._db.execute(
            "INSERT INTO outcomes(turn, decided, summary, verdict, ok, detail)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (turn, outcome.at or time.time(), outcome.summary, outcome.verdict,
             int(outcome.ok), outcome.detail),
        )  # fmt: skip

    def conversations(self, limit: int = 50) -> list[ConversationRow]:
        """Return the newest conversations first."""
        rows = self._db.execute(
            "SELECT c.id, c.started, c.title, COUNT(t.id) FROM conversations c"
            " LEFT JOIN turns t ON t.conversation = c.id GROUP BY c.id ORDER BY c.id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [ConversationRow(int(r[0]), float(r[1]), str(r[2]), int(r[3])) for r in rows]

    def markdown(self, conversation: int) -> str:
        """Export one conversation as Markdown.

        :raises InputError: there is no such conversation.
        """
        head = self._db.execute(
            "SELECT started, title FROM conversations WHERE id = ?", (conversation,)
        ).fetchone()
        if head is None:
            raise InputError(f"no conversation {conversation}", "see `kassist ask --history`")
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(head[0])))
        entries = []
        for row, q, action, answer, notice, proposed in self._db.execute(
            "SELECT id, question, action, answer, notice, proposed FROM turns"
            " WHERE conversation = ? ORDER BY id",
            (conversation,),
        ).fetchall():
            outcomes = [
                Outcome(0, str(summary), str(verdict), bool(ok), str(detail), None, float(at))
                for summary, verdict, ok, detail, at in self._db.execute(
                    "SELECT summary, verdict, ok, detail, decided FROM outcomes"
                    " WHERE turn = ? ORDER BY id",
                    (row,),
                )
            ]
            summaries = [str(p.get("summary", "")) for p in json.loads(proposed)]
            entries.append(Entry(q, action, str(answer), notice, summaries, outcomes))
        return conversation_markdown(f"kassist chat {conversation} ({stamp})", entries)
