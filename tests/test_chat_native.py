"""Native tool use: the model calls the chat's tools itself; the router is the fallback.

The bad-input cases (a malformed call, an unknown tool, arguments the tool refuses, a
model that keeps calling) replay a hostile model's answers, since no real model can be
made to misbehave on cue; the real default model is exercised in-process and behind
``llama_cpp.server`` on loopback.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from assistant.chat.native import MAX_CALLS, Fallback, native_turn
from assistant.chat.session import ChatSession
from assistant.chat.tools import Context
from assistant.config import LLMConfig
from assistant.llm.base import BackendDefaults, Constraint, GenerationStats, Message, Sampling
from assistant.llm.chat_template import chatml
from assistant.llm.tool_calls import call_text, parse_tool_calls
from tests.conftest import require_default_model
from tests.llm_support import llama_server


class ScriptedModel(BackendDefaults):
    """A model whose answers are given in advance (a hostile or broken model's output)."""

    name = "scripted"
    model_name = "scripted"
    location = "test"
    constraint: Constraint = "none"

    def __init__(self, answers: list[str]) -> None:
        self.cfg = LLMConfig()
        self.answers = answers
        self.seen: list[list[Message]] = []
        self.tools: list[tuple[dict[str, Any], ...]] = []

    def load(self) -> object:
        return self

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def stream(
        self,
        messages: list[Message],
        max_tokens: int,
        stats: GenerationStats | None = None,
        json_schema: dict[str, Any] | None = None,
        sampling: Sampling | None = None,
    ) -> Iterator[str]:
        self.seen.append(list(messages))
        self.tools.append(sampling.tools if sampling else ())
        yield self.answers[min(len(self.seen), len(self.answers)) - 1]


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(store=str(tmp_path / "crashes.db"), socket=str(tmp_path / "no-agent.sock"))


def test_tool_calls_are_parsed_strictly() -> None:
    text = "Let me look.\n" + call_text("crash", {"signature": "abc"})
    parsed = parse_tool_calls(text)
    assert [(c.name, c.args) for c in parsed.calls] == [("crash", {"signature": "abc"})]
    assert parsed.content == "Let me look."
    for bad, why in [
        ("<tool_call>{oops</tool_call>", "not JSON"),
        ('<tool_call>["crashes"]</tool_call>', "not a JSON object"),
        ('<tool_call>{"arguments": {}}</tool_call>', "no tool name"),
        ('<tool_call>{"name": "x", "arguments": [1]}</tool_call>', "arguments are not an object"),
    ]:
        parsed = parse_tool_calls(bad)
        assert not parsed.calls and parsed.invalid[0].error.startswith(why)


def test_the_tools_are_in_the_qwen_prompt_and_results_come_back_as_tool_responses() -> None:
    tool = {"type": "function", "function": {"name": "stats", "description": "d", "parameters": {}}}
    text = chatml(
        [
            Message("system", "sys"),
            Message("user", "q"),
            Message("assistant", call_text("stats", {})),
            Message("tool", "load 0.5"),
        ],
        [tool],
    )
    assert text.startswith("<|im_start|>system\nsys\n\n# Tools\n")
    assert json.dumps(tool) in text
    assert "<|im_start|>user\n<tool_response>\nload 0.5\n</tool_response><|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_a_call_is_run_and_the_closing_answer_is_checked_against_its_result(
    ctx: Context,
) -> None:
    model = ScriptedModel(
        [
            call_text("crashes", {}),
            "No crashes are in the store. The store holds 42 crashes from tcp_close.",
        ]
    )
    turn = native_turn(model, "any crashes?", ctx)
    assert not isinstance(turn, Fallback)
    assert [c.name for c in turn.calls] == ["crashes"]
    assert model.tools[0] and {t["function"]["name"] for t in model.tools[0]} >= {"crashes"}
    # the result went back to the model as a tool message, and is the only evidence:
    assert model.seen[1][-1].role == "tool" and "is empty" in model.seen[1][-1].content
    assert turn.answer.startswith(turn.calls[0].result.text)
    # (the tool result itself may hold "42": in a signature of a crash the kernel log holds)
    assert "42 crashes" not in turn.answer and "sentence dropped" in turn.notice


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("<tool_call>{not json</tool_call>", "the model's tool call was invalid (not JSON"),
        (call_text("format_disk", {}), "the model called no such tool ('format_disk')"),
        (
            call_text("logs", {"source": "/etc/shadow"}),
            "the model's tool call failed (logs: source",
        ),
        (call_text("crashes", {"all": True}), "the model's tool call failed (crashes: all"),
        ("The store is empty.", "the model answered without calling a tool"),
    ],
)
def test_a_bad_call_gives_the_turn_to_the_router_with_one_line(
    ctx: Context, answer: str, why: str
) -> None:
    outcome = native_turn(ScriptedModel([answer]), "any crashes in the store?", ctx)
    assert isinstance(outcome, Fallback) and outcome.why.startswith(why), outcome
    session = ChatSession(ScriptedModel([answer]), ctx, native_tools=True)
    turn = session.ask("list the crashes in the crash store")
    assert turn.decision.via != "native" and turn.decision.action == "crashes"
    assert turn.notice.startswith(why) and "\n" not in turn.notice
    assert turn.answer.startswith("The crash store") and "is empty" in turn.answer  # the router


