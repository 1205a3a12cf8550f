"""The LLM runtime's parts that need no model: prompts as data, the context budget,
schemas, the registry, the SQLite log and its migrations."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from pydantic import ValidationError

from assistant.config import LLMConfig
from assistant.drafters.crash_lines import GUILTY, HEAD, NOISE, classify
from assistant.drafters.steps import CrashAssessment
from assistant.errors import KassistError
from assistant.llm import backend_factories, make_backend
from assistant.llm.base import GenerationStats, Message, approx_tokens
from assistant.llm.budget import fit_evidence
from assistant.llm.errors import SchemaNotSupported
from assistant.llm.grammar import check_flat
from assistant.llm.log import MIGRATIONS, LogEntry, connect, get_entry, record, record_outcome
from assistant.llm.prompts import load_prompt, override_dir, prompt_names
from assistant.llm.schemas import model_from_schema, output_model, step_schema
from assistant.llm.structured import parse_answer
from assistant.triage import triage_path
from tests.conftest import DATA

KASAN = DATA / "kasan-uaf-ip6_send_skb.log"


def test_every_shipped_prompt_parses_and_names_itself() -> None:
    names = prompt_names()
    assert {"bug_report_summary", "crash_assessment", "chat_router"} <= set(names)
    for name in names:
        p = load_prompt(name)
        assert p.meta["name"] == name
        assert p.version >= 1 and p.meta["purpose"]
        if p.structured:
            model = output_model(p.meta, name)
            check_flat(step_schema(model))
            assert "retry" in p.body


def test_user_override_replaces_a_shipped_prompt(isolated_home: Path) -> None:
    shipped = load_prompt("bug_report_summary")
    target = override_dir() / "bug_report_summary.j2"
    target.parent.mkdir(parents=True)
    target.write_text(
        '+++\nname = "bug_report_summary"\nversion = 99\npurpose = "mine"\n+++\n'
        "{% block system %}S{% endblock %}{% block user %}U {{ crash.title }}{% endblock %}\n"
    )
    mine = load_prompt("bug_report_summary")
    assert mine.version == 99 and mine.origin == str(target)
    crash = triage_path(str(KASAN)).crashes[0]
    assert mine.render(crash=crash, frames=[])[1].content == f"U {crash.title}"
    target.unlink()
    assert load_prompt("bug_report_summary").version == shipped.version


def test_a_broken_prompt_file_is_one_clear_error(isolated_home: Path) -> None:
    target = override_dir() / "crash_assessment.j2"
    target.parent.mkdir(parents=True)
    target.write_text("no front matter\n")
    with pytest.raises(KassistError, match="front matter"):
        load_prompt("crash_assessment")
    with pytest.raises(KassistError, match="no prompt named"):
        load_prompt("../etc/passwd")


def test_classify_drops_registers_and_repeated_frames_first() -> None:
    report = "\n".join(
        [
            "BUG: KASAN: use-after-free in tcp_close+0x10/0x20",
            "Read of size 8 at addr ffff8880 by task a/1",
            "RIP: 0010:tcp_close+0x10/0x20",
            "RAX: 0000000000000000 RBX: ffff888000000000 RCX: 0000000000000001",
            "Call Trace:",
            " tcp_close+0x10/0x20",
            " inet_release+0x1/0x2",
            " tcp_close+0x10/0x20",
        ]
    )
    lines = classify(report)
    prio = {line.strip(): p for p, line in lines}
    assert prio["BUG: KASAN: use-after-free in tcp_close+0x10/0x20"] == HEAD
    assert prio["RAX: 0000000000000000 RBX: ffff888000000000 RCX: 0000000000000001"] == NOISE
    assert prio["inet_release+0x1/0x2"] == GUILTY
    repeated = [p for p, line in lines if line.strip() == "tcp_close+0x10/0x20"]
    assert repeated == [GUILTY, NOISE]


def test_budget_trims_by_priority_not_by_cutting_the_end() -> None:
    crash = triage_path(str(KASAN)).crashes[0]
    prompt = load_prompt("crash_assessment")
    context = {
        "crash": crash,
        "frames": crash.call_trace[:10],
        "schema": "{}",
        "subsystems": "networking, other",
    }
    lines = classify(crash.report)
    _full, ev_full = fit_evidence(prompt, context, lines, approx_tokens, budget=100_000)
    assert ev_full.dropped == 0
    budget = ev_full.tokens - 150
    msgs, ev = fit_evidence(prompt, context, lines, approx_tokens, budget=budget)
    assert ev.tokens <= budget < ev_full.tokens and ev.dropped > 0
    text = msgs[1].content
    assert crash.title in text  # a template field: never dropped
    head = [line for p, line in lines if p == HEAD]
    assert all(line in text for line in head)  # the report's first lines stay
    noise = [line for p, line in lines if p == NOISE]
    assert noise and not any(line in ev.text.splitlines() for line in noise[-3:])
    with pytest.raises(KassistError, match="without any evidence"):
        fit_evidence(prompt, context, lines, approx_tokens, budget=50)


def test_step_schemas_are_flat_and_refuse_what_is_not() -> None:
    schema = step_schema(CrashAssessment)
    check_flat(schema)
    assert schema["properties"]["severity"]["enum"] == ["low", "medium", "high", "critical"]
    with pytest.raises(SchemaNotSupported, match="not flat"):
        check_flat({"type": "object", "properties": {"a": {"type": "object"}}})
    with pytest.raises(SchemaNotSupported, match=r"\$ref"):
        check_flat({"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {}})


def test_parse_answer_refuses_anything_but_a_valid_object() -> None:
    good = {
        "subsystem": "networking",
        "severity": "high",
        "likely_cause": "a socket freed while still in use",
        "next_steps": ["reproduce with KASAN"],
    }
    assert parse_answer(json.dumps(good), CrashAssessment).subsystem == "networking"
    bad = [
        "not json",
        json.dumps({**good, "severity": "catastrophic"}),
        json.dumps({**good, "extra": 1}),
        json.dumps({**good, "next_steps": []}),
        json.dumps({k: v for k, v in good.items() if k != "subsystem"}),
        json.dumps(good)[:-5],
    ]
    for text in bad:
        with pytest.raises(ValidationError):
            parse_answer(text, CrashAssessment)


def test_inline_output_schema_becomes_a_pydantic_model() -> None:
    model = model_from_schema(
        "Pick",
        {
            "type": "object",
            "properties": {
                "choice": {"type": "string", "enum": ["a", "b"]},
                "why": {"type": "string", "maxLength": 5},
            },
            "required": ["choice"],
        },
    )
    assert model.model_validate({"choice": "a"}).model_dump() == {"choice": "a", "why": None}
    with pytest.raises(ValidationError):
        model.model_validate({"choice": "c"})
    with pytest.raises(ValidationError):
        model.model_validate({"choice": "a", "why": "too long"})


def test_registry_knows_builtins_and_refuses_unknown_names() -> None:
    assert {"llama_cpp", "openai", "transformers", "none"} <= set(backend_factories())
    with pytest.raises(KassistError, match="unknown LLM backend"):
        make_backend(LLMConfig(backend="nope"))
    with pytest.raises(KassistError, match="model directory"):
        make_backend(LLMConfig(backend="transformers", model="/nonexistent"))
    with pytest.raises(KassistError, match="not an http"):
        make_backend(LLMConfig(backend="openai", base_url="ftp://x"))


def test_log_migrations_are_numbered_and_safe_to_rerun(tmp_path: Path) -> None:
    path = tmp_path / "llm.db"
    numbers = [n for n, _ in MIGRATIONS]
    assert numbers == sorted(numbers) == list(range(1, len(numbers) + 1))
    for _ in range(3):
        conn = connect(path)
        applied = [r[0] for r in conn.execute("SELECT number FROM _migrations ORDER BY number")]
        assert applied == numbers
        conn.close()
    stats = GenerationStats(prompt_tokens=5, completion_tokens=2, prompt_name="p@1")
    entry = LogEntry("llama_cpp", "m.gguf", [Message("user", "hi")], {"max_tokens": 2}, stats, "yo")
    conn = connect(path)
    log_id = record(conn, entry)
    record_outcome(conn, log_id, {"a": 1}, None)
    row = get_entry(conn, log_id)
    assert json.loads(row["messages"]) == [{"role": "user", "content": "hi"}]
    assert json.loads(row["structured"]) == {"a": 1} and row["prompt_tokens"] == 5
    with pytest.raises(KassistError, match="no LLM log entry"):
        get_entry(conn, log_id + 1)


def test_a_failed_migration_leaves_nothing_half_applied(tmp_path: Path) -> None:
    path = tmp_path / "llm.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE responses (id INTEGER PRIMARY KEY)")  # a clashing table
    conn.commit()
    conn.close()
    with pytest.raises(KassistError, match="cannot open the LLM log"):
        connect(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM _migrations").fetchone()[0] == 0
    assert [r[1] for r in conn.execute("PRAGMA table_info(responses)")] == ["id"]


def test_the_llm_runtime_knows_nothing_of_crashes() -> None:
    import ast

    root = Path(__file__).resolve().parent.parent / "assistant" / "llm"
    for path in sorted(root.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not name.startswith(("assistant.triage", "assistant.drafters")), (
                    path.name,
                    name,
                )


def test_every_builtin_backend_has_the_whole_protocol(tmp_path: Path) -> None:
    import importlib

    from assistant.llm import BUILTIN_BACKENDS
    from assistant.llm.base import Backend
    from assistant.llm.log import LoggedBackend
    from assistant.llm.none import NoneBackend

    members = ["load", "context_size", "stream", "count_tokens", "record_outcome"]
    for spec in BUILTIN_BACKENDS.values():
        module, attr = spec.split(":")
        cls = getattr(importlib.import_module(module), attr)
        assert all(callable(getattr(cls, m, None)) for m in members), spec
    inner = NoneBackend(LLMConfig(backend="none", n_ctx=777))
    logged = LoggedBackend(inner, inner.cfg, tmp_path / "llm.db")
    for backend in (inner, logged):
        assert isinstance(backend, Backend)
        assert backend.context_size() == 777 and backend.location == "none"
        backend.load()


def test_logged_backend_records_sampling_and_outcomes(tmp_path: Path) -> None:
    from assistant.llm.base import Sampling
    from assistant.llm.log import LoggedBackend
    from assistant.llm.none import NoneBackend

    inner = NoneBackend(LLMConfig(backend="none"))
    logged = LoggedBackend(inner, inner.cfg, tmp_path / "llm.db")
    stats = GenerationStats(prompt_name="t@1")
    sampling = Sampling(stop=("\n",), repeat_penalty=1.2, min_p=0.1, temperature=0.0)
    assert list(logged.stream([Message("user", "hi")], 8, stats, sampling=sampling)) == []
    assert stats.log_id is not None
    logged.record_outcome(stats, None, "does not end a sentence")
    row = get_entry(logged.connection(), stats.log_id)
    params = json.loads(row["params"])
    assert params["repeat_penalty"] == 1.2 and params["stop"] == ["\n"]
    assert params["temperature"] == 0.0 and row["refusal"] == "does not end a sentence"


def test_prose_grammar_allows_only_the_given_names() -> None:
    from assistant.llm.grammar import prose_gbnf

    gbnf = prose_gbnf(["ip6_send_skb", "4.12.0-rc3+", 'a"b'], sentences=1)
    assert 'name ::= "ip6_send_skb" | "4.12.0-rc3+" | "a\\"b"' in gbnf
    assert gbnf.startswith("root ::= sentence\n")
    assert '(" " sentence)?' in prose_gbnf([], sentences=2) and "name ::=" not in prose_gbnf([])
