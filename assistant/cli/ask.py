"""``kassist ask``: one turn of the chat engine, without the terminal UI."""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING

import click

from actions.text import printable, printable_lines
from assistant.cli.common import LlmFlags, chat_session, notice, session_options
from assistant.errors import KassistError

if TYPE_CHECKING:  # imported when run: `kassist --help` stays fast
    from assistant.chat.session import ChatSession, Turn


def _echo_turn_text(turn: Turn, approving: bool) -> None:
    click.echo(printable_lines(turn.answer))
    if turn.notice:
        notice(printable(turn.notice))
    if not approving:
        for p in turn.proposals:
            click.echo(f"proposed: {printable(p.summary)} (approve with --yes)")


@click.command()
@click.argument("question", nargs=-1, required=True)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--route-only", is_flag=True, help="Print the routing decision; run nothing.")
@click.option(
    "--yes",
    is_flag=True,
    help="Approve a change the question asks for (the agent still validates). A question, "
    "a hypothetical or a negation is never a request: it is answered, and dry-run.",
)
@session_options("Do not record the turn in the chat history.")
def ask(
    question: tuple[str, ...],
    fmt: str,
    route_only: bool,
    yes: bool,
    socket_path: str | None,
    store_path: str | None,
    no_history: bool,
    llm_flags: LlmFlags,
) -> None:
    """Ask one QUESTION (or run one /command) and print the answer."""
    text = " ".join(question)
    cfg, session = chat_session(llm_flags, socket_path, store_path)
    if route_only:
        _echo_route(session, text, fmt)
        return
    turn = _answer(session, text, fmt, yes, record=cfg.chat.history and not no_history)
    if fmt == "json":
        click.echo(json.dumps(turn.to_dict(), default=str))
    else:
        for outcome in turn.outcomes:
            click.echo(f"agent: {printable(outcome.line())}")
    if status := _exit_status(turn):
        raise SystemExit(status)


def _echo_route(session: ChatSession, text: str, fmt: str) -> None:
    # --route-only: the decision, and nothing run.
    decision = session.route(text)
    out = {"schema": "kassist.ask/1", **decision.to_dict()}
    click.echo(json.dumps(out) if fmt == "json" else f"{decision.action} {decision.args}")


def _answer(session: ChatSession, text: str, fmt: str, yes: bool, record: bool) -> Turn:
    # One turn, recorded in the chat history when asked, its proposals approved with --yes.
    history = None
    if record:
        from assistant.chat.history import ChatHistory

        history = ChatHistory()
        session.on_turn = history.record
        session.on_outcome = history.record_outcome
    try:
        # Not streamed: what a terminal shows is the checked answer, once, through the
        # sanitiser (a model's raw tokens never reach it).
        turn = session.ask(text)
        if fmt == "text":
            _echo_turn_text(turn, yes)
        if yes:
            _approve(session, turn, fmt)
    finally:
        if history is not None:
            history.close()
    return turn


def _approve(session: ChatSession, turn: Turn, fmt: str) -> None:
    for proposal in turn.proposals:
        if fmt == "text":
            click.echo(f"approved: {printable(proposal.summary)}")
        with contextlib.suppress(KassistError):  # the outcome ("unavailable") says why
            session.approve(proposal)


def _exit_status(turn: Turn) -> int:
    # 1: the turn failed; 3: a change asked for does not hold (refused, failed, no agent).
    if turn.error:
        return 1
    return 3 if any(not o.ok for o in turn.outcomes) else 0