def test_a_tool_loop_stops_at_the_limit_and_still_answers(ctx: Context) -> None:
    # a new call each time (another changeset to propose rolling back), again and again
    answers = [call_text("rollback", {"changeset": n}) for n in range(1, 10)]
    turn = native_turn(ScriptedModel([call_text("crashes", {}), *answers]), "any crashes?", ctx)
    assert not isinstance(turn, Fallback)
    assert len(turn.calls) == MAX_CALLS
    assert turn.notice.startswith(f"the model asked for more than {MAX_CALLS} tool calls")
    assert turn.answer.startswith(turn.calls[0].result.text)
    # proposals only: nothing reached an agent (its socket does not exist)
    assert all(p.op == "rollback" for c in turn.calls for p in c.result.proposals)
    assert not Path(ctx.socket).exists()


def test_the_same_call_again_is_not_run_twice(ctx: Context) -> None:
    turn = native_turn(ScriptedModel([call_text("crashes", {})]), "any crashes?", ctx)
    assert not isinstance(turn, Fallback)
    assert [c.name for c in turn.calls] == ["crashes"]
    assert turn.answer == turn.calls[0].result.text and turn.notice == ""


def test_apply_through_a_native_call_with_no_agent_proposes_nothing(ctx: Context) -> None:
    # (with an agent, only a proposal: tests/test_chat_agent.py)
    model = ScriptedModel(
        [call_text("apply", {"target": "net.core.somaxconn", "value": "4096"}), "Proposed."]
    )
    session = ChatSession(model, ctx, native_tools=True)
    turn = session.ask("raise somaxconn to 4096")
    assert turn.decision.via == "native" and turn.decision.action == "apply"
    assert turn.proposals == [] and "Not proposed" in turn.answer
    # nothing reached an agent: its socket does not even exist
    assert not Path(ctx.socket).exists()


# --- the real default model ---


def _store_with_a_crash(path: str) -> None:
    from assistant.triage import triage_path
    from assistant.triage.store import CrashStore
    from tests.conftest import DATA

    crash = triage_path(str(DATA / "kasan-uaf-ip6_send_skb.log")).crashes[0]
    with CrashStore(Path(path)) as db:
        db.record([crash], "test", host="h1")


def _check_native_turn(turn: Any) -> None:
    assert not isinstance(turn, Fallback), turn
    assert 1 <= len(turn.calls) <= MAX_CALLS
    assert turn.calls[0].name == "crashes"
    assert "ip6_send_skb" in turn.answer  # the tool's result is shown


def test_the_default_model_calls_a_tool_in_process(ctx: Context) -> None:
    require_default_model()
    from assistant.llm import make_backend

    _store_with_a_crash(str(ctx.store))
    backend = make_backend(LLMConfig(n_ctx=4096, temperature=0.0), log=False)
    _check_native_turn(native_turn(backend, "Which crashes are in the crash store?", ctx))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_default_model()
    from assistant.llm.models import resolve_gguf

    model = resolve_gguf("")
    assert model is not None
    log = tmp_path_factory.mktemp("server") / "server.log"
    with llama_server(model.path, "qwen", 4096, log) as url:
        yield url


def test_the_default_model_calls_a_tool_through_llama_cpp_server(ctx: Context, server: str) -> None:
    from assistant.llm import make_backend

    _store_with_a_crash(str(ctx.store))
    backend = make_backend(
        LLMConfig(backend="openai", base_url=server, temperature=0.0, model="qwen"), log=False
    )
    _check_native_turn(native_turn(backend, "Which crashes are in the crash store?", ctx))


def test_no_tool_changes_anything_in_a_native_turn(ctx: Context) -> None:
    # The store is read, never written, by a native turn.
    _store_with_a_crash(str(ctx.store))
    before = sqlite3.connect(str(ctx.store)).execute("SELECT count(*) FROM crashes").fetchone()
    native_turn(ScriptedModel([call_text("crashes", {}), "Done."]), "crashes?", ctx)
    after = sqlite3.connect(str(ctx.store)).execute("SELECT count(*) FROM crashes").fetchone()
    assert before == after
