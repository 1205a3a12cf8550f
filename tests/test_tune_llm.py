"""The model's place in tune: its proposals are labelled ``llm:<model>`` and go through
the agent's validator like any other (never around it); its explanations are shown only
when the shared draft checker passes them."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from actions.model import Recommendation
from assistant.errors import KassistError
from assistant.llm.prompts import load_prompt
from assistant.tuning.engine import TuneReport
from assistant.tuning.proposals import PROPOSABLE_KEYS, ModelProposal, parse_proposal, source_label
from tests.agent_support import AgentProcess, require_netns
from tests.conftest import require_default_model, run_kassist
from tests.tune_support import TuneNetNS


def test_the_proposal_schema_is_an_enum_of_known_keys() -> None:
    schema = load_prompt("tune_proposal").meta["output_schema"]
    assert tuple(schema["properties"]["target"]["enum"]) == PROPOSABLE_KEYS
    assert schema["properties"]["value"]["type"] == "integer"


def test_a_proposal_naming_another_key_is_refused() -> None:
    ok = {"target": "net.core.somaxconn", "value": 8192, "reason": "listen queues overflow"}
    assert parse_proposal(ok) == ModelProposal(**ok)
    assert parse_proposal({**ok, "target": "kernel.modules_disabled"}) is None
    assert parse_proposal({**ok, "value": "8192; reboot"}) is None
    assert parse_proposal({**ok, "extra": 1}) is None
    assert source_label("SmolLM2 135M (Q4_1).gguf") == "llm:SmolLM2_135M__Q4_1_.gguf"


@pytest.fixture
def agent_in_netns(tmp_path: Path) -> Iterator[tuple[TuneNetNS, AgentProcess]]:
    require_netns()
    ns = TuneNetNS()
    (tmp_path / "agent").mkdir()
    agent = AgentProcess(tmp_path / "agent", ns).start()
    try:
        yield ns, agent
    finally:
        agent.stop()
        ns.close()


def _llm_rec(target: str, value: int, current: int) -> Recommendation:
    return Recommendation(
        id=f"llm:{target}", kind="sysctl", target=target, value=value, current=current,
        rationale="the model says this helps a lot",
        evidence=["netstat TcpExt.ListenOverflows +813"],
        expected_effect="as the model's rationale says (check it)", risk="medium",
        source=source_label("SmolLM2-135M-Instruct.Q4_1.gguf"),
    )  # fmt: skip


def test_a_model_proposal_never_bypasses_the_validator(
    agent_in_netns: tuple[TuneNetNS, AgentProcess],
) -> None:
    from assistant.cli.tune import _act

    ns, agent = agent_in_netns
    before = ns.read("net.core.somaxconn")
    # Out of the agent's range and a x250 step: the model asked for it, the agent refuses.
    bad = _llm_rec("net.core.somaxconn", 1_000_000, int(before))
    report = TuneReport([], [bad], 2.0)
    with pytest.raises(KassistError, match="rejected every recommendation"):
        _act(report, str(agent.socket), apply=True, yes=True, fmt="text")
    assert ns.read("net.core.somaxconn") == before
    # Next to a valid rules recommendation: the valid one is applied, the model's is not.
    good = bad.model_copy(update={"id": "rules:fin", "target": "net.ipv4.tcp_fin_timeout",
                                  "value": 30, "current": int(ns.read("net.ipv4.tcp_fin_timeout")),
                                  "source": "rules"})  # fmt: skip
    done = _act(TuneReport([], [good, bad], 2.0), str(agent.socket), True, True, "text")
    assert done["applied"]["ok"]
    assert [c["target"] for c in done["applied"]["changeset"]["changes"]] == [
        "net.ipv4.tcp_fin_timeout"
    ]
    assert ns.read("net.ipv4.tcp_fin_timeout") == "30"
    assert ns.read("net.core.somaxconn") == before
    verdicts = [e for e in agent.audit_events() if e.get("event") == "verdict"]
    assert verdicts, "the agent saw every submission"


def _require_model() -> None:
    require_default_model()


def test_the_bundled_model_proposes_through_the_agent(tmp_path: Path) -> None:
    _require_model()
    proc = run_kassist(["tune", "--interval", "0.5", "--propose", "--format", "json", "--no-log",
                        "--max-tokens", "80"], env={"XDG_STATE_HOME": str(tmp_path)})  # fmt: skip
    assert proc.returncode in (0, 3), proc.stderr
    doc = json.loads(proc.stdout)
    assert any("proposal" in n or "proposed" in n for n in doc["notices"]), doc["notices"]
    for rec in doc["recommendations"]:
        if rec["source"] != "rules":
            assert rec["source"].startswith("llm:") and rec["target"] in PROPOSABLE_KEYS


def test_a_model_explanation_is_shown_only_when_the_checker_passes_it(tmp_path: Path) -> None:
    _require_model()
    from tests.test_tune_units import _finding

    state = tmp_path / "kassist"
    state.mkdir()
    (state / "tune-last.json").write_text(json.dumps({"findings": [_finding().to_dict()]}))
    proc = run_kassist(["tune", "--explain", "listen-overflow", "--format", "json", "--no-log",
                        "--max-tokens", "80"], env={"XDG_STATE_HOME": str(tmp_path)})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ex = json.loads(proc.stdout)
    assert "netstat TcpExt.ListenOverflows +813" in ex["text"]
    checker = importlib.util.find_spec("assistant.drafters.checker") is not None
    if not checker:
        assert ex["model_text"] == ""
        assert any("withheld" in n for n in ex["notices"])
    else:
        assert ex["model_text"] or any("withheld" in n for n in ex["notices"])
