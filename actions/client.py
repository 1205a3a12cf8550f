"""The thin client the assistant, the CLI and the TUI use to talk to the agent."""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actions.errors import AgentUnavailable
from actions.protocol import DEFAULT_SOCKET, encode


class AgentClient:
    """A connection to the agent's socket; submissions are matched to completions by user_data.

    :param path: the agent's socket.
    :param timeout: seconds to wait for a completion.
    """

    def __init__(self, path: str | Path = DEFAULT_SOCKET, timeout: float = 60.0) -> None:
        self.path = str(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""
        self._pending: dict[object, dict[str, Any]] = {}
        self._ids = itertools.count(1)

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
        self._sock = sock

    def close(self) -> None:
        """Close the connection."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def send(self, op: str, **fields: Any) -> object:
        """Send one submission without waiting; return its user_data."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        user_data = fields.pop("user_data", None) or f"c{next(self._ids)}"
        self._sock.sendall(encode({"op": op, "user_data": user_data, **fields}))
        return user_data

    def wait(self, user_data: object) -> dict[str, Any]:
        """Wait for the completion of one submission (others are kept for later).

        :raises AgentUnavailable: the agent closed the connection or refused this peer.
        """
        while user_data not in self._pending:
            entry = self._read_entry()
            key = entry.get("user_data")
            if key is None:
                message = "; ".join(e.get("message", "") for e in entry.get("errors", []))
                raise AgentUnavailable(f"the agent refused: {message or entry.get('verdict')}")
            self._pending[key] = entry
        return self._pending.pop(user_data)

    def _read_entry(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise AgentUnavailable(
                    f"no answer from the agent within {self.timeout:g} s",
                    "check `kassist agent status`",
                ) from None
            except ConnectionError:
                chunk = b""
            if not chunk:
                raise AgentUnavailable("the agent closed the connection", "see its audit log")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        doc = json.loads(line)
        if not isinstance(doc, dict):
            raise AgentUnavailable("the agent sent something that is not a completion")
        return doc

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Send one submission and wait for its completion."""
        return self.wait(self.send(op, **fields))

    def validate(self, recommendations: object) -> dict[str, Any]:
        """Validate a recommendation or a list of them (a dry run: nothing is written)."""
        return self.request("validate", recommendations=recommendations)

    def apply(self, recommendations: object, persist: bool = False) -> dict[str, Any]:
        """Apply a changeset all-or-nothing."""
        return self.request("apply", recommendations=recommendations, persist=persist)

    def rollback(self, cs_id: int | None = None, since: float | None = None) -> dict[str, Any]:
        """Roll back one changeset, or every changeset since a time (epoch seconds)."""
        fields: dict[str, Any] = {"id": cs_id} if cs_id is not None else {"since": since}
        return self.request("rollback", **fields)

    def status(self) -> dict[str, Any]:
        """Return the agent's status."""
        return self.request("status")

    def history(self, cs_id: int | None = None, limit: int = 50) -> dict[str, Any]:
        """Return one changeset (with its events) or the latest ones."""
        fields: dict[str, Any] = {"limit": limit}
        if cs_id is not None:
            fields["id"] = cs_id
        return self.request("history", **fields)

    def many(self, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Send several submissions at once and return their completions in the same order."""
        ids = [self.send(e["op"], **{k: v for k, v in e.items() if k != "op"}) for e in entries]
        return [self.wait(u) for u in ids]
