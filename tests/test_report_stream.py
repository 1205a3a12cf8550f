"""`kassist report` on a terminal: the facts appear first, the model's text only checked."""

from __future__ import annotations

import os
import pty
import select
import sys
import time

from assistant.drafters.bug_report import MODEL_MARK
from tests.conftest import DATA, ROOT, require_default_model

HEAD = b"| Type |"
SUMMARY = (b"## What happened",)
TRACE = b"## Call trace"


def _read_pty(argv: list[str], timeout: float) -> list[tuple[float, bytes]]:
    pid, fd = pty.fork()
    if pid == 0:  # the child: kassist on a terminal
        os.chdir(ROOT)
        os.environ["KASSIST_LLM_LOG"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "assistant", *argv])
    chunks: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append((time.monotonic(), data))
    os.waitpid(pid, 0)
    os.close(fd)
    return chunks


def test_report_shows_the_facts_before_the_model_is_done() -> None:
    require_default_model()
    log = DATA / "kasan-uaf-ip6_send_skb.log"
    chunks = _read_pty(["report", "--max-tokens", "48", str(log)], timeout=300)
    text = b"".join(c for _, c in chunks)
    assert text.startswith(b"# "), text[:200]
    assert any(s in text for s in SUMMARY) and TRACE in text, text[-400:]
    # The head is written in its own piece, before the summary; the summary (the
    # model's checked sentence, or the facts' own) arrives whole, never token by token.
    seen = b""
    head_at = summary_at = None
    for at, data in chunks:
        seen += data
        if head_at is None and HEAD in seen:
            head_at = at
        if summary_at is None and any(s in seen for s in SUMMARY):
            summary_at = at
            section = seen[seen.index(b"\n## ", seen.index(HEAD)) :]
            # the whole summary paragraph is there in the same write as its heading
            assert section.count(b"\n") >= 3, section
    assert head_at is not None and summary_at is not None
    assert summary_at >= head_at
    # the model's paragraph, or the facts' sentences with one line saying why: not both
    assert not (MODEL_MARK.encode() in text and b"withheld" in text)
