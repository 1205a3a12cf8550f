#!/usr/bin/env python3
"""Measure kassist's crash triage against syzkaller's answers on real console logs.

Runs ``kassist triage --format jsonl`` (the real CLI, in one subprocess) over the
logs of a syzkaller-format corpus written to temporary files, and compares the
first crash of each log with the expected title, alternative titles, type and
corruption flag; then the guilty file on the ``...guilty...`` corpus. Prints the
figures and the misses.

    PYTHONPATH=. .venv/bin/python benchmarks/corpus_eval.py \\
        [--corpus ../shared/corpus/syzkaller-linux-reports.dev.jsonl] \\
        [--guilty ../shared/corpus/syzkaller-linux-guilty.dev.jsonl] [--misses N] \\
        [--decorate [FORMAT ...]] [--limit N] [--quick]

``--decorate`` runs the whole corpus again under each production decoration of
``tests/decorate.py`` (syslog, journald, rsyslog, dmesg flags, kmsg records, journal
JSON/export, tabs, U+00A0, CRLF, mail wrapping, unreliable frames, another CPU's lines,
all of them mixed line by line) and prints a table: per format, the logs it applies to,
the exact titles against syzkaller's, and the titles and frames unchanged from the
undecorated run.

The corpus files are JSON lines with at least ``id``, ``log``, ``expect_crash``,
``title``, ``alt_titles``, ``type`` and ``corrupted`` (guilty: ``guilty_file``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"


def load(path: Path) -> list[dict[str, Any]]:
    """Read a JSON-lines corpus."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_cli(rows: list[dict[str, Any]], workdir: Path) -> list[dict[str, Any]]:
    """Write each log to a file and triage them all in one ``kassist triage`` run."""
    paths = []
    for i, row in enumerate(rows):
        p = workdir / f"{i:05d}.log"
        p.write_text(row["log"], encoding="utf-8", errors="surrogateescape")
        paths.append(str(p))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "assistant", "triage", "--format", "jsonl", *paths],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    docs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    by_source = {d["source"]: d for d in docs}
    if proc.returncode not in (0, 1) or not docs:
        sys.exit(f"corpus_eval: kassist failed ({proc.returncode}): {proc.stderr.strip()[:500]}")
    empty: dict[str, Any] = {"crashes": [], "events": []}
    return [by_source.get(p, empty) for p in paths]


def pct(n: int, d: int) -> str:
    """Format a ratio as ``n/d = x.y%``."""
    return f"{n}/{d} = {100.0 * n / d:.1f}%" if d else "n/a"


def _agreements(r: dict[str, Any], c: dict[str, Any], wrong: list[str]) -> list[str]:
    """Return what a found crash agrees on with its corpus row (``exact``, ``either``,
    ``type``, ``corrupted``); append a line to ``wrong`` for each disagreement shown."""
    agree = []
    if c["title"] == r["title"]:
        agree.append("exact")
    else:
        wrong.append(f"  {r['id']}: title {c['title']!r}, expected {r['title']!r}")
    if {c["title"], *c["alt_titles"]} & {r["title"], *(r.get("alt_titles") or [])}:
        agree.append("either")
    want_type = r["type"] or "UNKNOWN"
    if c["type"] == want_type:
        agree.append("type")
    else:
        wrong.append(f"  {r['id']}: type {c['type']}, expected {want_type}")
    if bool(c["corrupted"]) == bool(r["corrupted"]):
        agree.append("corrupted")
    else:
        wrong.append(
            f"  {r['id']}: corrupted={c['corrupted']} ({c['corrupted_reason']}),"
            f" expected {r['corrupted']}"
        )
    return agree


def evaluate_reports(rows: list[dict[str, Any]], docs: list[dict[str, Any]], misses: int) -> None:
    """Print recall, true negatives, title, type and corruption agreement."""
    pos = [(r, d) for r, d in zip(rows, docs, strict=True) if r["expect_crash"]]
    neg = [(r, d) for r, d in zip(rows, docs, strict=True) if not r["expect_crash"]]
    agree: Counter[str] = Counter()
    wrong: list[str] = []
    for r, d in pos:
        if not d["crashes"]:
            wrong.append(f"  {r['id']}: missed; expected {r['title']!r}")
            continue
        agree["found"] += 1
        agree.update(_agreements(r, d["crashes"][0], wrong))
    tn = sum(1 for _, d in neg if not d["crashes"])
    for r, d in neg:
        if d["crashes"]:
            wrong.append(f"  {r['id']}: false positive {d['crashes'][0]['title']!r}")
    n = len(pos)
    print(f"logs                    {len(rows)} ({n} with a crash, {len(neg)} without)")
    print(f"crash recall            {pct(agree['found'], n)}")
    print(f"true negatives          {pct(tn, len(neg))}   (target >= 95%)")
    print(f"exact title             {pct(agree['exact'], n)}   (target >= 90%)")
    print(f"title or alt title      {pct(agree['either'], n)}")
    print(f"type agreement          {pct(agree['type'], n)}")
    print(f"corrupted agreement     {pct(agree['corrupted'], n)}   (target >= 90%)")
    if wrong and misses:
        print(f"misses (first {misses}):")
        for w in wrong[:misses]:
            print(w)


