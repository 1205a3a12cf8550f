"""How good are the bundled model's report summaries, and what does each prompt change do?

Over crashes of the dev corpus (``../shared/corpus`` beside the checkout, or ``--corpus DIR``), each
variant below drafts every crash's summary with the bundled model; the shared checker
decides what is shown. Printed per variant: the share of drafts the checker accepts,
the share of reports that show misleading model text, invented names shown and in raw
drafts, why drafts were refused, and the time per draft (first token, total). Then,
for the shipped configuration, the severity table's coverage of every crash type in
the corpus and the time of a whole report. Variants, each adding one change to the
one above it (the first is the baseline of this run):

1. ``plain``: the facts prompt alone, greedy, no stop sequences;
2. ``+few-shot``: one worked example of the crash's family before the crash;
3. ``+stop``: stop at the end of the line;
4. ``+grammar``: a grammar that allows words, and names only from the facts (the
   shipped configuration);

and two side steps on top of the shipped one: ``ship+penalty`` (repeat penalty 1.15,
not shipped: it lowers acceptance) and ``ship+docs`` (the opening of the first
documentation hit as background; only with a knowledge base).

    nice -n 10 .venv/bin/python benchmarks/draft_quality.py --crashes 50

``--quick`` (CI): the shipped variant over 2 crashes of the reports corpus, 1 whole report.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.config import LLMConfig
from assistant.drafters.assessment import SEVERITY, crash_knowledge, open_knowledge, severity_of
from assistant.drafters.bug_report import draft_report
from assistant.drafters.checker import check_draft
from assistant.drafters.summary import (
    PROMPT_NAME,
    draft_summary,
    fact_lines,
    sampling_of,
    summary_evidence,
    summary_messages,
)
from assistant.llm import make_backend
from assistant.llm.base import Sampling
from assistant.llm.prompts import Prompt, load_prompt
from assistant.triage.engine import triage_lines
from assistant.triage.model import Crash

#: The dev corpus: ``shared/corpus`` beside the checkout.
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
_EXAMPLE = re.compile(r"{% block example2?_(?:user|assistant) %}.*?{% endblock %}\n?", re.S)


def corpus_crashes(corpus: Path, limit: int | None = None) -> list[Crash]:
    """Return the first crash of every corpus log that has one, in file order.

    :param limit: read only the first this many logs of each corpus file.
    """
    out = []
    for name in ("syzkaller-linux-reports.dev.jsonl", "syzkaller-linux-guilty.dev.jsonl"):
        for line in (corpus / name).read_text(encoding="utf-8").splitlines()[:limit]:
            row = json.loads(line)
            crashes = triage_lines(row["log"].splitlines(), f"{name}:{row['id']}").crashes
            if crashes:
                out.append(crashes[0])
    return out


def spread(crashes: list[Crash], n: int) -> list[Crash]:
    """Pick ``n`` crashes spread evenly over the list (every family gets its share)."""
    if n >= len(crashes):
        return crashes
    step = len(crashes) / n
    return [crashes[int(i * step)] for i in range(n)]


Variant = tuple[str, Prompt, Sampling | None, bool]


def variants(shipped: Prompt, with_docs: bool) -> list[Variant]:
    """Return (name, prompt, sampling, docs) for each variant, cumulative; ``None``
    sampling is the prompt's own, with the names grammar built per crash."""
    plain_prompt = replace(shipped, body=_EXAMPLE.sub("", shipped.body))
    full = sampling_of(shipped)
    greedy = Sampling(temperature=full.temperature)
    stop = replace(greedy, stop=full.stop)
    out: list[Variant] = [
        ("plain", plain_prompt, greedy, False),
        ("+few-shot", shipped, greedy, False),
        ("+stop", shipped, stop, False),
        ("+grammar (ship)", shipped, None, False),
        # a step tried and not shipped: a repeat penalty on top of the shipped settings
        ("ship+penalty", shipped, None, False),
    ]
    if with_docs:
        out.append(("ship+docs", shipped, None, True))
    return out


