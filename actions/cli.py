"""The agent's own entry point: ``python -m actions serve`` (``kassist-agent serve``).

The root daemon starts from here and imports nothing but ``actions`` (argparse, no
click, no ``assistant``): the trusted process loads only the trusted code. ``kassist
agent serve`` execs this with the options from kassist's configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from actions.audit import MAX_BYTES
from actions.errors import ActionError
from actions.files import RESERVE
from actions.persist import SYSCTL_CONF
from actions.protocol import DEFAULT_GROUP, DEFAULT_SOCKET

if TYPE_CHECKING:
    from actions.agent import Agent

#: Called with the agent once it is built, before it recovers and serves (tests only:
#: ``tests/agent_entry.py`` installs its fault-injection step hook this way).
Prepare = Callable[["Agent"], None]

#: Where the agent keeps its state unless told otherwise (the systemd unit's directories).
DEFAULT_STATE_DIR = "/var/lib/kassist"
DEFAULT_AUDIT_LOG = "/var/log/kassist/audit.jsonl"


def _octal(text: str) -> int:
    try:
        return int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not octal (e.g. 0660)") from None


def parser() -> argparse.ArgumentParser:
    """Return the command line parser: ``serve`` and its options."""
    top = argparse.ArgumentParser(
        prog="kassist-agent", description="The kassist kernel agent (run as root)."
    )
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the agent daemon on its Unix socket until SIGTERM")
    serve.add_argument("--socket", default=DEFAULT_SOCKET, metavar="PATH", help="socket path")
    serve.add_argument("--state-dir", default=DEFAULT_STATE_DIR, metavar="DIR", help="journal dir")
    serve.add_argument(
        "--policy", default="", metavar="FILE", help="policy TOML (default: built-in)"
    )
    serve.add_argument(
        "--group", default=DEFAULT_GROUP, help="group allowed besides root ('' : root only)"
    )
    serve.add_argument(
        "--audit-log", default=DEFAULT_AUDIT_LOG, metavar="FILE", help="JSON-lines audit log"
    )
    serve.add_argument(
        "--sysctl-conf", default=str(SYSCTL_CONF), metavar="FILE", help="file for persisted changes"
    )
    serve.add_argument("--socket-mode", type=_octal, default=0o660, help=argparse.SUPPRESS)
    serve.add_argument("--proc-sys-root", default="/proc/sys", help=argparse.SUPPRESS)
    serve.add_argument("--sys-root", default="/sys", help=argparse.SUPPRESS)
    serve.add_argument("--entry-timeout", type=float, default=5.0, help=argparse.SUPPRESS)
    serve.add_argument("--idle-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    serve.add_argument("--override-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    serve.add_argument(
        "--max-connections", type=int, default=256, metavar="N", help="connections open at once"
    )
    serve.add_argument(
        "--max-per-peer", type=int, default=64, metavar="N", help="connections per user (uid)"
    )
    serve.add_argument(
        "--enforce-lockdown",
        action="append",
        default=[],
        metavar="CGROUP",
        help="a cgroup v2 directory whose tasks may write no sysctl (repeatable)",
    )
    serve.add_argument(
        "--enforce-guard",
        action="append",
        default=[],
        metavar="CGROUP",
        help="a cgroup v2 directory whose tasks may write managed keys only in policy",
    )
    serve.add_argument(
        "--audit-max-bytes",
        type=int,
        default=MAX_BYTES,
        metavar="N",
        help="audit log size past which refusals and dry runs are only counted",
    )
    serve.add_argument(
        "--disk-reserve",
        type=int,
        default=RESERVE >> 10,
        metavar="KIB",
        help="space held back beside the journal and the audit log, so that an operation "
        "under way when the disk fills still records its end (0: none)",
    )
    serve.add_argument(
        "--enforce-best-effort",
        action="store_true",
        help="serve even when some of the enforcement asked for cannot run (status lists it)",
    )
    serve.add_argument(
        "--bpf-queues",
        action="store_true",
        help="validate in the kernel too, through BPF submission and completion queues",
    )
    serve.add_argument(
        "--bpf-queue-rate",
        type=int,
        default=100,
        metavar="N",
        help="recommendations one extension may submit per second (0: unlimited)",
    )
    serve.add_argument("--bpf-queue-burst", type=int, default=200, help=argparse.SUPPRESS)
    serve.add_argument("--enforce-pin-root", default="/sys/fs/bpf/kassist", help=argparse.SUPPRESS)
    serve.add_argument(
        "--enforce-state", default="/run/kassist/enforce.json", help=argparse.SUPPRESS
    )
    return top


def serve(args: argparse.Namespace, prepare: Prepare | None = None) -> None:
    """Build the agent from the parsed options and run it until SIGTERM or SIGINT."""
    from actions.agent import Agent, Paths, Storage
    from actions.enforce.service import EnforceSettings
    from actions.knobs import Roots
    from actions.policy import load_policy
    from actions.server import ServerSettings
    from actions.server import serve as run_server

    agent = Agent(
        load_policy(args.policy),
        Paths(Path(args.state_dir) / "journal.db", Path(args.audit_log), Path(args.sysctl_conf)),
        Roots(Path(args.proc_sys_root), Path(args.sys_root)),
        storage=Storage(args.disk_reserve << 10, args.audit_max_bytes),
    )
    if prepare is not None:
        prepare(agent)
    settings = ServerSettings(
        Path(args.socket),
        group=args.group or None,
        mode=args.socket_mode,
        idle_timeout=args.idle_timeout,
        entry_timeout=args.entry_timeout,
        override_interval=args.override_interval,
        max_connections=args.max_connections,
        max_per_peer=args.max_per_peer,
        enforce=EnforceSettings(
            tuple(map(Path, args.enforce_lockdown)),
            tuple(map(Path, args.enforce_guard)),
            Path(args.enforce_pin_root),
            Path(args.enforce_state),
            best_effort=args.enforce_best_effort,
            queues=args.bpf_queues,
            queue_rate=args.bpf_queue_rate,
            queue_burst=args.bpf_queue_burst,
        ),
    )
    run_server(agent, settings)


def main(argv: Sequence[str] | None = None, prepare: Prepare | None = None) -> int:
    """Run the agent's command line; return the exit status (errors are one line)."""
    args = parser().parse_args(argv)
    try:
        serve(args, prepare)
    except ActionError as exc:
        print(f"kassist-agent: {exc.one_line()}", file=sys.stderr)
        return 1
    except PermissionError as exc:
        print(
            f"kassist-agent: permission denied: {exc.filename}: run the agent as root "
            "(or via systemd)",
            file=sys.stderr,
        )
        return 1
    except OSError as exc:
        print(f"kassist-agent: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 1
    return 0
