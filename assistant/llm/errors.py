"""Errors of the LLM runtime."""

from __future__ import annotations

from assistant.errors import KassistError, NotAvailable


class LLMUnavailable(NotAvailable):
    """The configured model cannot be found, loaded or reached."""


class SchemaNotSupported(KassistError):
    """A JSON schema that the backend cannot turn into a constraint (fail closed).

    llama-cpp-python's own ``response_format`` path silently falls back to "any JSON"
    in this case; kassist refuses instead.
    """


class StructuredRefusal(KassistError):
    """A structured step whose output stayed invalid after every retry: nothing is passed on.

    :param step: the prompt (step) name.
    :param errors: the validation error of each attempt, in order.
    :param kinds: each attempt's failure: ``json`` (incomplete JSON) or ``schema``.
    """

    def __init__(self, step: str, errors: list[str], kinds: list[str] | None = None) -> None:
        last = errors[-1] if errors else "no output"
        super().__init__(
            f"the model's answer for {step} was invalid after {len(errors)} attempt(s) ({last})",
            "nothing was used; retry, use a larger model (--model), or --no-llm",
        )
        self.step = step
        self.errors = errors
        self.kinds = kinds or []
