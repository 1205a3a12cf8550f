"""Streaming rate of kassist's path versus raw llama_cpp, same model, same prompt.

Both generate greedily from the same prompt tokens (the ``what_happened``
prompt for a real KASAN report) on one loaded model; runs alternate (kassist, raw,
raw, kassist, ...) so that the machine's load hits both alike. The KV cache is reset
before each run so neither reuses the other's prompt. kassist's path is the whole
product path: make_backend (with the SQLite log on), chat template, streaming.

    .venv/bin/python benchmarks/llm_stream.py [--rounds 6] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.config import LLMConfig
from assistant.drafters.assessment import severity_of
from assistant.drafters.summary import happened_prompt
from assistant.llm import make_backend
from assistant.llm.base import GenerationStats
from assistant.llm.llama_cpp import LlamaCppBackend
from assistant.triage import triage_path

CRASH_LOG = Path(__file__).resolve().parent.parent / "tests" / "data" / "kasan-uaf-ip6_send_skb.log"


def _rates(first_s: float, total_s: float, tokens: int) -> float:
    # decode rate: tokens after the first, over the time after the first
    return (tokens - 1) / (total_s - first_s) if tokens > 1 and total_s > first_s else 0.0


def run_kassist(backend: object, messages: list, max_tokens: int) -> tuple[float, float, int]:
    inner = backend.inner if hasattr(backend, "inner") else backend  # type: ignore[attr-defined]
    inner.load().reset()
    stats = GenerationStats(prompt_name="bench")
    for _ in backend.stream(messages, max_tokens, stats):  # type: ignore[attr-defined]
        pass
    return stats.first_token_s, stats.total_s, stats.completion_tokens


def run_raw(
    llama: object, tokens: list[int], stop: list[str], max_tokens: int
) -> tuple[float, float, int]:
    llama.reset()  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    first = 0.0
    n = 0
    for chunk in llama.create_completion(  # type: ignore[attr-defined]
        prompt=tokens, max_tokens=max_tokens, temperature=0.0, stop=stop, stream=True
    ):
        if chunk["choices"][0]["finish_reason"] is not None and not chunk["choices"][0]["text"]:
            break  # the closing chunk carries no token
        n += 1
        if n == 1:
            first = time.perf_counter() - t0
    return first, time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="CI: --rounds 1 --max-tokens 16")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.max_tokens = 1, 16
    os.environ.setdefault("XDG_STATE_HOME", tempfile.mkdtemp(prefix="kassist-bench-"))
    cfg = LLMConfig(n_ctx=2048, temperature=0.0, max_tokens=args.max_tokens)
    backend = make_backend(cfg)  # the product path, logging included
    inner: LlamaCppBackend = backend.inner if hasattr(backend, "inner") else backend  # type: ignore[assignment]
    llama = inner.load()
    crash = triage_path(str(CRASH_LOG)).crashes[0]
    messages = happened_prompt(crash, severity_of(crash.type)).messages
    tokens, stop, _ = inner.prompt_tokens(messages)
    print(
        f"model {inner.model_name}, prompt {len(tokens)} tokens, max_tokens {args.max_tokens}, "
        f"threads {inner.threads}"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    run_raw(llama, tokens, stop, 8)  # warm-up
    k_rate, r_rate, k_ttft, r_ttft = [], [], [], []
    for i in range(args.rounds):
        order = ("kassist", "raw") if i % 2 == 0 else ("raw", "kassist")
        for who in order:
            if who == "kassist":
                first, total, n = run_kassist(backend, messages, args.max_tokens)
                k_rate.append(_rates(first, total, n))
                k_ttft.append(first)
            else:
                first, total, n = run_raw(llama, tokens, stop, args.max_tokens)
                r_rate.append(_rates(first, total, n))
                r_ttft.append(first)
            print(
                f"  round {i + 1} {who:<8} {n:4d} tokens  first {first * 1000:7.1f} ms  "
                f"{_rates(first, total, n):6.1f} tok/s"
            )
    km, rm = statistics.median(k_rate), statistics.median(r_rate)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    kt, rt = statistics.median(k_ttft) * 1000, statistics.median(r_ttft) * 1000
    print(f"kassist: {km:.1f} tok/s (median), time to first token {kt:.0f} ms")
    print(f"raw:     {rm:.1f} tok/s (median), time to first token {rt:.0f} ms")
    print(f"ratio kassist/raw tokens/s: {km / rm:.3f}  (target >= 0.95)")
    print(
        f"ratio kassist/raw time to first token: "
        f"{statistics.median(k_ttft) / statistics.median(r_ttft):.3f}"
    )


if __name__ == "__main__":
    main()
