"""Grounded chat answers: the key facts and the right documentation file, per model and mode.

Usage::

    .venv/bin/python benchmarks/chat_answers.py [--quick] [--models none,smollm2,...]
        [--modes quote,select,write] [--through answer|ask] [--misses N]

For every question of
``benchmarks/data/answers.{tune,heldout,heldout2,heldout3,heldout4}.jsonl``, each model
(``none`` quotes; a model name from :data:`MODELS`, or ``label=/path/model.gguf``) and
each answer mode, the answer is right when its text holds every key fact (one of its
phrases, case and white space ignored) *and* names one of the expected
``Documentation/...`` files. ``--through ask`` asks through the chat session, as
``kassist ask`` does (its router first), instead of calling the answer function.

Prints, per model and mode, the share right on the tune part and on the held-out parts
(``heldout``, ``heldout2`` written in the third session, ``heldout3`` in the fourth and
``heldout4`` in the fifth;
never tuned on, their misses are never printed), the latency of the first answer text
(first question; median and max of the follow-ups) and the median retrieval time.
``--quick`` runs 2 questions of each part with no model and with the default model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistant.knowledge.answer import answer, retriever  # noqa: E402

DATA = ROOT / "benchmarks" / "data"
PARTS = ("tune", "heldout", "heldout2", "heldout3", "heldout4")
#: Model names this benchmark knows, and how to find each (see ``model_path``).
MODELS = ("none", "smollm2", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")
DEFAULT_MODEL = "qwen2.5-coder-0.5b"


def load(part: str) -> list[dict[str, Any]]:
    """Return one part of the dev set."""
    path = DATA / f"answers.{part}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def norm(text: str) -> str:
    """Return text lower-cased with white space collapsed (how facts are matched)."""
    return " ".join(text.lower().split())


def right(text: str, q: dict[str, Any]) -> tuple[bool, bool]:
    """Return (every key fact in the text, an expected documentation file named in it)."""
    flat = norm(text)
    facts = all(any(norm(alt) in flat for alt in alts) for alts in q["facts"])
    cited = any(source in text for source in q["sources"])
    return facts, cited


#: Where the model install keeps the Qwen GGUFs (named by their sha256, from issue 24).
MODEL_CACHE = Path("/var/cache/kassist/models")
QWEN_SHA256 = {
    "qwen2.5-coder-0.5b": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    "qwen2.5-coder-1.5b": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
}


def model_path(name: str) -> str | None:
    """Return the GGUF path of a model name ("" for the bundled SmolLM2), or None when it
    is not installed here. ``label=/path.gguf`` names a file."""
    if "=" in name:
        return name.split("=", 1)[1]
    if name in ("smollm2", "smollm2-135m"):
        return ""
    try:  # the model catalogue, where this checkout has it
        from assistant.llm.models import CATALOGUE, cached_path  # type: ignore[attr-defined]

        found = cached_path(CATALOGUE[name]) if name in CATALOGUE else None
        return str(found) if found else None
    except ImportError:
        path = MODEL_CACHE / f"{QWEN_SHA256.get(name, '-')}.gguf"
        return str(path) if path.is_file() else None


def make(name: str) -> Any:
    """Return a loaded backend for a model name, None for ``none``."""
    if name == "none":
        return None
    path = model_path(name)
    if path is None:
        raise LookupError(f"{name} is not installed (kassist models install {name})")
    from assistant.config import load_config
    from assistant.llm import make_backend

    llm = {"backend": "llama_cpp", "model": path, "log": False, "n_threads": 2}
    cfg = load_config({"llm": llm})
    backend = make_backend(cfg.llm)
    backend.load()
    return backend


def ask_text(question: str, backend: Any, mode: str, through: str) -> tuple[str, float]:
    """Return (the answer's text, its retrieval seconds)."""
    if through == "ask":
        from assistant.chat.session import ChatSession

        turn = ChatSession(backend).ask(question)
        return turn.answer, 0.0
    found = answer(question, backend, mode=mode)
    return found.text, found.retrieval.seconds if found.retrieval else 0.0


def run(label: str, backend: Any, mode: str, opts: argparse.Namespace) -> None:
    """Print one model and mode's figures."""
    print(f"\n{label}, {mode}:")
    latencies: list[float] = []
    retrievals: list[float] = []
    for part in opts.parts.split(","):
        questions = load(part)[: 2 if opts.quick else None]
        good = facts_only = 0
        misses = []
        for q in questions:
            started = time.perf_counter()
            text, retrieval_s = ask_text(q["q"], backend, mode, opts.through)
            latencies.append(time.perf_counter() - started)
            retrievals.append(retrieval_s)
            facts, cited = right(text, q)
            good += facts and cited
            facts_only += facts
            if not (facts and cited) and part == "tune":
                misses.append(f"    {q['id']}: facts {facts} cited {cited}: {text[:300]!r}")
        n = len(questions)
        print(
            f"  {part:8} right {good}/{n} = {good / n:5.1%}"
            f"   (key facts alone {facts_only}/{n} = {facts_only / n:5.1%})"
        )
        for m in misses[: opts.misses]:
            print(m)
    follow = latencies[1:] or [0.0]
    print(
        f"  first answer text: first question {latencies[0]:.2f} s,"
        f" follow-ups median {statistics.median(follow):.2f} s, max {max(follow):.2f} s;"
        f" retrieval median {statistics.median(retrievals) * 1000:.0f} ms"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 questions a part, none and default")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--modes", default="quote,select,write")
    ap.add_argument("--through", choices=["answer", "ask"], default="answer")
    ap.add_argument("--misses", type=int, default=0, help="print up to N tune-part misses")
    ap.add_argument(
        "--parts", default=None, help="tune,heldout,...,heldout4 (--quick: tune,heldout)"
    )
    opts = ap.parse_args()
    if opts.parts is None:
        opts.parts = ",".join(PARTS[:2] if opts.quick else PARTS)
    names = ["none", DEFAULT_MODEL] if opts.quick else opts.models.split(",")
    modes = ["select"] if opts.quick else opts.modes.split(",")
    started = time.perf_counter()
    found = retriever()
    if found is None:
        print("no knowledge base: build it with `kassist kb build`")
        return 1
    note = f"; {found.notice}" if found.notice else ""
    print(
        f"retrieval: {found.mode} over {found.kb.path.name}"
        f" (loaded in {time.perf_counter() - started:.2f} s){note}"
    )
    for name in names:
        try:
            backend = make(name)
        except (LookupError, Exception) as exc:  # a model that is not installed is skipped
            print(f"\n{name}: skipped ({exc})")
            continue
        for mode in ["quote"] if backend is None else modes:
            run(name, backend, mode, opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
