"""The local model's explanation of a finding, shown only when the shared checker passes it.

The figures and the summary of a finding are deterministic; the model may only add a
sentence or two of plain explanation, and every word of it goes through
the checked-draft pipeline (``assistant.drafters.pipeline.checked_draft``) first: a
sentence the checker rejects is dropped, and when nothing is left nothing of the model's
is shown and the deterministic summary stands alone; either is said in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from assistant.disks.model import Finding
from assistant.drafters.checker import Evidence
from assistant.drafters.pipeline import checked_draft, draft_prompt
from assistant.llm.base import Backend

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
        prompt = replace(draft_prompt(PROMPT_NAME, finding=finding), max_tokens=MAX_TOKENS)
        draft = checked_draft(prompt, finding_evidence(finding, prompt.lines()), self.backend)
        if draft.text is None:
            self._notice(f"explanation {draft.why}"[:200])
            return None
        if draft.why:
            self._notice(f"explanation: {draft.why}"[:200])
        return f"model: {draft.text}"

    def _notice(self, message: str) -> None:
        self.notify(message)
        self.notices.append(message)