def evaluate_guilty(rows: list[dict[str, Any]], docs: list[dict[str, Any]], misses: int) -> None:
    """Print the guilty-file accuracy."""
    right = 0
    wrong = []
    for r, d in zip(rows, docs, strict=True):
        got = d["crashes"][0]["guilty_file"] if d["crashes"] else None
        if got == r["guilty_file"]:
            right += 1
        else:
            wrong.append(f"  {r['id']}: guilty {got!r}, expected {r['guilty_file']!r}")
    print(f"guilty file             {pct(right, len(rows))}   (target >= 90%)")
    for w in wrong[:misses]:
        print(w)


def decorated_table(rows: list[dict[str, Any]], work: Path, formats: list[str]) -> None:
    """Print, per decoration, exact titles and answers unchanged from the plain run."""
    sys.path.insert(0, str(ROOT))
    from tests.decorate import applies, decorate

    pos = [r for r in rows if r["expect_crash"]]
    (work / "plain").mkdir()
    plain = run_cli(pos, work / "plain")
    print(f"{'format':18} {'logs':>5} {'exact title':>12} {'unchanged':>10}")
    for fmt in formats:
        cases = [(r, p) for r, p in zip(pos, plain, strict=True) if applies(fmt, r["log"])]
        seeded = [
            {**r, "log": decorate(r["log"], fmt, int(r["id"]) if r["id"].isdigit() else 0).text}
            for r, _ in cases
        ]
        (work / fmt).mkdir()
        docs = run_cli(seeded, work / fmt)
        exact = same = 0
        for (r, p), d in zip(cases, docs, strict=True):
            got = d["crashes"][0] if d["crashes"] else None
            want = p["crashes"][0] if p["crashes"] else None
            exact += bool(got and got["title"] == r["title"])
            same += bool(
                got and want and (got["title"], got["frame"]) == (want["title"], want["frame"])
            )
        n = len(cases)
        print(f"{fmt:18} {n:5} {100.0 * exact / n:11.1f}% {100.0 * same / n:9.1f}%")


def main() -> None:
    """Parse arguments, run the CLI over the corpora and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=CORPUS / "syzkaller-linux-reports.dev.jsonl")
    ap.add_argument("--guilty", type=Path, default=CORPUS / "syzkaller-linux-guilty.dev.jsonl")
    ap.add_argument("--misses", type=int, default=40, help="how many misses to list")
    ap.add_argument(
        "--decorate",
        nargs="*",
        metavar="FORMAT",
        help="re-run the corpus under each decoration (all when none is named)",
    )
    ap.add_argument("--limit", type=int, default=0, help="only the first N logs of each (0: all)")
    ap.add_argument("--quick", action="store_true", help="CI: --limit 100 --misses 5")
    args = ap.parse_args()
    if args.quick:
        args.limit, args.misses = 100, 5
    if not any(p and p.exists() for p in (args.corpus, args.guilty)):
        raise SystemExit(f"corpus_eval: no corpus at {args.corpus} or {args.guilty}")
    if args.decorate is not None:
        sys.path.insert(0, str(ROOT))
        from tests.decorate import FORMATS

        with tempfile.TemporaryDirectory(prefix="kassist-corpus-") as tmp:
            rows = load(args.corpus)[: args.limit or None]
            decorated_table(rows, Path(tmp), args.decorate or list(FORMATS))
        return
    with tempfile.TemporaryDirectory(prefix="kassist-corpus-") as tmp:
        work = Path(tmp)
        if args.corpus and args.corpus.exists():
            rows = load(args.corpus)[: args.limit or None]
            t0 = time.monotonic()
            (work / "r").mkdir()
            docs = run_cli(rows, work / "r")
            print(f"corpus {args.corpus.name}: triaged in {time.monotonic() - t0:.1f} s")
            evaluate_reports(rows, docs, args.misses)
        if args.guilty and args.guilty.exists():
            rows = load(args.guilty)[: args.limit or None]
            (work / "g").mkdir()
            docs = run_cli(rows, work / "g")
            print(f"corpus {args.guilty.name}:")
            evaluate_guilty(rows, docs, args.misses)


if __name__ == "__main__":
    main()
