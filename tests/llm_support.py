"""Test support for the LLM runtime: llama.cpp's OpenAI-compatible server on loopback."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import HANG_S

#: Seconds the server may take to load the model and answer: only a hang is that slow.
SERVER_START_S = HANG_S


def free_port() -> int:
    """Return a loopback TCP port the kernel says is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def llama_server(gguf: Path, alias: str, n_ctx: int, log: Path) -> Iterator[str]:
    """Run ``llama_cpp.server`` on a free loopback port with ``gguf``; yield its ``/v1`` URL.

    The server's output goes to ``log`` (a pipe nobody reads would fill and block it);
    it is stopped on exit.
    """
    port = free_port()
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf),
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
             "--model_alias", alias],
            stdout=sink, stderr=subprocess.STDOUT,
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail(f"llama_cpp.server did not answer within {SERVER_START_S} s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
