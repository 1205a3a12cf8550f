"""The thin client the assistant, the CLI and the TUI use to talk to the agent.

Every call returns a typed :class:`~actions.model.Completion`; every socket failure
(no socket, refused, a broken pipe while sending, a timeout, a closed connection) is one
:class:`~actions.errors.AgentUnavailable`. Readers that can do without the agent (a panel,
a chat answer, a tune run, a documentation page) use :func:`try_status` and
:func:`try_history`: one timeout policy, and a typed reading that says why there is none.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from actions.errors import ActionError, AgentUnavailable
from actions.model import AgentStatus, Changeset, Completion
from actions.protocol import DEFAULT_SOCKET, encode

#: Seconds a reading (status, history) waits for the agent: whoever asks can do without it.
READ_TIMEOUT = 5.0
#: Seconds a change (validate, apply, rollback) waits: the agent writes and reads back keys.
CHANGE_TIMEOUT = 60.0


class AgentClient:
    """A connection to the agent's socket; submissions are matched to completions by user_data.

    :param path: the agent's socket.
    :param timeout: seconds to wait for a completion.
    """

    def __init__(self, path: str | Path = DEFAULT_SOCKET, timeout: float = CHANGE_TIMEOUT) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self._pending: dict[object, Completion] = {}
        self._ids = itertools.count(1)
        self._inflight = 0  # submissions sent whose completion has not been read

    def __enter__(self) -> AgentClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Connect to the agent.

        :raises AgentUnavailable: no agent listens there, or this user may not connect.
        """
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except FileNotFoundError:
            sock.close()
            raise AgentUnavailable(
                f"no agent socket at {self.path}", "start it: kassist agent serve"
            ) from None
        except PermissionError:
            sock.close()
            raise AgentUnavailable(
                f"not allowed to connect to {self.path}",
                "run as root or as a member of the agent's group",
            ) from None
        except ConnectionRefusedError:
            sock.close()
            raise AgentUnavailable(
                f"nothing listens on {self.path}", "start it: kassist agent serve"
            ) from None
        except OSError as exc:  # a path too long, not a socket, a timeout...
            sock.close()
            raise AgentUnavailable(
                f"cannot connect to {self.path}: {exc.strerror or exc}", "check the socket path"
            ) from None
        self._sock = sock

    def close(self) -> None:
        """Close the connection."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._buf = b""
        self._inflight = 0

    def send(self, op: str, **fields: Any) -> object:
        """Send one submission without waiting; return its user_data.

        A connection the agent closed while it was idle (its idle timeout) is opened
        again first; one with submissions in flight never is.
        """
        if self._sock is not None and not self._pending_any() and self._closed_by_agent():
            self.close()
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        user_data = fields.pop("user_data", None) or f"c{next(self._ids)}"
        try:
            self._sock.sendall(encode({"op": op, "user_data": user_data, **fields}))
        except OSError as exc:  # BrokenPipe, ConnectionReset: the agent closed on us
            self.close()
            raise AgentUnavailable(
                f"the agent closed the connection while {op} was sent ({exc.strerror or exc})",
                "see its audit log; an entry must fit in 64 KiB",
            ) from None
        self._inflight += 1
        return user_data

    def _pending_any(self) -> bool:
        return bool(self._pending) or self._inflight > 0

    def _closed_by_agent(self) -> bool:
        assert self._sock is not None
        try:
            ready, _, _ = select.select([self._sock], [], [], 0)
            return bool(ready) and self._sock.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def wait(self, user_data: object) -> Completion:
        """Wait for the completion of one submission (others are kept for later).

        :raises AgentUnavailable: the agent closed the connection or refused this peer.
        """
        while user_data not in self._pending:
            entry = self._read_entry()
            if entry.user_data is None:
                message = "; ".join(e.message for e in entry.errors)
                raise AgentUnavailable(f"the agent refused: {message or entry.verdict}")
            self._pending[entry.user_data] = entry
            self._inflight = max(0, self._inflight - 1)
        return self._pending.pop(user_data)

    def _read_entry(self) -> Completion:
        assert self._sock is not None
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise AgentUnavailable(
                    f"no answer from the agent within {self.timeout:g} s",
                    "check `kassist agent status`",
                ) from None
            except OSError:  # ConnectionReset and the like: the connection is gone
                chunk = b""
            if not chunk:
                raise AgentUnavailable("the agent closed the connection", "see its audit log")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return Completion.model_validate(json.loads(line))
        except (ValueError, ValidationError):
            raise AgentUnavailable("the agent sent something that is not a completion") from None

    def request(self, op: str, **fields: Any) -> Completion:
        """Send one submission and wait for its completion."""
        return self.wait(self.send(op, **fields))

    def validate(self, recommendations: object) -> Completion:
        """Validate a recommendation or a list of them (a dry run: nothing is written)."""
        return self.request("validate", recommendations=recommendations)

    def apply(self, recommendations: object, persist: bool = False) -> Completion:
        """Apply a changeset all-or-nothing."""
        return self.request("apply", recommendations=recommendations, persist=persist)

    def rollback(self, cs_id: int | None = None, since: float | None = None) -> Completion:
        """Roll back one changeset, or every changeset since a time (epoch seconds)."""
        fields: dict[str, Any] = {"id": cs_id} if cs_id is not None else {"since": since}
        return self.request("rollback", **fields)

    def status(self) -> Completion:
        """Return the agent's status."""
        return self.request("status")

    def history(self, cs_id: int | None = None, limit: int = 50) -> Completion:
        """Return one changeset (with its events) or the latest ones."""
        fields: dict[str, Any] = {"limit": limit}
        if cs_id is not None:
            fields["id"] = cs_id
        return self.request("history", **fields)

    def many(self, entries: Sequence[dict[str, Any]]) -> list[Completion]:
        """Send several submissions at once and return their completions in the same order."""
        ids = [self.send(e["op"], **{k: v for k, v in e.items() if k != "op"}) for e in entries]
        return [self.wait(u) for u in ids]


