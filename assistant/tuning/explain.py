"""Explanations: a deterministic one from the evidence and the key's own documentation,
and, when asked, a model-written one that passes the shared draft checker or is withheld.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from assistant.tuning.engine import Finding, ProposalRow

PROMPT_NAME = "tune_explanation"
#: The most characters of a key's documentation quoted in an explanation.
DOC_CHARS = 600


@dataclass
class KeyDoc:
    """A key's documentation from the knowledge base: where it is and what it says."""

    key: str
    cite: str
    text: str


@dataclass
class Explanation:
    """What ``kassist tune --explain ID`` shows.

    :param text: the deterministic explanation (always there).
    :param docs: the documentation of every key the finding proposes.
    :param model_text: the model's explanation, when it passed the checker.
    :param notices: one line each: no knowledge base, explanation withheld, ...
    """

    finding: Finding
    text: str
    docs: list[KeyDoc] = field(default_factory=list)
    model_text: str = ""
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the explanation as JSON-ready data."""
        return {
            "finding": self.finding.to_dict(),
            "text": self.text,
            "docs": [d.__dict__ for d in self.docs],
            "model_text": self.model_text,
            "notices": self.notices,
        }


def _shown(value: int | list[int]) -> str:
    return " ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _proposal_line(p: ProposalRow) -> str:
    status = "" if p.status == "recommended" else f" [{p.status}: {p.why}]"
    return f"{p.key}: {_shown(p.current)} -> {_shown(p.value)} ({p.direction}){status}"


def key_docs(keys: Sequence[str]) -> tuple[list[KeyDoc], list[str]]:
    """Look the keys up in the kernel knowledge base (imported lazily).

    :return: the docs found, and a notice line when the knowledge base is not there.
    """
    try:
        from assistant.knowledge import try_open  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return [], ["no kernel knowledge base in this build: explanations cite no documentation"]
    kb = try_open()
    if kb is None:
        return [], ["the kernel knowledge base is not built: explanations cite no documentation"]
    docs = []
    for key in keys:
        found = kb.sysctl(key)
        doc = getattr(found, "doc", None) if found is not None else None
        if doc is not None:
            docs.append(KeyDoc(key, str(doc.cite), " ".join(str(doc.text).split())[:DOC_CHARS]))
    return docs, []


def deterministic_text(finding: Finding, docs: Sequence[KeyDoc]) -> str:
    """Explain a finding from its evidence and the keys' documentation, with no model."""
    lines = [f"{finding.title} ({finding.id})", "", "Evidence:"]
    lines += [f"  - {e}" for e in finding.evidence]
    if finding.proposals:
        lines += ["", "Proposed:"] + [f"  - {_proposal_line(p)}" for p in finding.proposals]
    if finding.notes:
        lines += ["", "Notes:"] + [f"  - {n}" for n in finding.notes]
    if docs:
        lines += ["", "Documentation:"]
        for d in docs:
            lines += [f"  {d.key} ({d.cite}):", f"    {d.text}"]
    lines += ["", "Sources of truth: " + "; ".join(finding.sources)]
    return "\n".join(lines)


def explain(finding: Finding) -> Explanation:
    """Build the deterministic explanation of a finding."""
    docs, notices = key_docs([p.key for p in finding.proposals if not p.key.startswith("cgroup:")])
    return Explanation(finding, deterministic_text(finding, docs), docs, notices=notices)


def evidence_lines(ex: Explanation) -> list[str]:
    """Everything a model explanation may draw on: the evidence, proposals, notes, docs."""
    f = ex.finding
    return [
        *f.evidence,
        *(_proposal_line(p) for p in f.proposals),
        *f.notes,
        *(f"{d.key} ({d.cite}): {d.text}" for d in ex.docs),
    ]


def model_explanation(ex: Explanation, backend: Any, max_tokens: int) -> Explanation:
    """Have the model explain the finding through the checked-draft pipeline: a sentence
    the evidence and the key's documentation do not hold is dropped (one notice line),
    and a draft with nothing left is withheld."""
    from assistant.drafters.checker import Evidence
    from assistant.drafters.pipeline import checked_draft, draft_prompt

    prompt = draft_prompt(PROMPT_NAME, finding=ex.finding, lines=evidence_lines(ex))
    prompt = replace(prompt, max_tokens=max_tokens)
    # An explanation of a tuning step may give causes; every name and number in it
    # must be in the evidence and the key's documentation.
    evidence = Evidence("\n".join(evidence_lines(ex)), allow_causes=True, max_sentences=3)
    draft = checked_draft(prompt, evidence, backend)
    if draft.text is not None:
        ex.model_text = draft.text
        if draft.why:
            ex.notices.append(f"the model's explanation: {draft.why}")
    else:
        ex.notices.append(f"the model's explanation is {draft.why}")
    return ex
