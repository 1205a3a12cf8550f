"""The one error type probes raise: what could not be read, and what to do."""

from __future__ import annotations


class ProbeError(Exception):
    """A probe could not read what it was asked to read.

    :param message: what is wrong, in one line.
    :param hint: what to do about it, in one line.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """Return the message and hint as the one line a user sees."""
        return f"{self.message}: {self.hint}" if self.hint else self.message


class ProbeUnavailable(ProbeError):
    """What was asked for does not exist on this machine, for this user or in this kernel.

    Not a fault of the input: no ``/proc/kcore``, no journal, no tracepoint, not root.
    Callers tell it apart by type (``except ProbeUnavailable``), never by its message.
    """
