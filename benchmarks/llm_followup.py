"""Time to first token: a ~500-token crash-report prompt, then a follow-up turn.

The follow-up sends the whole conversation again (system, crash report, the model's
answer, a new question) through LangChain's chat interface
(:class:`assistant.llm.chat.Conversation`); the ``llama_cpp`` backend keeps its KV
cache between turns, so only the new tokens are read. For comparison the same
follow-up is also timed with the cache dropped first. Rounds alternate.

    .venv/bin/python benchmarks/llm_followup.py [--rounds 4] [--prompt-tokens 500] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.config import LLMConfig
from assistant.drafters.assessment import severity_of
from assistant.drafters.crash_lines import classify
from assistant.drafters.summary import happened_prompt
from assistant.llm import make_backend
from assistant.llm.budget import fit_evidence
from assistant.llm.chat import Conversation, KassistChatModel
from assistant.llm.prompts import load_prompt
from assistant.triage import triage_path

CRASH_LOG = Path(__file__).resolve().parent.parent / "tests" / "data" / "kasan-uaf-ip6_send_skb.log"
FOLLOW_UP = "Which function should I look at first, and why?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--prompt-tokens", type=int, default=500)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument(
        "--quick", action="store_true", help="CI: 1 round of 8 tokens, a ~400-token prompt"
    )
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.max_tokens, args.prompt_tokens = 1, 8, 400
    os.environ.setdefault("XDG_STATE_HOME", tempfile.mkdtemp(prefix="kassist-bench-"))
    backend = make_backend(LLMConfig(n_ctx=2048, temperature=0.0))
    inner = backend.inner if hasattr(backend, "inner") else backend  # type: ignore[attr-defined]
    llama = inner.load()
    crash = triage_path(str(CRASH_LOG)).crashes[0]
    # the crash-report prompt, its evidence trimmed to about --prompt-tokens tokens
    assess = load_prompt("crash_assessment")
    ctx = {"crash": crash, "frames": crash.call_trace[:10], "schema": "{}", "subsystems": ""}
    msgs, ev = fit_evidence(
        assess, ctx, classify(crash.report), inner.count_tokens, args.prompt_tokens
    )
    # the report paragraph's system prompt (the crash's facts go in the question)
    system = happened_prompt(crash, severity_of(crash.type)).messages[0].content
    question = msgs[1].content.replace("Assess this crash as JSON.", "Summarise this crash.")
    chat = KassistChatModel(backend=backend, max_tokens=args.max_tokens)
    print(
        f"model {inner.model_name}; load average before: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    first, warm, cold, sizes = [], [], [], []
    for i in range(args.rounds):
        for mode in ("warm", "cold") if i % 2 == 0 else ("cold", "warm"):
            llama.reset()  # a new conversation: nothing cached
            convo = Conversation(chat, system)
            a1 = convo.ask(question)
            meta1 = a1.usage_metadata or {}
            if mode == "cold":
                llama.reset()  # drop the cache: the follow-up reads everything again
            a2 = convo.ask(FOLLOW_UP)
            meta2 = a2.usage_metadata or {}
            t1 = chat_first(convo, 2)
            t2 = chat_first(convo, 4)
            (warm if mode == "warm" else cold).append(t2)
            first.append(t1)
            sizes.append(
                (
                    meta1.get("input_tokens"),
                    meta2.get("input_tokens"),
                    (meta2.get("input_token_details") or {}).get("cache_read"),
                )
            )
            print(
                f"  round {i + 1} {mode}: first turn {meta1.get('input_tokens')} tokens "
                f"{t1 * 1000:6.0f} ms to first token; follow-up {meta2.get('input_tokens')} tokens "
                f"({(meta2.get('input_token_details') or {}).get('cache_read')} cached) "
                f"{t2 * 1000:6.0f} ms"
            )
    f, w, c = statistics.median(first), statistics.median(warm), statistics.median(cold)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"first turn (~{args.prompt_tokens}-token prompt, evidence {ev.tokens} tokens): "
        f"{f * 1000:.0f} ms to first token (median)"
    )
    print(
        f"follow-up, cache reused: {w * 1000:.0f} ms = {w / f:.1%} of the first turn"
        " (target <= 25%)"
    )
    print(f"follow-up, cache dropped: {c * 1000:.0f} ms = {c / f:.1%} of the first turn")


def chat_first(convo: Conversation, index: int) -> float:
    # time to first token of the index-th message of the history (an AI answer)
    msg = convo.history[index]
    return float(msg.response_metadata.get("first_token_s", 0.0))


if __name__ == "__main__":
    main()
