"""The local model's explanation of a finding, shown only when the shared checker passes it.

The figures and the summary of a finding are deterministic; the model may only add a
sentence or two of plain explanation, and every word of it goes through
``assistant.drafters.checker.check_draft`` first (imported lazily: without the checker,
or when it rejects the draft, nothing of the model's is shown and the deterministic
summary stands alone, with a one-line notice).
"""

from __future__ import annotations

from typing import Any

from assistant.disks.model import Finding
from assistant.llm.base import Backend, GenerationStats
from assistant.llm.prompts import load_prompt

PROMPT_NAME = "disks_finding"
#: Most tokens an explanation may take.
MAX_TOKENS = 80


def _checker() -> tuple[Any, Any] | None:
    try:
        from assistant.drafters.checker import Evidence, check_draft  # type: ignore[attr-defined,import-not-found,unused-ignore]
    except ImportError:
        return None
    return check_draft, Evidence


def finding_evidence(finding: Finding, prompt_lines: list[str]) -> dict[str, Any]:
    """Return what the checker needs: the evidence text, the facts, the prompt's lines."""
    text = " ".join([finding.summary, finding.advice, " ".join(finding.peers), finding.device])
    facts = {"kind": finding.kind, "pattern": finding.pattern, "device": finding.device}
    return {"text": text, "facts": facts, "prompt_lines": prompt_lines}


class Explainer:
    """Drafts and checks explanations with one backend; remembers why one was withheld."""

    def __init__(self, backend: Backend | None) -> None:
        self.backend = backend
        self.notices: list[str] = []

    @classmethod
    def from_config(cls) -> Explainer:
        """Use the configured backend (or none, with a notice, when it cannot load)."""
        from assistant.cli.common import backend_or_none, config_from_flags

        return cls(backend_or_none(config_from_flags(), no_llm=False))

    def __call__(self, finding: Finding) -> str | None:
        """Return a checked explanation, or ``None`` (the summary then stands alone)."""
        checker = _checker()
        if self.backend is None:
            return None
        if checker is None:
            self._notice("explanation withheld: the draft checker is not available here")
            return None
        check_draft, evidence_type = checker
        prompt = load_prompt(PROMPT_NAME)
        messages = prompt.render(finding=finding)
        stats = GenerationStats()
        stats.prompt_name = prompt.label
        text = "".join(self.backend.stream(messages, max_tokens=MAX_TOKENS, stats=stats)).strip()
        lines = [line for m in messages for line in m.content.splitlines()]
        try:
            verdict = check_draft(text, evidence_type(**finding_evidence(finding, lines)))
        except TypeError as exc:
            self._notice(f"explanation withheld: the draft checker refused its input ({exc})")
            return None
        if not verdict.ok:
            self._notice("explanation withheld: " + "; ".join(verdict.problems)[:200])
            return None
        return f"model: {text}"

    def _notice(self, message: str) -> None:
        from assistant.cli.common import notice

        notice(message)
        self.notices.append(message)
