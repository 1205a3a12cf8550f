"""Retrieval quality on the chat-answer dev set: the right file and the key facts in the top 5.

Usage::

    .venv/bin/python benchmarks/retrieval.py [--quick] [--k 5] [--misses N]

For each question of ``benchmarks/data/answers.{tune,heldout,heldout2}.jsonl`` and each
retriever (the knowledge base's section BM25 as it was before, BM25 over passages,
hybrid BM25 + embeddings fused by rank), prints, per part:

- ``file@k``: a top-k passage comes from one of the expected documentation files;
- ``facts@k``: the top-k passages' text holds every key fact (an answer can be quoted);
- the median search time (ms).

``--quick`` runs the first 12 questions of each part.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistant.knowledge import open_default  # noqa: E402
from assistant.knowledge.retrieve import Retrieval, Retriever, open_retriever  # noqa: E402

DATA = ROOT / "benchmarks" / "data"
PARTS = ("tune", "heldout", "heldout2")


def load(part: str) -> list[dict[str, object]]:
    """Return one part of the dev set."""
    path = DATA / f"answers.{part}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def norm(text: str) -> str:
    """Return text lower-cased with white space collapsed (how facts are matched)."""
    return " ".join(text.lower().split())


def has_facts(text: str, facts: list[list[str]]) -> bool:
    """Return whether ``text`` holds every fact (one of its alternatives each)."""
    flat = norm(text)
    return all(any(norm(alt) in flat for alt in alts) for alts in facts)


def score(found: Retrieval, q: dict[str, object], k: int) -> tuple[bool, bool]:
    """Return (right file in the first k hits, all facts in their text)."""
    sources = q["sources"]
    assert isinstance(sources, list)
    facts = q["facts"]
    assert isinstance(facts, list)
    hits = found.hits[:k]
    text = "\n".join(f"{h.passage.heading}\n{h.passage.text}" for h in hits)
    return any(h.passage.path in sources for h in hits), has_facts(text, facts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="12 questions of each part")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--misses", type=int, default=0, help="print up to N misses of the tune part")
    opts = ap.parse_args()
    kb = open_default()
    hybrid = open_retriever(kb)
    if hybrid.notice:
        print(f"note: {hybrid.notice}")
    variants: list[tuple[str, Callable[[], Retriever]]] = [
        ("sections BM25 (before)", lambda: Retriever(kb, None)),
        ("passages BM25", hybrid.without_embeddings),
        (f"passages {hybrid.mode}", lambda: hybrid),
    ]
    print(f"knowledge base {kb.path.name}; k = {opts.k}")
    for label, make in variants:
        retriever = make()
        print(f"\n{label}:")
        for part in PARTS:
            questions = load(part)[: 12 if opts.quick else None]
            files = facts = files1 = facts1 = 0
            times = []
            misses = []
            for q in questions:
                found = retriever.search(str(q["q"]), opts.k)
                times.append(found.seconds * 1000)
                f, a = score(found, q, opts.k)
                f1, a1 = score(found, q, 1)
                files += f
                facts += a
                files1 += f1
                facts1 += a1
                if not (f and a):
                    top = ", ".join(h.passage.cite for h in found.hits[:3])
                    misses.append(f"    {q['id']}: file {f} facts {a}: {top}")
            n = len(questions)
            print(
                f"  {part:8} file@{opts.k} {files}/{n} = {files / n:5.1%}"
                f"   facts@{opts.k} {facts}/{n} = {facts / n:5.1%}"
                f"   file@1 {files1 / n:5.1%}   facts@1 {facts1 / n:5.1%}"
                f"   median {statistics.median(times):.1f} ms"
            )
            # The held-out part's misses are never shown: nobody tunes on them.
            for m in misses[: opts.misses if part == "tune" else 0]:
                print(m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
