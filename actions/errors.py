"""The agent's own error types (``actions`` imports nothing else of kassist's)."""

from __future__ import annotations

from actions.text import printable


class ActionError(Exception):
    """An error to show as one line, with a hint: what is wrong and what to do.

    :param message: what is wrong, in one line.
    :param hint: what to do about it, in one line (optional).
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """Return the message and the hint joined into one line."""
        return f"{self.message}: {self.hint}" if self.hint else self.message


class AgentUnavailable(ActionError):
    """The agent's socket cannot be reached, or it refused this peer."""


class StorageError(ActionError):
    """The journal cannot record (nothing of the transaction was recorded)."""


class StorageFull(StorageError):
    """The journal cannot record: its file system is full (``SQLITE_FULL``), and the
    space held back for an operation under way is used up too."""


class Rejected(Exception):
    """A recommendation broke one of the validator's rules.

    :param rule: the rule's short name (``name``, ``range``, ``policy``, ...).
    :param target: the key or knob it concerns (may be empty).
    :param why: one line a person understands.
    """

    def __init__(self, rule: str, target: str, why: str) -> None:
        # A target or a reason may echo what a recommendation said: made inert here.
        target, why = printable(target), printable(why)
        super().__init__(f"{rule}: {target}: {why}" if target else f"{rule}: {why}")
        self.rule = rule
        self.target = target
        self.why = why

    def to_dict(self) -> dict[str, str]:
        """Return the error entry of a completion: ``{rule, target, message}``."""
        return {"rule": self.rule, "target": self.target, "message": str(self)}
