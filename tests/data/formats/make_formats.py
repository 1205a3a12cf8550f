#!/usr/bin/env python3
"""Write the format samples: real console logs re-decorated as production tools print them.

The originals are real logs: kassist's ``tests/data`` logs and syzkaller's
``pkg/report/testdata/linux/report`` logs from the shared corpus (copied verbatim into
``originals/``). Each format of :mod:`tests.decorate` decorates each original into
``<format>/<case>.log``. ``tests/test_triage_formats.py`` checks that the samples are
what this script writes and that they triage like their originals.

    PYTHONPATH=. .venv/bin/python tests/data/formats/make_formats.py [--corpus PATH]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from tests.decorate import FORMATS, applies, decorate  # noqa: E402

#: case name -> (where the original comes from, its id there)
CASES: dict[str, tuple[str, str]] = {
    "kasan-uaf-ip6_send_skb": ("data", "kasan-uaf-ip6_send_skb.log"),
    "gpf-sg_remove_request": ("data", "gpf-sg_remove_request.log"),
    "hung-rtnl_lock": ("data", "hung-rtnl_lock.log"),
    "oops-null-deref-debian-6.1": ("data", "oops-null-deref-debian-6.1.log"),
    "arm64-nested-lock-655": ("sample", "655"),
    "ppc64-paging-431": ("corpus", "431"),
    "arm-paging-46": ("corpus", "46"),
    "arm64-odebug-525": ("corpus", "525"),
    "locks-held-hung-349": ("corpus", "349"),
    "caller-ids-sysrq-337": ("corpus", "337"),
}
#: The seed of a case's random choices (wrap width, lines chosen).
SEED = 1


def _row(path: Path, ident: str) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["id"] == ident:
            return str(row["log"])
    raise SystemExit(f"make_formats: no log {ident} in {path}")


def original(kind: str, ident: str, corpus: Path) -> str:
    """Read one original log."""
    if kind == "data":
        return (ROOT / "tests" / "data" / ident).read_text(encoding="utf-8")
    if kind == "sample":
        return _row(ROOT / "tests" / "data" / "syzkaller-sample.jsonl", ident)
    return _row(corpus, ident)


def main() -> None:
    """Write ``originals/`` and one folder per format."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = ROOT.parent / "shared" / "corpus" / "syzkaller-linux-reports.dev.jsonl"
    ap.add_argument("--corpus", type=Path, default=default)
    args = ap.parse_args()
    originals = HERE / "originals"
    originals.mkdir(exist_ok=True)
    for case, (kind, ident) in CASES.items():
        path = originals / f"{case}.log"
        if kind == "corpus" and not args.corpus.exists():
            if not path.exists():
                raise SystemExit(f"make_formats: the corpus is missing ({args.corpus})")
            continue  # keep the copy made before
        path.write_text(original(kind, ident, args.corpus), encoding="utf-8")
    for fmt in FORMATS:
        folder = HERE / fmt
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for case in CASES:
            log = (originals / f"{case}.log").read_text(encoding="utf-8")
            if applies(fmt, log):
                text = decorate(log, fmt, SEED).text
                (folder / f"{case}.log").write_bytes(text.encode("utf-8"))
    print(f"make_formats: {len(CASES)} originals, {len(FORMATS)} formats in {HERE}")


if __name__ == "__main__":
    main()
