"""How good are the reports' "What happened" paragraphs, with each model, side by side?

Over crashes of the dev corpus (``../shared/corpus`` beside the checkout, or
``--corpus DIR``), every installed model (SmolLM2-135M, Qwen2.5-Coder 0.5B and 1.5B)
writes each crash's paragraph through the one checked-draft pipeline. The crashes are
split by a hash of their corpus id: the *dev* part (4 in 5) is what the prompt was tuned
on, the *held-out* part (1 in 5) was never looked at while tuning; both are reported.

Per model and part:

- ``shown``: paragraphs shown (the rest withheld; target >= 90% with the default model);
- ``sent kept/dropped``: sentences shown and dropped by the checks;
- ``misleading``: shown sentences an independent audit refuses — checked again against
  the report's own text alone (not the facts kassist derived from it): a name or number
  the report lacks, another kind of crash, another crashing function, a guessed cause
  (target 0);
- the reader's check on what is shown: sentences that merely restate the title, and
  slips of grammar (a doubled word, an article before a verb, a repeated verb,
  "in corrupted"); and the same on the raw drafts, to show what the checks remove;
- time to first token and per paragraph, generation rate, and the time of a whole
  report (``draft_report``) for a few crashes (target <= 6 s with the default model).

    nice .venv/bin/python benchmarks/draft_quality.py --crashes 10        # per part
    .venv/bin/python benchmarks/draft_quality.py --quick    # CI: 2 crashes, default model,
                                                            # no whole report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assistant.config import LLMConfig
from assistant.drafters.assessment import severity_of
from assistant.drafters.bug_report import draft_report
from assistant.drafters.checker import (
    Evidence,
    check_draft,
    grammar_slips,
    restates_title,
    split_sentences,
)
from assistant.drafters.summary import draft_happened
from assistant.llm import make_backend
from assistant.llm.errors import LLMUnavailable
from assistant.llm.models import CATALOGUE, DEFAULT_MODEL, cached_path
from assistant.triage.engine import triage_lines
from assistant.triage.model import Crash

#: The dev corpus: ``shared/corpus`` beside the checkout.
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
#: One crash in this many is held out (never tuned on).
HELD_OUT_EVERY = 5
#: Logs read per corpus file in the quick mode (each part gets a crash from them).
QUICK_LOGS = 12
#: The models compared, smallest first.
MODELS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


def corpus_crashes(corpus: Path, logs: int | None = None) -> list[tuple[str, Crash]]:
    """Return (corpus id, first crash) for every corpus log that has one, in file order
    (of the first ``logs`` logs of each file, when given: the quick mode's)."""
    out = []
    for name in ("syzkaller-linux-reports.dev.jsonl", "syzkaller-linux-guilty.dev.jsonl"):
        for line in (corpus / name).read_text(encoding="utf-8").splitlines()[:logs]:
            row = json.loads(line)
            crashes = triage_lines(row["log"].splitlines(), f"{name}:{row['id']}").crashes
            if crashes:
                out.append((f"{name}:{row['id']}", crashes[0]))
    return out


def held_out(ident: str) -> bool:
    """Tell whether a corpus crash belongs to the held-out part (a stable hash of its id)."""
    return int(hashlib.sha256(ident.encode()).hexdigest(), 16) % HELD_OUT_EVERY == 0


def spread(crashes: list[Crash], n: int) -> list[Crash]:
    """Pick ``n`` crashes spread evenly over the list (every family gets its share)."""
    if n >= len(crashes):
        return crashes
    step = len(crashes) / n
    return [crashes[int(i * step)] for i in range(n)]


# The report's own words for the context a sentence may state (read here, apart from
# kassist's parsed facts): the taint line, the bad access's direction, lockdep's two locks.
_REPORT_TAINTED = re.compile(r"\bTainted: ")
_REPORT_ACCESS = re.compile(r"^\s*(?:BUG: \w+: .*\n\s*)?(Read|Write) of size", re.M)
_REPORT_WANTED = re.compile(r"is trying to acquire(?: lock)?:\n\s*(?:[0-9a-f]+\s+)?\((.+?)\)\{")
_REPORT_WORK = re.compile(r"^Workqueue: \S+ (\S+)", re.M)
_REPORT_HELD = re.compile(r"already holding lock:\n\s*(?:[0-9a-f]+\s+)?\((.+?)\)\{")


def contradictions(sentence: str, crash: Crash) -> list[str]:
    """Return what a sentence says against the report's text: the taint, the panic, the
    access's direction, the roles of lockdep's two locks, a kworker's work item."""
    out = []
    low = sentence.lower()
    tainted = _REPORT_TAINTED.search(crash.report) is not None
    denies = re.search(r"\bnot tainted\b", low) is not None
    if "tainted" in low and denies == tainted:
        out.append("contradicts the report's taint line")
    # "did not panic", "without a panic" deny it; "not tainted and panicked" does not.
    denied = re.search(r"\b(?:not|no|never|without)\s+(?:a\s+)?panic", low) is not None
    if "panic" in low and denied == crash.panicked:
        out.append("contradicts whether the kernel panicked")
    if m := _REPORT_ACCESS.search(crash.report):
        other = r"\b(?:wrote|writes?|writing)\b" if m.group(1) == "Read" else r"\bread(?:s|ing)?\b"
        if re.search(other, low):
            out.append(f"says the other direction, the report says {m.group(1)}")
    wanted = _REPORT_WANTED.search(crash.report)
    held = _REPORT_HELD.search(crash.report)
    if wanted and re.search(
        r"\b(?:hold|holds|held|holding)\s+" + re.escape(wanted.group(1)), sentence
    ):
        out.append("says the task held the lock it was trying to take")
    if held and re.search(
        r"\b(?:take|took|taking|acquir\w+)\s+" + re.escape(held.group(1)), sentence
    ):
        out.append("says the task took the lock it already held")
    work = _REPORT_WORK.search(crash.report)
    if work and "workqueue" in low and work.group(1) not in sentence:
        out.append(f"names other work than the report's {work.group(1)}")
    return out


def audit(sentence: str, crash: Crash) -> list[str]:
    """Check a shown sentence against the report's own text alone (the independent judge)."""
    rating = severity_of(crash.type, crash.panicked)
    evidence = Evidence(
        text="\n".join([crash.title, crash.report, rating.reason]),
        severity=rating.severity,
        kind=crash.title,
        function=crash.frame,
        kernel=crash.kernel.release,
        min_words=1,
        max_words=200,
        allow_causes=False,
    )
    return check_draft(sentence, evidence).problems + contradictions(sentence, crash)


@dataclass
class Tally:
    """One model's figures on one part of the corpus."""

    drafts: int = 0
    shown: int = 0
    kept: int = 0
    dropped: int = 0
    misleading: list[str] = field(default_factory=list)
    restated: int = 0
    slips: int = 0
    raw_restated: int = 0
    raw_slips: int = 0
    first: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    tokens: int = 0

    def add(self, crash: Crash, backend: object, show: bool) -> None:
        rating = severity_of(crash.type, crash.panicked)
        draft = draft_happened(crash, rating, backend)  # type: ignore[arg-type]
        self.drafts += 1
        self.first.append(draft.stats.first_token_s)
        self.total.append(draft.stats.total_s)
        self.tokens += draft.stats.completion_tokens
        table = [crash.task.comm or "", crash.kernel.release or ""]
        for sentence in split_sentences(draft.raw):
            self.raw_restated += restates_title(sentence, crash.title, table)
            self.raw_slips += bool(grammar_slips(sentence))
        self.dropped += len(draft.dropped)
        if draft.text is not None:
            self.shown += 1
            self.kept += len(draft.kept)
            for sentence in draft.kept:
                problems = audit(sentence, crash)
                if problems:
                    self.misleading.append(f"{sentence} -> {'; '.join(problems)}")
                self.restated += restates_title(sentence, crash.title, table)
                self.slips += bool(grammar_slips(sentence))
        if show:
            print(f"    {crash.title[:72]}\n      raw:   {draft.raw.strip()[:400]!r}")
            print(f"      shown: {draft.text!r}  {draft.why}")
            for sentence, why in draft.dropped:
                print(f"      dropped: {sentence!r} -> {why}")

    def row(self, label: str) -> str:
        n = max(self.drafts, 1)
        rate = self.tokens / max(sum(self.total), 1e-9)
        first, total = statistics.median(self.first or [0]), statistics.median(self.total or [0])
        return (
            f"  {label:<9} {self.shown:>3}/{self.drafts:<3} {100 * self.shown / n:>4.0f}%"
            f" {self.kept:>5}/{self.dropped:<5} {len(self.misleading):>10}"
            f" {self.restated:>4}/{self.slips:<4} {self.raw_restated:>4}/{self.raw_slips:<4}"
            f" {first:>7.2f} {total:>7.2f}"
            f" {rate:>6.1f}"
        )


HEADER = (
    f"  {'part':<9} {'shown':>9} {'sent kept/drop':>11} {'misleading':>10}"
    f" {'restated/slips shown':>9} {'raw':>9} {'1st tok':>7} {'total s':>7} {'tok/s':>6}"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--crashes", type=int, default=10, help="crashes per part (default 10)")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    ap.add_argument("--reports", type=int, default=3, help="whole reports timed per model")
    ap.add_argument("--show", action="store_true", help="print every draft")
    ap.add_argument("--parts", default="dev,held-out", help="the parts drafted (comma-separated)")
    ap.add_argument(
        "--quick", action="store_true", help="2 crashes, the default model, no whole report (CI)"
    )
    args = ap.parse_args()
    os.environ.setdefault("XDG_STATE_HOME", tempfile.mkdtemp(prefix="kassist-bench-"))
    if args.quick:
        args.crashes, args.models, args.reports = 1, DEFAULT_MODEL, 0

    # quick: enough logs for one crash of each part, not the whole corpus's triage
    everything = corpus_crashes(args.corpus, QUICK_LOGS if args.quick else None)
    parts = {
        "dev": spread([c for i, c in everything if not held_out(i)], args.crashes),
        "held-out": spread([c for i, c in everything if held_out(i)], args.crashes),
    }
    print(
        f"{len(everything)} corpus crashes; {len(parts['dev'])} dev and "
        f"{len(parts['held-out'])} held-out drafted per model; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(HEADER)
    for name in args.models.split(","):
        if cached_path(CATALOGUE[name]) is None:
            print(f"{name}: not installed (kassist models install {name}), skipped")
            continue
        try:
            backend = make_backend(LLMConfig(model=name, n_ctx=4096, temperature=0.0), log=False)
            backend.load()
        except LLMUnavailable as exc:
            print(f"{name}: {exc.one_line()}, skipped")
            continue
        print(f"{name}:")
        misleading: list[str] = []
        for label, crashes in parts.items():
            if label not in args.parts.split(","):
                continue
            tally = Tally()
            for crash in crashes:
                tally.add(crash, backend, args.show)
            print(tally.row(label))
            misleading += tally.misleading
        for line in misleading[:5]:
            print(f"    misleading: {line[:200]}")
        if sample := parts["held-out"][: args.reports]:
            t0 = time.perf_counter()
            for crash in sample:
                draft_report(crash, backend, None, use_kb=False)
            per = (time.perf_counter() - t0) / len(sample)
            print(f"  whole report ({len(sample)} held-out crashes): {per:.2f} s each")
        del backend
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
