"""From an observation to findings and the agent's Recommendation objects.

:func:`analyse` runs every scenario of the table; each detection becomes a
:class:`Finding` (its evidence, every proposal with a status) and each proposal
that can go to the agent becomes an ``actions.model.Recommendation`` with
``source: "rules"``. A key proposed twice keeps the larger step once; a key someone
else manages, a key this namespace cannot write, a key the agent's policy never
changes, or a cgroup limit is reported, not recommended. A value outside the
policy's range is brought to its floor or ceiling (:mod:`assistant.tuning.bounds`),
and the finding says so.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from actions.model import Recommendation
from actions.policy import Policy
from assistant.tuning.bounds import agent_policy, clamp, for_machine, refusal
from assistant.tuning.evidence import Observation
from assistant.tuning.scenarios import SCENARIOS, Proposal, Scenario
from assistant.tuning.values import Machine, machine_of

SCHEMA = "kassist.tune/1"


@dataclass
class ProposalRow:
    """A proposal as the output shows it.

    :param status: ``recommended``, ``managed`` (someone else sets it), ``read-only``
        (not writable here, e.g. a global key inside a network namespace), ``cgroup``
        (a cgroup limit the agent does not manage), ``policy`` (the agent's policy never
        changes it, or its range leaves no move) or ``duplicate`` (another finding
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
    obs: Observation, p: Proposal, managed: Mapping[str, str], taken: set[str],
    policy: Policy | None,
) -> tuple[str, str]:  # fmt: skip
    if p.key.startswith("cgroup:"):
        return "cgroup", "a cgroup limit: the agent does not manage cgroup files"
    if p.key in managed:
        return "managed", managed[p.key]
    if not obs.writable(p.key):
        return "read-only", "not writable here (a global key inside a network namespace?)"
    if policy is not None and (why := refusal(policy, p.key)) is not None:
        return "policy", why
    if p.key in taken:
        return "duplicate", "recommended by an earlier finding"
    return "recommended", ""


def _within_policy(p: Proposal, policy: Policy | None, notes: list[str]) -> Proposal | None:
    # The proposal brought within the policy's range (a note says so), or None (reported).
    if policy is None or p.key.startswith("cgroup:"):
        return p
    clamped = clamp(policy, p)
    if clamped.note:
        notes.append(clamped.note)
    return None if clamped.value is None else Proposal(p.key, p.current, clamped.value)


def analyse(
    obs: Observation,
    managed: Mapping[str, str] | None = None,
    machine: Machine | None = None,
    scenarios: Sequence[Scenario] = SCENARIOS,
    policy: Policy | None = None,
) -> TuneReport:
    """Run every scenario over an observation.

    :param managed: key → who manages it (see :mod:`assistant.tuning.managed`).
    :param machine: RAM and CPUs for the caps (default: from the snapshot).
    :param policy: the agent's policy the proposals must lie within (default: the
        configured one, see :func:`~assistant.tuning.bounds.agent_policy`).
    """
    start = time.perf_counter()
    m = machine or machine_of(obs.after)
    owners = managed or {}
    notices = list(obs.notices)
    if policy is None:
        policy, why = agent_policy()
        if policy is None:
            notices.append(f"{why}: proposals are not checked against it")
    bounds = for_machine(policy, m) if policy is not None else None
    findings: list[Finding] = []
    recs: list[Recommendation] = []
    taken: set[str] = set()
    for s in scenarios:
        d = s.detect(obs, m)
        if d is None:
            continue
        f = Finding(s.id, s.id, s.title, d.evidence, notes=d.notes, sources=list(s.sources))
        for wanted in d.proposals:
            within = _within_policy(wanted, bounds, f.notes)
            p = within or wanted
            status, why = _status(obs, p, owners, taken, bounds)
            if within is None and status == "recommended":
                status, why = "policy", "the agent's range leaves no move from its value"
            row = ProposalRow(p.key, p.current, p.value, p.direction, status, why)
            if status == "recommended":
                rec = _recommendation(s, p, d.evidence)
                row.rec_id = rec.id
                recs.append(rec)
                taken.add(p.key)
            f.proposals.append(row)
        findings.append(f)
    report = TuneReport(
        findings, recs, obs.window_s, obs.netns, obs.after.cgroup.get("path"), notices
    )
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
