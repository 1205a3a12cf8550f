"""Benchmark: root-cause explanation, from logs and from vmcores.

    PYTHONPATH=. .venv/bin/python benchmarks/explain.py [--quick]

Prints:

- **decodecode agreement**: every distinct ``Code:`` line of the dev corpus, tests/data
  and the fixtures' consoles decoded by kassist and by the kernel's scripts/decodecode
  (objdump); the faulting instruction compared, mnemonic and operands. Target 100%
  (the explained disagreements are counted apart). decodecode's answers are cached by
  tests/decodecode.py; ``--quick`` uses only the lines already cached.
- **member named right** on the vmcore fixtures whose source names the member that
  faulted (``item->id``, ``conn->item->id``): target 100%.
- **time per log** (triage's report in, fault analysis and assessment out, no DWARF):
  median over the dev corpus; target <= 50 ms. Baseline in the same run: triage alone.
- **time per vmcore** (open with DWARF, explain): target <= 5 s.
- **assessment on the dev corpus**: the share of each verdict, and whether every
  "actionable: yes" has its access, allocation and free stacks.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from assistant.rootcause.assess import assess, maintainer_sections  # noqa: E402
from assistant.rootcause.code import CodeError, decode, parse_code  # noqa: E402
from assistant.rootcause.fault import analyse_report  # noqa: E402
from assistant.triage import triage_lines  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "syzkaller-linux-reports.dev.jsonl"
GUILTY = CORPUS.with_name("syzkaller-linux-guilty.dev.jsonl")

if TYPE_CHECKING:
    from assistant.knowledge import KnowledgeBase


def _split(text: str | None) -> tuple[str, str] | None:
    import re

    if text is None:
        return None
    text = re.sub(r"\s+(#|//|<).*$", "", text.strip())
    mnemonic, _, operands = text.replace("\t", " ").partition(" ")
    return mnemonic, " ".join(operands.split())


def agreement(quick: bool) -> None:
    from tests.decodecode import Decodecode
    from tests.rootcause_corpus import code_cases, fixture_consoles
    from tests.vmcore_fixture import _cache_root

    cases = [c for c in code_cases(fixture_consoles(_cache_root())) if c.arch]
    dd = Decodecode()
    agree = explained = disagree = skipped = 0
    for case in cases:
        assert case.arch is not None
        if quick and f"{case.arch}|{case.line}" not in dd.answers:
            skipped += 1
            continue
        ref = dd.reference(case.line, case.arch).text
        try:
            mine: str | None = decode(parse_code(case.tokens, case.arch)).faulting.text
        except CodeError:
            mine = None
        if (ref in (None, "(bad)") and mine is None) or (_split(ref) == _split(mine)):
            agree += 1
        elif ref == "..." or (mine is None and "<" not in case.tokens and "(" not in case.tokens):
            explained += 1
        else:
            disagree += 1
    dd.save()
    total = agree + explained + disagree
    if not total:
        print(f"decodecode agreement: not measured ({skipped} lines, none cached yet: "
              "tests/test_rootcause_decode.py caches decodecode's answers)")  # fmt: skip
        return
    print(f"decodecode agreement: {agree}/{total} = {100 * agree / max(total, 1):.1f}% "
          f"({explained} explained: objdump zero elision or no marker; {disagree} other; "
          f"{skipped} not cached, skipped in --quick)")  # fmt: skip


def logs(quick: bool) -> None:
    entries = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    if quick:
        entries = entries[:80]
    t0 = time.perf_counter()
    import capstone  # noqa: F401

    print(f"one-time per process: the disassembler's import (capstone) "
          f"{(time.perf_counter() - t0) * 1000:.0f} ms, paid by the first crash with a "
          "Code: line (the per-log figures below are after it)")  # fmt: skip
    kb = _knowledge()
    if kb is not None:
        t0 = time.perf_counter()
        kb.maintainers("Makefile")
        print(f"one-time per process: MAINTAINERS' patterns loaded "
              f"{(time.perf_counter() - t0) * 1000:.0f} ms (the first lookup)")  # fmt: skip
    triage_ms, explain_ms = [], []
    slowest = (0.0, "")
    verdicts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    bad_actionable = 0
    for entry in entries:
        t0 = time.perf_counter()
        result = triage_lines(entry["log"].splitlines(), source="bench")
        t1 = time.perf_counter()
        for crash in result.crashes[:1]:
            fault = analyse_report(crash.report)
            a = assess(crash, fault, maintainer_sections(crash, kb))
            explain_ms.append((time.perf_counter() - t1) * 1000)
            slowest = max(slowest, (explain_ms[-1], f"{entry['id']} ({len(crash.report)} B)"))
            verdicts["actionable"][a.actionable.verdict] += 1
            verdicts["trigger"][a.trigger.verdict.split(" (")[0]] += 1
            verdicts["impact"][a.impact.verdict] += 1
            f = crash.crash_facts()
            if a.actionable.verdict == "yes" and not (
                crash.call_trace and f.allocated_by and (f.freed_by or "FREE" not in crash.type)
            ):
                bad_actionable += 1
        triage_ms.append((t1 - t0) * 1000)
    n = len(explain_ms)
    print(f"time per log (fault analysis + assessment, no DWARF): median "
          f"{statistics.median(explain_ms):.2f} ms, max {slowest[0]:.1f} ms (log {slowest[1]}) "
          f"over {n} "
          f"crashes; baseline triage alone median {statistics.median(triage_ms):.2f} ms "
          f"(ratio {statistics.median(explain_ms) / statistics.median(triage_ms):.2f}); "
          "target <= 50 ms")  # fmt: skip
    for what, counter in verdicts.items():
        shares = ", ".join(f"{v} {100 * c / n:.0f}%" for v, c in counter.most_common())
        print(f"assessment {what} ({n} crashes): {shares}")
    print(f"actionable without its three stacks: {bad_actionable} (must be 0)")
    guilty(kb)


def _knowledge() -> KnowledgeBase | None:
    from assistant.knowledge import try_open

    kb = try_open()
    if kb is None:
        print("no knowledge base (kassist kb build): actionable is never 'yes' below")
    return kb


def guilty(kb: KnowledgeBase | None) -> None:
    """Actionable on the reports with file:line (MAINTAINERS is looked up by file)."""
    counter: collections.Counter[str] = collections.Counter()
    for line in GUILTY.read_text().splitlines():
        entry = json.loads(line)
        for crash in triage_lines(entry["log"].splitlines(), source="bench").crashes[:1]:
            counter[assess(crash, None, maintainer_sections(crash, kb)).actionable.verdict] += 1
    n = sum(counter.values())
    shares = ", ".join(f"{v} {c} ({100 * c / n:.0f}%)" for v, c in counter.most_common())
    print(f"assessment actionable with the knowledge base on the {n} reports with "
          f"file:line ({GUILTY.name}): {shares}")  # fmt: skip


def vmcores(quick: bool) -> None:
    from assistant.rootcause.dump import explain_vmcore
    from assistant.vmcore import open_target
    from tests.vmcore_fixture import _cache_root

    cached = sorted(_cache_root().glob("*/kinds/kinds.json"))
    if not cached:
        print("vmcore: no fixture built (tests/fixtures/vmcore/build.sh): skipped")
        return
    kinds_dir = cached[-1].parent
    base = kinds_dir.parent
    meta = json.loads(cached[-1].read_text())
    modules = [str(kinds_dir / m) for m in meta["modules"].values()]
    # (dump, modules, expected pointer, member): known from the module sources.
    wanted = [
        (base / "vmcore", [], "item", "id"),
        (kinds_dir / "kassist-uaf" / "vmcore", modules, "conn->item", "id"),
    ]
    if not quick:
        wanted += [(kinds_dir / k / "vmcore", modules, None, None) for k in meta["kinds"]]
    right = named = 0
    seconds = []
    for dump, mods, pointer, member in wanted:
        t0 = time.perf_counter()
        target = open_target(str(dump), str(base / "vmlinux"), str(base / "debug"), mods)
        e = explain_vmcore(target)
        seconds.append(time.perf_counter() - t0)
        if pointer is not None:
            named += 1
            right += bool(e.member and (e.member.pointer, e.member.member) == (pointer, member))
    print(f"member named right on the fixtures: {right}/{named}")
    median = statistics.median(seconds)
    print(f"time per vmcore (open with DWARF + explain): median {median:.2f} s, "
          f"max {max(seconds):.2f} s over {len(seconds)} dumps; target <= 5 s "
          "(debug cache warm: a kernel build's DWARF is uncompressed once)")  # fmt: skip
    logs_with_dwarf(base, kinds_dir, [] if quick else list(meta["kinds"]))


def logs_with_dwarf(base: Path, kinds_dir: Path, kinds: list[str]) -> None:
    """The fixtures' console logs with the -dbg vmlinux and the modules' .ko, no dump."""
    from assistant.rootcause.debuginfo import explain_log, open_log_debug
    from assistant.triage import triage_path

    # (console log, debug dir, expected pointer, member): known from the module sources.
    wanted: list[tuple[Path, Path, str | None, str | None]] = [
        (base / "console.log", base / "debug", "item", "id"),
        (kinds_dir / "kassist-uaf" / "console.log", kinds_dir, "conn->item", "id"),
    ]
    wanted += [(kinds_dir / k / "console.log", kinds_dir, None, None) for k in kinds]
    right = named = located = 0
    opened, explained = [], []
    for log, debug_dir, pointer, member in wanted:
        crashes = triage_path(str(log)).crashes[:1]
        if not crashes:
            continue
        t0 = time.perf_counter()
        debug = open_log_debug(crashes, str(base / "vmlinux"), str(debug_dir))
        t1 = time.perf_counter()
        found = explain_log(crashes[0], analyse_report(crashes[0].report), debug)
        opened.append(t1 - t0)
        explained.append(time.perf_counter() - t1)
        located += found.location is not None
        if pointer is not None:
            named += 1
            right += bool(found.member and (found.member.pointer, found.member.member) == (
                pointer, member))  # fmt: skip
    print(f"from a log with DWARF (no dump): member named right {right}/{named}, file:line "
          f"found {located}/{len(opened)}; open the debug files median "
          f"{statistics.median(opened):.2f} s, explain median {statistics.median(explained):.2f} s "
          f"(max {max(explained):.2f} s)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer logs and dumps (CI)")
    args = parser.parse_args()
    with open("/proc/loadavg") as fh:
        print(f"load average: {fh.read().split()[0]}")
    logs(args.quick)
    agreement(args.quick)
    vmcores(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