@dataclass(frozen=True)
class StatusReading:
    """The agent's status, or why there is none (:func:`try_status`).

    :param socket: the socket asked.
    :param status: what the agent answered; ``None`` when it could not be reached.
    :param error: one line saying why there is no status (empty when there is one).
    """

    socket: str
    status: AgentStatus | None
    error: str = ""

    @property
    def reachable(self) -> bool:
        """Tell whether the agent answered with its status."""
        return self.status is not None

    def line(self) -> str:
        """Return one line on the agent: up, its pid and keys, or why it cannot be reached."""
        s = self.status
        if s is None:
            return f"not reachable at {self.socket} ({self.error})"
        over = f", {len(s.overridden)} overridden by someone else" if s.overridden else ""
        return f"up (pid {s.pid}), manages {len(s.managed)} key(s){over}"


@dataclass(frozen=True)
class HistoryReading:
    """The agent's changesets, newest first, or why there are none (:func:`try_history`).

    :param changesets: what the agent answered; ``None`` when it could not be reached.
    """

    socket: str
    changesets: list[Changeset] | None
    error: str = ""

    @property
    def reachable(self) -> bool:
        """Tell whether the agent answered."""
        return self.changesets is not None


def try_status(path: str | Path = DEFAULT_SOCKET, timeout: float = READ_TIMEOUT) -> StatusReading:
    """Ask the agent for its status; never raises for a socket failure.

    :param path: the agent's socket.
    :param timeout: seconds to wait (the one policy for readings: :data:`READ_TIMEOUT`).
    """
    try:
        with AgentClient(path, timeout=timeout) as client:
            answer = client.status()
    except ActionError as exc:
        return StatusReading(str(path), None, exc.one_line())
    if answer.status is None:
        return StatusReading(str(path), None, f"the agent answered {answer.verdict}")
    return StatusReading(str(path), answer.status)


def try_history(
    path: str | Path = DEFAULT_SOCKET,
    limit: int = 50,
    cs_id: int | None = None,
    timeout: float = READ_TIMEOUT,
) -> HistoryReading:
    """Ask the agent for its latest changesets (or one, with its events); never raises.

    :param limit: the most changesets (newest first).
    :param cs_id: only this changeset (an unknown id gives an empty list).
    """
    try:
        with AgentClient(path, timeout=timeout) as client:
            answer = client.history(cs_id, limit)
    except ActionError as exc:
        return HistoryReading(str(path), None, exc.one_line())
    if answer.verdict == "not_found":
        return HistoryReading(str(path), [])
    if not answer.ok:
        return HistoryReading(str(path), None, f"the agent answered {answer.verdict}")
    if answer.changesets is not None:
        return HistoryReading(str(path), answer.changesets)
    return HistoryReading(str(path), [answer.changeset] if answer.changeset else [])


@dataclass(frozen=True)
class ValidationReading:
    """The agent's dry run of recommendations, or why there is none (:func:`try_validate`)."""

    socket: str
    completion: Completion | None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the reading as JSON-ready data."""
        done = self.completion
        return {
            "socket": self.socket,
            "completion": None if done is None else done.to_wire(done.user_data),
            "error": self.error or None,
        }


def try_validate(
    path: str | Path, recommendations: object, timeout: float = READ_TIMEOUT
) -> ValidationReading:
    """Ask the agent for a dry run (nothing is written); never raises for a socket failure."""
    try:
        with AgentClient(path, timeout=timeout) as client:
            return ValidationReading(str(path), client.validate(recommendations))
    except ActionError as exc:
        return ValidationReading(str(path), None, exc.one_line())
