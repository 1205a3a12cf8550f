#!/usr/bin/env python3
"""How well ``kassist crashes similar`` links the same bug, on the dev corpus.

Every log of ``../shared/corpus`` (syzkaller's report tests, 465 + 47 symbolised) is
triaged; its first crash gives the features :mod:`assistant.triage.similar` compares.
Logs are split by a hash of their title: titles whose hash falls in the held-out part
were never looked at while tuning (frames compared, boilerplate, cut). In each part,
all crashes are clustered (average linkage, cut 0.3) and two rates are counted:

- **same title linked**: pairs of logs with the same syzkaller title (not a
  ``corrupted`` one, whose title names no bug) in one cluster; target >= 95%;
- **unrelated linked**: pairs with different titles, different guilty locations (the
  guilty file where both reports are symbolised, else the guilty frame) and different
  allocation sites, in one cluster; target <= 1%.

    PYTHONPATH=. .venv/bin/python benchmarks/crash_similarity.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from itertools import combinations
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"
#: A title whose hash's first byte is below this (of 256) is held out.
HELD_OUT = 64


def held_out(title: str) -> bool:
    """Tell whether a title belongs to the held-out part (a quarter, by hash)."""
    return hashlib.sha256(title.encode()).digest()[0] < HELD_OUT


def load(limit: int | None) -> list[dict[str, object]]:
    """Return the corpus' crash logs with their expected titles."""
    rows: list[dict[str, object]] = []
    for name in ("syzkaller-linux-reports.dev.jsonl", "syzkaller-linux-guilty.dev.jsonl"):
        path = CORPUS / name
        if not path.exists():
            sys.exit(f"crash_similarity: {path} is missing (the shared corpus)")
        for line in path.read_text().splitlines():
            doc = json.loads(line)
            if doc.get("title") and doc.get("expect_crash", True) is not False:
                rows.append(doc)
    return rows[:limit] if limit else rows


def main() -> None:
    """Triage the corpus, cluster each part, print the rates."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI: the first 150 logs")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    from assistant.triage import triage_lines
    from assistant.triage.similar import CUT, clusters, features

    t0 = time.monotonic()
    rows = load(150 if args.quick else None)
    items = []
    for doc in rows:
        found = triage_lines(str(doc["log"]).split("\n"), "corpus").crashes
        if not found:
            continue
        crash = found[0]
        title = str(doc["title"])
        items.append((title, crash, features(crash)))
    print(f"corpus: {len(items)} crashes triaged in {time.monotonic() - t0:.1f} s; cut {CUT}")
    for part, keep in (("dev", False), ("held-out", True)):
        chosen = [x for x in items if held_out(x[0]) == keep]
        labels = clusters([f for _, _, f in chosen])
        same = same_linked = other = other_linked = 0
        for (i, a), (j, b) in combinations(enumerate(chosen), 2):
            linked = labels[i] == labels[j]
            ta, ca, fa = a
            tb, cb, fb = b
            if ta == tb:
                if "corrupted" in ta or ca.corrupted or cb.corrupted:
                    continue
                same += 1
                same_linked += linked
                continue
            where_a = fa.guilty_file if fa.guilty_file and fb.guilty_file else ca.frame
            where_b = fb.guilty_file if fa.guilty_file and fb.guilty_file else cb.frame
            if where_a == where_b or (fa.alloc and fa.alloc == fb.alloc):
                continue
            other += 1
            other_linked += linked
        print(f"{part:9s} {len(chosen):4d} crashes  same title linked {same_linked}/{same}"
              f" = {100 * same_linked / max(same, 1):.1f}% (target >= 95%)  "
              f"unrelated linked {other_linked}/{other} = {100 * other_linked / max(other, 1):.2f}%"
              f" (target <= 1%)")  # fmt: skip


if __name__ == "__main__":
    main()
