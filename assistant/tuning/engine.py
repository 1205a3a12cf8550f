"""From an observation to findings and the agent's Recommendation objects.

:func:`analyse` runs every scenario of the table; each detection becomes a
:class:`Finding` (its evidence, every proposal with a status) and each proposal
that can go to the agent becomes an ``actions.model.Recommendation`` with
``source: "rules"``. A key proposed twice keeps the larger step once; a key someone
else manages, a key this namespace cannot write, or a cgroup limit is reported,
not recommended.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from actions.model import Recommendation
from assistant.tuning.evidence import Observation
from assistant.tuning.scenarios import SCENARIOS, Proposal, Scenario
from assistant.tuning.values import Machine, machine_of

SCHEMA = "kassist.tune/1"


@dataclass
class ProposalRow:
    """A proposal as the output shows it.

    :param status: ``recommended``, ``managed`` (someone else sets it), ``read-only``
        (not writable here, e.g. a global key inside a network namespace), ``cgroup``
        (a cgroup limit the agent does not manage) or ``duplicate`` (another finding
        recommends the key).
    """

    key: str
    current: int | list[int]
    value: int | list[int]
    direction: str
    status: str
    why: str = ""
    rec_id: str = ""


@dataclass
class Finding:
    """One scenario that fired."""

    id: str
    scenario: str
    title: str
    evidence: list[str]
    proposals: list[ProposalRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the finding as JSON-ready data."""
        return asdict(self)


@dataclass
class TuneReport:
    """What one run found: findings, recommendations, notices; ``kassist.tune/1``."""

    findings: list[Finding]
    recommendations: list[Recommendation]
    window_s: float | None
    netns: str | None = None
    cgroup: str | None = None
    notices: list[str] = field(default_factory=list)
    taken: float = field(default_factory=time.time)
    analysis_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the ``kassist.tune/1`` object."""
        return {
            "schema": SCHEMA,
            "taken": self.taken,
            "window_s": self.window_s,
            "netns": self.netns,
            "cgroup": self.cgroup,
            "findings": [f.to_dict() for f in self.findings],
            "recommendations": [r.model_dump() for r in self.recommendations],
            "notices": self.notices,
        }


def rec_id(scenario: str, key: str) -> str:
    """Return a recommendation's id: ``<scenario>:<key>`` (the contract allows ``.:-_``)."""
    return f"{scenario}:{key}"[:64]


def _recommendation(s: Scenario, p: Proposal, evidence: Sequence[str]) -> Recommendation:
    return Recommendation(
        id=rec_id(s.id, p.key),
        kind="sysctl",
        target=p.key,
        value=p.value,
        current=p.current,
        rationale=f"{s.title}: {s.rationale}",
        evidence=list(evidence),
        expected_effect=s.effect,
        risk=s.risk,
        source="rules",
    )


def _status(
    obs: Observation, p: Proposal, managed: Mapping[str, str], taken: set[str]
) -> tuple[str, str]:
    if p.key.startswith("cgroup:"):
        return "cgroup", "a cgroup limit: the agent does not manage cgroup files"
    if p.key in managed:
        return "managed", managed[p.key]
    if not obs.writable(p.key):
        return "read-only", "not writable here (a global key inside a network namespace?)"
    if p.key in taken:
        return "duplicate", "recommended by an earlier finding"
    return "recommended", ""


def analyse(
    obs: Observation,
    managed: Mapping[str, str] | None = None,
    machine: Machine | None = None,
    scenarios: Sequence[Scenario] = SCENARIOS,
) -> TuneReport:
    """Run every scenario over an observation.

    :param managed: key → who manages it (see :mod:`assistant.tuning.managed`).
    :param machine: RAM and CPUs for the caps (default: from the snapshot).
    """
    start = time.perf_counter()
    m = machine or machine_of(obs.after)
    owners = managed or {}
    findings: list[Finding] = []
    recs: list[Recommendation] = []
    taken: set[str] = set()
    for s in scenarios:
        d = s.detect(obs, m)
        if d is None:
            continue
        f = Finding(s.id, s.id, s.title, d.evidence, notes=d.notes, sources=list(s.sources))
        for p in d.proposals:
            status, why = _status(obs, p, owners, taken)
            row = ProposalRow(p.key, p.current, p.value, p.direction, status, why)
            if status == "recommended":
                rec = _recommendation(s, p, d.evidence)
                row.rec_id = rec.id
                recs.append(rec)
                taken.add(p.key)
            f.proposals.append(row)
        findings.append(f)
    report = TuneReport(
        findings, recs, obs.window_s, obs.netns,
        obs.after.cgroup.get("path"), list(obs.notices),
    )  # fmt: skip
    report.analysis_ms = (time.perf_counter() - start) * 1000
    return report


def finding_from_dict(doc: Mapping[str, Any]) -> Finding:
    """Rebuild a finding from its JSON form (``kassist tune --explain`` reads the last run)."""
    rows = [ProposalRow(**p) for p in doc.get("proposals", [])]
    return Finding(
        id=str(doc["id"]),
        scenario=str(doc.get("scenario", doc["id"])),
        title=str(doc.get("title", "")),
        evidence=[str(e) for e in doc.get("evidence", [])],
        proposals=rows,
        notes=[str(n) for n in doc.get("notes", [])],
        sources=[str(s) for s in doc.get("sources", [])],
    )


def find_finding(doc: Mapping[str, Any], ident: str) -> Finding | None:
    """Return the finding of a ``kassist.tune/1`` object named by its id or a recommendation id."""
    scenario = ident.split(":", 1)[0]
    for f in doc.get("findings", []):
        if f.get("id") in (ident, scenario):
            return finding_from_dict(f)
    return None
