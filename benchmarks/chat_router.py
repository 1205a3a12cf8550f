"""Router accuracy: the chat's tool and arguments for a set of questions, with and without a model.

Usage::

    .venv/bin/python benchmarks/chat_router.py [--questions FILE.jsonl] [--backend none|llama_cpp]
        [--misses N] [--sample N] [--quick]

Each line of the questions file is ``{"q": ..., "action": ..., "args": {...}}``; a routing
is right when the tool is the expected one and every expected argument has the expected
value (and no argument is invented besides a probe's duration default). Prints the
accuracy of the tool alone and of tool and arguments, how each decision was reached, and
the routing time per question.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistant.chat.router import Decision, route  # noqa: E402
from probes.bpf import list_probes  # noqa: E402

DEV = ROOT / "tests" / "data" / "chat" / "questions.dev.jsonl"


def right(decision: Decision, want: dict[str, object]) -> tuple[bool, bool]:
    """Return (tool right, tool and arguments right)."""
    args = want.get("args") or {}
    assert isinstance(args, dict)
    tool = decision.action == want["action"]
    same = all(decision.args.get(k) == v for k, v in args.items())
    extra = [k for k in decision.args if k not in args and k != "duration"]
    return tool, tool and same and not extra


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=Path, default=DEV)
    ap.add_argument("--backend", default="both", choices=["none", "llama_cpp", "both"])
    ap.add_argument("--misses", type=int, default=10)
    ap.add_argument("--sample", type=int, default=0, help="N questions spread over the file")
    ap.add_argument("--quick", action="store_true", help="CI: --sample 40 --misses 3")
    opts = ap.parse_args()
    if opts.quick:
        opts.sample, opts.misses = 40, 3
    questions = [json.loads(x) for x in opts.questions.read_text().splitlines() if x.strip()]
    if opts.sample:
        questions = questions[:: max(1, len(questions) // opts.sample)][: opts.sample]
    names = [p.name for p in list_probes()]
    backends: list[tuple[str, object]] = []
    if opts.backend in ("none", "both"):
        backends.append(("none", None))
    if opts.backend in ("llama_cpp", "both"):
        from assistant.config import load_config
        from assistant.llm import make_backend

        backend = make_backend(load_config({"llm": {"backend": "llama_cpp", "log": False}}).llm)
        backend.load()  # type: ignore[attr-defined]
        backends.append(("llama_cpp (bundled SmolLM2-135M)", backend))
    print(f"{len(questions)} questions from {opts.questions}")
    for label, backend in backends:
        tools = both = 0
        via: Counter[str] = Counter()
        times = []
        misses = []
        for q in questions:
            t0 = time.perf_counter()
            d = route(q["q"], names, backend)  # type: ignore[arg-type]
            times.append((time.perf_counter() - t0) * 1000)
            via[d.via] += 1
            t, b = right(d, q)
            tools += t
            both += b
            if not b:
                want = f"{q['action']} {q['args']}"
                misses.append(f"  {q['q']!r}: want {want}, got {d.action} {d.args}")
        n = len(questions)
        print(f"\n{label}:")
        print(f"  tool right           {tools}/{n} = {tools / n:.1%}")
        print(f"  tool and args right  {both}/{n} = {both / n:.1%}")
        print(f"  decided by           {dict(via)}")
        print(
            f"  routing time         p50 {statistics.median(times):.2f} ms,"
            f" max {max(times):.1f} ms, mean {statistics.fmean(times):.2f} ms"
        )
        for m in misses[: opts.misses]:
            print(m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
