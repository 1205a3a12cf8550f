#!/usr/bin/env python3
"""Agreement of ``KnowledgeBase.recipients`` with the kernel's own ``get_maintainer.pl``.

Over the guilty files of the dev corpus (syzkaller's guilty test data, plus the
guilty files kassist's triage finds in the reports corpus) and ``--sample`` more
files of the tree chosen at random (seeded), runs the real
``scripts/get_maintainer.pl --no-git --no-rolestats -f FILE`` in a tree
extracted from the same ``linux-source-6.1`` tarball the knowledge base was
built from, and compares the lines it prints with ours, as sets (the script
orders equally specific sections at random). Prints agreement and time per file
for both (target: >= 95%).

    PYTHONPATH=. nice -n 10 .venv/bin/python benchmarks/maintainers_agreement.py [--sample 200]

The reference tree is kept in ``$XDG_CACHE_HOME/kassist/reference-tree/`` (named by the
tarball's name, size and time), so only the first run streams the whole tarball (about a
minute); ``--quick`` (CI) compares 10 corpus files and 10 random ones.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from pathlib import Path

from assistant.knowledge import open_default
from assistant.knowledge.reference import corpus_guilty_files, extract_tree, get_maintainer

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus"


def reference_tree(tarball: Path, wanted: set[str]) -> tuple[Path, bool]:
    """Return a reference tree holding ``wanted``, and whether the tarball was streamed for it.

    The tree is kept in the user's cache and extended when a run wants files it lacks.
    """
    st = tarball.stat()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    tree = cache / "kassist" / "reference-tree" / f"{tarball.name}-{st.st_size}-{st.st_mtime_ns}"
    manifest = tree / ".kassist-wanted"
    have = set(manifest.read_text().split()) if manifest.is_file() else set()
    if manifest.is_file() and wanted <= have:
        return tree, False
    fresh = tree.with_name(f"{tree.name}.new-{os.getpid()}")
    extract_tree(tarball, fresh, (wanted | have).__contains__)
    (fresh / ".kassist-wanted").write_text("\n".join(sorted(wanted | have)) + "\n")
    shutil.rmtree(tree, ignore_errors=True)
    fresh.rename(tree)
    return tree, True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guilty", type=Path, default=CORPUS / "syzkaller-linux-guilty.dev.jsonl")
    ap.add_argument("--reports", type=Path, default=CORPUS / "syzkaller-linux-reports.dev.jsonl")
    ap.add_argument("--sample", type=int, default=100, help="random files of the tree to add")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--show", type=int, default=10, help="disagreements to print")
    ap.add_argument(
        "--quick", action="store_true", help="CI: 10 corpus files, --sample 10 --show 3"
    )
    args = ap.parse_args()
    if args.quick:
        args.sample, args.show = 10, 3

    kb = open_default()
    corpus = [kb.tree_path(p) for p in corpus_guilty_files(args.guilty, args.reports)]
    corpus = corpus[:10] if args.quick else corpus
    all_files = [r[0] for r in kb._conn.execute("SELECT path FROM tree_files ORDER BY path")]
    sample = random.Random(args.seed).sample(all_files, min(args.sample, len(all_files)))
    groups = {"corpus guilty files": sorted(set(corpus)), "random tree files": sample}
    wanted = {p for paths in groups.values() for p in paths}

    started = time.monotonic()
    tree, streamed = reference_tree(Path(kb.meta["tarball"]), wanted)
    how = "extracted from" if streamed else "kept from an earlier run of"
    print(f"reference tree {tree} {how} {kb.meta['tarball']} in "
          f"{time.monotonic() - started:.0f} s (kernel {kb.kernel_version})")  # fmt: skip
    total_same = total = 0
    script_s = ours_s = 0.0
    for label, paths in groups.items():
        same = 0
        wrong = []
        for path in paths:
            t0 = time.monotonic()
            expected = get_maintainer(tree, path)
            t1 = time.monotonic()
            to, cc = kb.recipients(path)
            t2 = time.monotonic()
            script_s += t1 - t0
            ours_s += t2 - t1
            if set(expected) == set(to + cc):
                same += 1
            else:
                wrong.append((path, expected, to + cc))
        total_same += same
        total += len(paths)
        print(f"{label:<22} {same}/{len(paths)} agree ({100 * same / max(len(paths), 1):.1f}%)")
        for path, expected, got in wrong[: args.show]:
            print(f"  {path}\n    get_maintainer.pl: {expected}\n    kassist:           {got}")
    share = 100 * total_same / max(total, 1)
    print(f"maintainers agreement  {total_same}/{total} = {share:.1f}%   (target >= 95%)")
    print(f"time per file          get_maintainer.pl {1000 * script_s / max(total, 1):.0f} ms,"
          f" kassist {1000 * ours_s / max(total, 1):.1f} ms"
          f" ({script_s / max(ours_s, 1e-9):.0f}x faster)")  # fmt: skip
    return 0 if share >= 95 else 1


if __name__ == "__main__":
    sys.exit(main())
