"""Options and helpers shared by several subcommands."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from assistant.config import Config, load_config
from assistant.llm import LLMUnavailable, make_backend
from assistant.llm.base import Backend

if TYPE_CHECKING:  # imported when a session is opened: `kassist --help` stays fast
    from assistant.chat.session import ChatSession

F = TypeVar("F", bound=Callable[..., Any])


def format_option(
    *choices: str, default: str | None = None, text: str | None = None
) -> Callable[[F], F]:
    """Return the ``--format`` option (the parameter ``fmt``): one of ``choices``.

    :param default: the format without the option; ``None``: the first choice.
    :param text: the option's help, where the choices need saying what they are.
    """
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=default or choices[0],
        show_default=True,
        help=text,
    )


def debug_options(func: F) -> F:
    """Add ``--vmlinux`` and ``--debug-dir``: the kernel's debug files, for a vmcore or a
    log (whose faulting PC they map to file:line and the member it read)."""
    func = click.option(
        "--debug-dir",
        type=click.Path(),
        help="A /usr/lib/debug tree (the vmlinux of the crash's release and its modules' .ko).",
    )(func)
    return click.option(
        "--vmlinux",
        type=click.Path(),
        help="The kernel's vmlinux with debug info (a vmcore's, or a log's: file:line, member).",
    )(func)


@dataclass(frozen=True)
class LlmFlags:
    """The command line's LLM flags (:func:`llm_options`), handed to a command as ``llm_flags``.

    :param max_tokens: the most tokens to generate (``None``: the configuration's).
    :param no_llm: work without a language model.
    :param no_log: do not record prompts and answers in the LLM log.
    """

    model: str | None = None
    backend: str | None = None
    max_tokens: int | None = None
    no_llm: bool = False
    no_log: bool = False

    def config(self, socket: str | None = None) -> Config:
        """Load the configuration with these flags (and the agent's ``socket``, when given)
        on top."""
        return config_from_flags(self.model, self.backend, self.max_tokens, self.no_log, socket)


def llm_options(func: F) -> F:
    """Add ``--model``, ``--backend``, ``--max-tokens``, ``--no-llm`` and ``--no-log``; the
    command gets them as one :class:`LlmFlags`, its parameter ``llm_flags``."""

    @functools.wraps(func)
    def with_flags(
        *args: Any,
        model: str | None,
        backend: str | None,
        max_tokens: int | None,
        no_llm: bool,
        no_log: bool,
        **kwargs: Any,
    ) -> Any:
        flags = LlmFlags(model, backend, max_tokens, no_llm, no_log)
        return func(*args, llm_flags=flags, **kwargs)

    options = [
        click.option(
            "--no-log", is_flag=True, help="Do not record prompts and answers in the LLM log."
        ),
        click.option(
            "--no-llm", is_flag=True, help="Do not use a language model (deterministic output)."
        ),
        click.option(
            "--max-tokens",
            type=click.IntRange(1, 8192),
            default=None,
            help="Most tokens to generate.",
        ),
        click.option(
            "--backend", default=None, help="LLM backend (llama_cpp, openai, transformers, none)."
        ),
        click.option(
            "--model",
            default=None,
            metavar="NAME|PATH",
            help="Model to use: a name from `kassist models` or a GGUF file (llama_cpp).",
        ),
    ]
    wrapped: Any = with_flags
    for option in options:
        wrapped = option(wrapped)
    return wrapped  # type: ignore[no-any-return]


def session_options(history_help: str) -> Callable[[F], F]:
    """Return ``--socket``, ``--store`` and ``--no-history`` (the parameters ``socket_path``,
    ``store_path``, ``no_history``) and the LLM options: a chat session's, for ``ask`` and
    ``chat``.

    :param history_help: what ``--no-history`` leaves out of the chat history.
    """

    def add(func: F) -> F:
        func = llm_options(func)
        func = click.option("--no-history", is_flag=True, help=history_help)(func)
        func = click.option(
            "--store", "store_path", type=click.Path(), default=None, help="The crash store."
        )(func)
        return click.option("--socket", "socket_path", default=None, help="The agent's socket.")(
            func
        )

    return add


def chat_session(
    llm_flags: LlmFlags, socket_path: str | None, store_path: str | None
) -> tuple[Config, ChatSession]:
    """Open the chat session ``ask`` and ``chat`` answer in, and return it with its
    configuration: the model the flags name (or none), the agent's socket, the crash store.

    :param socket_path: the agent's socket (``None``: the configuration's).
    :param store_path: the crash store (``None``: the default one).
    """
    from assistant.chat.session import ChatSession
    from assistant.chat.tools import Context

    cfg = llm_flags.config(socket_path)
    llm = backend_or_none(cfg, llm_flags.no_llm)
    ctx = Context(store=store_path, socket=cfg.agent.socket)
    return cfg, ChatSession(llm, ctx, native_tools=cfg.chat.native_tools)


def config_from_flags(
    model: str | None = None,
    backend: str | None = None,
    max_tokens: int | None = None,
    no_log: bool = False,
    socket: str | None = None,
) -> Config:
    """Load the configuration with the command line's LLM flags on top.

    :param socket: the agent's socket (``--socket``; ``None``: the configuration's).
    """
    flags: dict[str, object] = {"model": model, "backend": backend, "max_tokens": max_tokens}
    if no_log:
        flags["log"] = False
    return load_config({"llm": flags, "agent": {"socket": socket}})


def notice(message: str) -> None:
    """Print a one-line notice on stderr (never on stdout, which may be piped JSON)."""
    click.echo(f"kassist: {message}", err=True)


def backend_or_none(cfg: Config, no_llm: bool) -> Backend | None:
    """Return the configured LLM backend, or ``None`` (with a notice) when there is none.

    ``--no-llm``, the ``none`` backend and a model that cannot be found or loaded all mean
    the caller works without a model; only the last prints a notice.
    """
    if no_llm or cfg.llm.backend == "none":
        return None
    try:
        backend = make_backend(cfg.llm)
        note = getattr(backend, "note", "")
        if note:
            notice(note)
        backend.load()
    except LLMUnavailable as exc:
        notice(f"{exc.one_line()}; continuing without a model")
        return None
    return backend


def stdout_is_tty() -> bool:
    """Tell whether standard output is a terminal (then tokens are streamed)."""
    return sys.stdout.isatty()
