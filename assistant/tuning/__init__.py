"""Tuning recommendations: a table of scenarios from kernel evidence to the agent's
Recommendation objects (``kassist tune``).

:func:`~assistant.tuning.evidence.observe` gathers what ``probes`` read over a window,
:func:`~assistant.tuning.engine.analyse` runs the scenario table
(:data:`~assistant.tuning.scenarios.SCENARIOS`) and returns findings and
``actions.model.Recommendation`` objects whose values come from rules
(:mod:`assistant.tuning.values`); only the agent validates and applies them.
"""

from assistant.tuning.engine import SCHEMA, Finding, ProposalRow, TuneReport, analyse
from assistant.tuning.evidence import Observation, observe
from assistant.tuning.run import tune_run
from assistant.tuning.scenarios import KNOWN_KEYS, READ_KEYS, SCENARIOS, Scenario

__all__ = [
    "KNOWN_KEYS",
    "READ_KEYS",
    "SCENARIOS",
    "SCHEMA",
    "Finding",
    "Observation",
    "ProposalRow",
    "Scenario",
    "TuneReport",
    "analyse",
    "observe",
    "tune_run",
]