#: The repeat penalty tried (the shipped prompt has none; see its front matter).
PENALTY_VALUE = 1.15


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--crashes", type=int, default=50, help="crashes to draft (default 50)")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--only", help="run only the variant of this name")
    ap.add_argument("--show", action="store_true", help="print every draft and verdict")
    ap.add_argument("--quick", action="store_true", help="CI: the shipped variant, 2 crashes")
    args = ap.parse_args()
    if args.quick:
        args.crashes, args.only = 2, "+grammar (ship)"

    everything = corpus_crashes(args.corpus, 60 if args.quick else None)
    types = collections.Counter(c.type for c in everything)
    covered = sum(n for t, n in types.items() if t in SEVERITY)
    crashes = spread(everything, args.crashes)
    kb = open_knowledge()
    backend = make_backend(LLMConfig(n_ctx=2048, temperature=0.0), log=False)
    backend.load()
    shipped = load_prompt(PROMPT_NAME)
    print(
        f"{len(crashes)} crashes of {len(everything)} ({len(types)} crash types); model "
        f"{backend.model_name}; knowledge base: {'yes' if kb else 'no'}"
    )
    print(
        f"severity table: {covered}/{sum(types.values())} crashes "
        f"({100 * covered / sum(types.values()):.0f}%), "
        f"{sum(1 for t in types if t in SEVERITY)}/{len(types)} types"
    )
    missing = sorted(t for t in types if t not in SEVERITY)
    if missing:
        print(f"  types without a row: {', '.join(missing)}")
    print()
    header = (
        f"{'variant':<16} {'accepted':>9} {'misleading shown':>17} {'invented shown':>15} "
        f"{'invented raw':>13} {'first tok s':>12} {'total s':>8}"
    )
    print(header)
    for name, prompt, sampling, docs in variants(shipped, kb is not None):
        if args.only and name != args.only:
            continue
        accepted = misleading = invented_shown = invented_raw = 0
        first = total = 0.0
        reasons: collections.Counter[str] = collections.Counter()
        for crash in crashes:
            rating = severity_of(crash.type, crash.panicked)
            refs = crash_knowledge(crash, kb).docs if docs else []
            how = sampling
            if name == "ship+penalty":
                how = replace(
                    sampling_of(prompt, fact_lines(crash, rating)), repeat_penalty=PENALTY_VALUE
                )
            draft = draft_summary(crash, rating, backend, refs, sampling=how, prompt=prompt)
            first += draft.stats.first_token_s
            total += draft.stats.total_s
            invented_raw += len(draft.verdict.unsupported)
            if draft.verdict.ok:
                accepted += 1
                # Audit what is shown against the report alone (not the prompt's lines).
                messages = summary_messages(crash, rating, refs, prompt)
                audit = check_draft(draft.text, summary_evidence(crash, rating, messages))
                misleading += not audit.ok
                invented_shown += len(audit.unsupported)
            for problem in draft.verdict.problems:
                reasons[re.sub(r"[(`\"].*", "", problem).strip()] += 1
            if args.show:
                mark = "OK " if draft.verdict.ok else "NO "
                print(f"  {mark}{crash.title[:70]}\n     {draft.raw.strip()[:300]!r}")
                if not draft.verdict.ok:
                    print(f"     -> {'; '.join(draft.verdict.problems)}")
        n = len(crashes)
        print(
            f"{name:<16} {100 * accepted / n:>8.0f}% {100 * misleading / n:>16.0f}% "
            f"{invented_shown:>15} {invented_raw:>13} {first / n:>12.2f} {total / n:>8.2f}"
        )
        top = ", ".join(f"{r} {c}" for r, c in reasons.most_common(5))
        print(f"{'':<16} refused for: {top or '-'}")
    sample = crashes[: min(1 if args.quick else 10, len(crashes))]
    t0 = time.perf_counter()
    for crash in sample:
        draft_report(crash, backend, None, kb=kb, use_kb=kb is not None)
    per_report = (time.perf_counter() - t0) / len(sample)
    print(f"\nwhole report (shipped configuration, {len(sample)} crashes): {per_report:.2f} s each")


if __name__ == "__main__":
    main()
