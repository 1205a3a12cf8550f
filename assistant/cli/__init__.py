"""The ``kassist`` command line.

Each subcommand lives in its own module and is imported only when it runs, so
``kassist --help`` stays fast and a broken optional dependency only breaks
the command that needs it. Errors a user can meet print one line and exit
non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence

import click

from assistant.errors import KassistError
from probes.errors import ProbeError

# name → ("module:attribute", one-line help). Order is the order of `kassist --help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "triage": ("assistant.cli.triage:triage", "Find and describe kernel crashes in logs."),
    "report": ("assistant.cli.report:report", "Draft a bug report for a crash."),
    "crashes": ("assistant.cli.crashes:crashes", "Browse the crash store."),
    "tune": ("assistant.cli.tune:tune", "Find tuning opportunities and recommend sysctl changes."),
    "docs": ("assistant.cli.docs:docs", "Draft documentation from the kernel's own sources."),
    "kb": ("assistant.cli.kb:kb", "Build, inspect or search the offline kernel knowledge base."),
    "disks": ("assistant.cli.disks:disks", "Find fail-slow and failing drives (advice only)."),
    "probe": ("assistant.cli.probe:probe", "Read kernel statistics and logs, run eBPF probes."),
    "agent": ("assistant.cli.agent:agent", "Talk to (or run) the kernel agent."),
    "watch": ("assistant.cli.watch:watch", "Follow the kernel log and triage as it goes."),
    "vmcore": ("assistant.cli.vmcore:vmcore", "Analyse a vmcore with drgn."),
    "chat": ("assistant.cli.chat:chat", "Open the chat (terminal UI)."),
    "ask": ("assistant.cli.ask:ask", "Ask one question (the chat without its UI)."),
    "doctor": ("assistant.cli.doctor:doctor", "Check what this machine lets kassist do."),
    "models": ("assistant.cli.models:models", "List LLM backends and models."),
    "prompts": ("assistant.cli.prompts:prompts", "List or show prompt templates."),
    "logs": ("assistant.cli.logs:logs", "Browse the LLM prompt/response log."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module_name, attr = spec[0].split(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{spec[0]} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Help text from the table, so `--help` imports none of the subcommands.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_) for name, (_, help_) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="kassist", message="kassist %(version)s")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """kassist: an LLM-assisted operations assistant for the Linux kernel."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("KASSIST_DEBUG", "") not in ("", "0")


def _fail(message: str, code: int) -> int:
    click.echo(f"kassist: {message}", err=True)
    return code


def _invoke(args: list[str]) -> int:
    # Click's own outcomes (exit, abort, usage error) as an exit status. Without standalone
    # mode, click returns (not raises) the code of ctx.exit(n) and click.exceptions.Exit(n);
    # a command's own return value is not a status.
    try:
        status = cli.main(args=args, prog_name="kassist", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.exceptions.Abort:
        return _fail("aborted", 130)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


def _internal_error(exc: Exception, debug: bool) -> int:
    if debug:
        traceback.print_exc()
        return 70
    return _fail(
        f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", 70
    )


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status instead of exiting."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    try:
        return _invoke(args)
    except (KassistError, ProbeError) as exc:
        if debug:
            traceback.print_exc()
        return _fail(exc.one_line(), getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:
        # The reader went away (`kassist triage big.log | head`): not an error.
        sys.stderr.close()
        return 0
    except Exception as exc:
        return _internal_error(exc, debug)


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
