#!/usr/bin/env python3
"""Write the golden triage corpus from the dev corpus and the logs of ``tests/data``.

    PYTHONPATH=. .venv/bin/python tests/data/golden/make_golden.py [--corpus DIR]

One file per log: ``syzkaller-report-<id>.log`` (syzkaller's
``pkg/report/testdata/linux/report/<id>``), ``syzkaller-guilty-<id>.log``,
``data-<name>.log`` and ``data-kernel-<name>.log`` (``tests/data/kernel``: real kernels'
consoles). The headers are kassist's answers when the file was written:
review the diff before committing it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

from tests.golden import write  # noqa: E402


def main() -> None:
    """Write one golden file per log."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "corpus")
    args = ap.parse_args()
    count = 0
    for kind in ("reports", "guilty"):
        path = args.corpus / f"syzkaller-linux-{kind}.dev.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            name = "report" if kind == "reports" else kind
            write(HERE / f"syzkaller-{name}-{row['id']}.log", row["log"])
            count += 1
    data = ROOT / "tests" / "data"
    for log in sorted(data.glob("*.log")):
        write(HERE / f"data-{log.stem}.log", log.read_text(encoding="utf-8"))
        count += 1
    for log in sorted((data / "kernel").glob("*.log")):
        write(HERE / f"data-kernel-{log.stem}.log", log.read_text(encoding="utf-8"))
        count += 1
    for line in (data / "syzkaller-sample.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        write(HERE / f"data-sample-{row['id']}.log", row["log"])
        count += 1
    print(f"make_golden: {count} files in {HERE}")


if __name__ == "__main__":
    main()
