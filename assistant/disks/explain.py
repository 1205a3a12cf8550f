"""The local model's explanation of a finding, shown only when the shared checker passes it.

The figures and the summary of a finding are deterministic; the model may only add a
sentence or two of plain explanation, and every word of it goes through
``assistant.drafters.checker.check_draft`` first (when it rejects the draft, nothing of
the model's is shown and the deterministic summary stands alone, with a one-line notice).
"""

from __future__ import annotations

from collections.abc import Callable

from assistant.disks.model import Finding
from assistant.drafters.checker import Evidence, check_draft, cut_to_sentence
from assistant.llm.base import Backend, GenerationStats
from assistant.llm.prompts import load_prompt

PROMPT_NAME = "disks_finding"
#: Most tokens an explanation may take.
MAX_TOKENS = 80


def finding_evidence(finding: Finding, prompt_lines: list[str]) -> Evidence:
    """Return what the checker reads a finding's explanation against.

    Every device, number and name it gives must be in the finding's own figures, and it
    may not guess a cause (a failing power supply, a cable): the finding's advice says
    what to check.
    """
    text = " ".join(
        [finding.summary, finding.advice, " ".join(finding.peers), finding.device, finding.kind,
         finding.pattern]
    )  # fmt: skip
    return Evidence(text, prompt_lines=prompt_lines, allow_causes=False, max_sentences=3)


class Explainer:
    """Drafts and checks explanations with one backend; remembers why one was withheld."""

    def __init__(
        self, backend: Backend | None, notify: Callable[[str], None] = lambda _line: None
    ) -> None:
        """Draft with ``backend`` (``None``: no model, no explanation).

        :param notify: shows a one-line notice (the CLI prints it on stderr).
        """
        self.backend = backend
        self.notify = notify
        self.notices: list[str] = []

    def __call__(self, finding: Finding) -> str | None:
        """Return a checked explanation, or ``None`` (the summary then stands alone)."""
        if self.backend is None:
            return None
        prompt = load_prompt(PROMPT_NAME)
        messages = prompt.render(finding=finding)
        stats = GenerationStats()
        stats.prompt_name = prompt.label
        raw = "".join(self.backend.stream(messages, max_tokens=MAX_TOKENS, stats=stats))
        text = cut_to_sentence(raw)
        lines = [line for m in messages for line in m.content.splitlines()]
        verdict = check_draft(text, finding_evidence(finding, lines))
        if not verdict.ok:
            self._notice("explanation withheld: " + "; ".join(verdict.problems)[:200])
            return None
        return f"model: {text}"

    def _notice(self, message: str) -> None:
        self.notify(message)
        self.notices.append(message)
