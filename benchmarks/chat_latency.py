"""Chat latency: keystrokes while the model streams, time to first token, routing, lost tokens.

Usage::

    .venv/bin/python benchmarks/chat_latency.py [--keys 60] [--questions 6] [--quick]

With the default model (Qwen2.5-Coder 0.5B; ``[llm] model`` in the configuration) behind
the chat, and the machine's load average printed with the figures:

- keystroke-to-screen: while an answer streams, keys typed into the input line; the time
  from the key's press to the input showing it (p50, p99; target p99 <= 50 ms);
- time to first token of an answer, retrieval included: the first question (target
  <= 3 s), then short follow-ups, whose shared system prompt is already in the KV cache
  (target <= 1.5 s median);
- routing time per question (cues; the model only when they are unsure);
- every token: tokens the backend produced vs tokens written to the screen, and the
  streamed text vs the model's draft.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistant.chat.answer import GroundedAnswerer  # noqa: E402
from assistant.chat.router import route  # noqa: E402
from assistant.chat.session import ChatSession  # noqa: E402
from assistant.config import load_config  # noqa: E402
from assistant.llm import make_backend  # noqa: E402
from assistant.llm.models import DEFAULT_MODEL  # noqa: E402
from probes.bpf import list_probes  # noqa: E402

QUESTIONS = [
    "what is a page cache?",
    "how does memory reclaim work?",
    "what is an OOM kill?",
    "what is a soft lockup?",
    "what is RCU?",
    "how does the scheduler pick a task?",
    "what is a kernel oops?",
    "what is KFENCE?",
]


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _answerer(backend: object) -> GroundedAnswerer:
    # The model writes from the retrieved documentation and its draft streams (the checked,
    # cited answer replaces it): the path whose tokens a person watches arrive.
    return GroundedAnswerer(backend, mode="write")  # type: ignore[arg-type]


def ttft(backend: object, n: int) -> list[float]:
    """Time to the first token of each answer, in seconds (the first one is cold)."""
    session = ChatSession(backend, answerer=_answerer(backend))  # type: ignore[arg-type]
    session.warm()  # what the TUI does when it opens
    out = []
    for q in (QUESTIONS * 2)[:n]:
        start = time.perf_counter()
        first: list[float] = []

        def token(_piece: str, first: list[float] = first, start: float = start) -> None:
            if not first:
                first.append(time.perf_counter() - start)

        session.ask(q, on_token=token)
        out.append(first[0] if first else float("nan"))
    return out


async def keystrokes(
    backend: object, keys: int, streaming: bool = True
) -> tuple[list[float], int, int, bool]:
    """Type ``keys`` keys (while an answer streams, or idle: the baseline); return the
    latencies (ms) and the token counts."""
    from tui.app import KassistApp
    from tui.sources import Pressure, Sources

    sources = Sources(
        pressure=lambda: Pressure(0.0), crashes=lambda s: [], agent=lambda s: "-", live=False
    )
    session = ChatSession(backend, answerer=_answerer(backend))  # type: ignore[arg-type]
    app = KassistApp(session, sources=sources)
    lat: list[float] = []
    async with app.run_test(size=(120, 40)) as pilot:
        prompt = app.query_one("#prompt")
        if streaming:
            prompt.value = "how does memory reclaim work?"  # type: ignore[attr-defined]
            await pilot.press("enter")
            while app.tokens_streamed == 0:
                await asyncio.sleep(0.01)
        for i in range(keys):
            ch = "abcdefghij"[i % 10]
            before = len(prompt.value)  # type: ignore[attr-defined]
            t0 = time.perf_counter()
            await pilot.press(ch)
            while len(prompt.value) == before:  # type: ignore[attr-defined]
                await asyncio.sleep(0)
            lat.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.02)
        while app.busy:
            await asyncio.sleep(0.05)
        await pilot.pause()
        if not streaming:
            return lat, 0, 0, True
        turn = app.session.turns[-1]
        streamed_all = app.tokens_streamed == app.tokens_shown
        return lat, app.tokens_streamed, app.tokens_shown, streamed_all and bool(turn.draft)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=60)
    ap.add_argument("--questions", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="CI: --keys 5 --questions 2")
    opts = ap.parse_args()
    if opts.quick:
        opts.keys, opts.questions = 5, 2
    cfg = load_config({"llm": {"backend": "llama_cpp", "log": False, "max_tokens": 120}})
    backend = make_backend(cfg.llm)
    t0 = time.perf_counter()
    backend.load()  # type: ignore[attr-defined]
    print(
        f"model {cfg.llm.model or DEFAULT_MODEL} loaded in {time.perf_counter() - t0:.2f} s;"
        f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )

    names = [p.name for p in list_probes()]
    times = []
    for q in QUESTIONS * 20:
        s = time.perf_counter()
        route(q, names, None)
        times.append((time.perf_counter() - s) * 1000)
    print(f"routing (cues): p50 {statistics.median(times):.3f} ms, p99 {_pct(times, 99):.3f} ms")

    firsts = ttft(backend, opts.questions)
    later = [x for x in firsts[1:] if not math.isnan(x)]
    print(
        f"time to first token: first question {firsts[0] * 1000:.0f} ms; "
        f"follow-ups p50 {statistics.median(later) * 1000:.0f} ms, "
        f"max {max(later) * 1000:.0f} ms over {len(later)} (targets <= 3000 ms first,"
        f" <= 1500 ms follow-ups); load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    idle, _, _, _ = asyncio.run(keystrokes(backend, opts.keys, streaming=False))
    lat, streamed, shown, ok = asyncio.run(keystrokes(backend, opts.keys))
    print(
        f"keystroke-to-screen while streaming: p50 {statistics.median(lat):.1f} ms, "
        f"p99 {_pct(lat, 99):.1f} ms, max {max(lat):.1f} ms over {len(lat)} keys "
        "(target p99 <= 50 ms)"
    )
    print(
        f"  the same keys with nothing streaming (Pilot's own delivery): p50 "
        f"{statistics.median(idle):.1f} ms, p99 {_pct(idle, 99):.1f} ms; streaming adds "
        f"{statistics.median(lat) - statistics.median(idle):.1f} ms at the median"
    )
    print(
        f"tokens produced {streamed}, written to the screen {shown}: "
        f"{'all reached the screen' if ok else 'LOST TOKENS'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
