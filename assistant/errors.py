"""Errors a user can meet: one line that says what is wrong and what to do."""

from __future__ import annotations


class KassistError(Exception):
    """An error to show the user as one line, with a hint, and exit non-zero.

    :param message: what is wrong, in one line.
    :param hint: what to do about it, in one line (optional).
    :param exit_code: the process exit status (1: failure, 2: usage or not available).
    """

    def __init__(self, message: str, hint: str = "", exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code

    def one_line(self) -> str:
        """Return the message and the hint joined into the line the CLI prints."""
        return f"{self.message}: {self.hint}" if self.hint else self.message


class NotAvailable(KassistError):
    """A feature that this machine, this user or this build cannot provide."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, hint, exit_code=2)


class InputError(KassistError):
    """An input file or stream that cannot be read or understood."""
