"""``kassist prompts``, ``kassist logs`` and ``kassist models`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from assistant.llm.prompts import load_prompt
from tests.conftest import DATA, require_default_model, run_kassist


def _env(home: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(home / "config"), "XDG_STATE_HOME": str(home / "state")}


def test_prompts_list_and_show(tmp_path: Path) -> None:
    proc = run_kassist(["prompts", "list", "--format", "json"], env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    names = {p["name"]: p for p in data["prompts"]}
    assert names["crash_assessment"]["kind"] == "structured"
    assert data["override_dir"] == str(tmp_path / "config" / "kassist" / "prompts")
    shown = run_kassist(["prompts", "show", "crash_assessment"], env=_env(tmp_path))
    assert shown.returncode == 0 and "{% block system %}" in shown.stdout
    assert '"critical"' in shown.stdout  # the output schema is shown
    schema = run_kassist(["prompts", "show", "--schema", "chat_router"], env=_env(tmp_path))
    tools = json.loads(schema.stdout)["properties"]["tool"]["enum"]
    assert "triage" in tools and "stats" in tools


def test_prompts_show_unknown_is_one_line(tmp_path: Path) -> None:
    proc = run_kassist(["prompts", "show", "nope"], env=_env(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "no prompt named 'nope'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_logs_without_a_log_is_one_line(tmp_path: Path) -> None:
    proc = run_kassist(["logs", "list"], env=_env(tmp_path))
    assert proc.returncode == 1 and "no LLM log" in proc.stderr and "Traceback" not in proc.stderr


def test_report_is_logged_and_logs_show_it(tmp_path: Path) -> None:
    require_default_model()
    env = {**_env(tmp_path), "KASSIST_LLM_N_CTX": "1024", "KASSIST_LLM_TEMPERATURE": "0"}
    report = run_kassist(
        ["report", "--max-tokens", "16", str(DATA / "kasan-uaf-ip6_send_skb.log")], env=env
    )
    assert report.returncode == 0, report.stderr
    listed = run_kassist(["logs", "list", "--format", "json"], env=env)
    rows = json.loads(listed.stdout)
    prompts = [r["prompt_name"] for r in rows]
    logged_as = load_prompt("what_happened").label  # name@version, as the template says
    assert logged_as in prompts
    summary = next(r for r in rows if r["prompt_name"] == logged_as)
    assert 1 <= summary["completion_tokens"] <= 16
    shown = run_kassist(["logs", "show", str(summary["id"]), "--format", "json"], env=env)
    entry = json.loads(shown.stdout)
    assert entry["messages"][0]["role"] == "system" and entry["params"]["max_tokens"] == 16
    # the prompt's own sampling, as its front matter sets it
    assert entry["params"]["stop"] == load_prompt("what_happened").meta["sampling"]["stop"]
    assert entry["params"]["temperature"] == 0.0
    assert entry["constraint_kind"] == "gbnf"  # the names grammar
    # the checker's verdict is logged with the answer; the report shows it only if accepted
    assert entry["response"].strip()
    if entry["refusal"] is None:
        assert entry["structured"]["text"] in report.stdout
    else:
        assert "withheld" in report.stdout and "## What happened" in report.stdout
    text = run_kassist(["logs", "show", str(summary["id"])], env=env)
    assert "--- answer ---" in text.stdout
    # logging off: nothing new is written
    before = len(
        json.loads(run_kassist(["logs", "list", "-n", "1000", "--format", "json"], env=env).stdout)
    )
    quiet = run_kassist(
        ["report", "--max-tokens", "4", str(DATA / "kasan-uaf-ip6_send_skb.log")],
        env={**env, "KASSIST_LLM_LOG": "0"},
    )
    assert quiet.returncode == 0
    after = len(
        json.loads(run_kassist(["logs", "list", "-n", "1000", "--format", "json"], env=env).stdout)
    )
    assert after == before
    flagged = run_kassist(
        ["report", "--no-log", "--max-tokens", "4", str(DATA / "kasan-uaf-ip6_send_skb.log")],
        env=env,
    )
    assert flagged.returncode == 0, flagged.stderr
    last = len(
        json.loads(run_kassist(["logs", "list", "-n", "1000", "--format", "json"], env=env).stdout)
    )
    assert last == before


def test_models_lists_backends_and_their_state(tmp_path: Path) -> None:
    proc = run_kassist(["models", "--format", "json"], env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert {"llama_cpp", "openai", "transformers", "none"} <= set(info["backends"])
    assert info["backend_status"]["none"] == "ready"
    assert info["backend_status"]["openai"] == "ready"  # httpx is a dependency
    other = run_kassist(
        ["models", "--backend", "openai", "--load", "--format", "json"],
        env={
            **_env(tmp_path),
            "KASSIST_LLM_BASE_URL": "http://127.0.0.1:9/v1",
            "KASSIST_LLM_TIMEOUT": "1",
        },
    )
    data = json.loads(other.stdout)
    assert data["configured"]["base_url"] == "http://127.0.0.1:9/v1"
    assert data["load"]["status"] == "missing" and "failed" in data["load"]["detail"]
