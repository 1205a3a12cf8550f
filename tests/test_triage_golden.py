"""The golden triage corpus: a regression names the file whose answer changed.

Each file of ``tests/data/golden`` holds kassist's reviewed answer (``TITLE:``, ``TYPE:``,
``FRAME:``, ``CORRUPTED:``...) above a real log. After a change that is meant to change
answers, run with ``KASSIST_UPDATE_GOLDEN=1``, review ``git diff tests/data/golden``
and commit it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.golden import headers, read, write

GOLDEN = sorted((DATA / "golden").glob("*.log"))
UPDATE = os.environ.get("KASSIST_UPDATE_GOLDEN") == "1"


def test_the_golden_corpus_is_there() -> None:
    assert len(GOLDEN) >= 500
    assert any(p.name.startswith("data-") for p in GOLDEN)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.name)
def test_golden_answer(path: Path) -> None:
    expected, log = read(path)
    got = headers(log)
    if UPDATE and got != expected:
        write(path, log)
        return
    assert got == expected, f"{path.name}: the answer changed (KASSIST_UPDATE_GOLDEN=1 to accept)"
