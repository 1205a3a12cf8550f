"""Shared test helpers.

Tests that need a real component (root, bpftrace, the vmcore fixture, the
local model) call :func:`require`. On a developer laptop a missing component
skips the test with the reason; with ``KASSIST_REQUIRE_REAL=1`` (CI) it fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from assistant.knowledge import KnowledgeBase

T = TypeVar("T")

# No timed assertions, Hypothesis' own included: no per-example deadline, no failure
# because generating data was slow on a loaded machine. A test's own @settings keeps
# these unless it names them.
settings.register_profile("kassist", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kassist")

ROOT = Path(__file__).resolve().parent.parent

# A job started in the background by a shell without job control (`./.ci/run &`, a
# script's subshell) has SIGINT ignored, and an ignored signal stays ignored across exec:
# every CLI the tests start would then ignore Ctrl-C, as no terminal user's does. A
# handler here is reset to the default in each child at exec, so the children get the
# default a terminal gives them.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
DATA = ROOT / "tests" / "data"
CORPUS_DIR = ROOT.parent / "shared" / "corpus"
REQUIRE_REAL = os.environ.get("KASSIST_REQUIRE_REAL", "") not in ("", "0")
#: How long a test waits for something that must happen (an agent listening, a log line,
#: a state file, a cgroup emptied) before calling it a hang: a guard against waiting
#: forever, never a bound on speed. A brand-new machine under load (CI beside other work)
#: took more than 20 s to start an agent; that is slow, not wrong.
HANG_S = 300.0


def hang_deadline() -> float:
    """Return the ``time.monotonic()`` value (s) after which a wait is a hang."""
    return time.monotonic() + HANG_S


def wait_until(
    predicate: Callable[[], T | None],
    what: str,
    poll_s: float = 0.1,
    context: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate()`` every ``poll_s`` seconds until it returns a truthy value, and
    return that value; fail the test when :data:`HANG_S` passed first (a hang guard, never
    a bound on speed).

    :param what: what was awaited, the failure's first line (``"the oops stored once"``).
    :param context: called only on failure, its text shown below (a daemon's log as it is
        when the wait gave up).
    """
    deadline = hang_deadline()
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            more = f"\n{context()}" if context else ""
            pytest.fail(f"{what}: still not true after {HANG_S:g} s{more}")
        time.sleep(poll_s)
    return value


def require(condition: bool, reason: str) -> None:
    """Skip (or, under KASSIST_REQUIRE_REAL=1, fail) the test unless ``condition`` holds."""
    if condition:
        return
    if REQUIRE_REAL:
        pytest.fail(f"KASSIST_REQUIRE_REAL=1 but {reason}")
    pytest.skip(reason)


def require_knowledge_base() -> KnowledgeBase:
    """Return the installed knowledge base; skip (or fail, under KASSIST_REQUIRE_REAL=1)
    when it is not built (``./setup.sh`` as root builds it)."""
    from assistant.knowledge import try_open

    kb = try_open()
    require(kb is not None, "the knowledge base is not built (./setup.sh as root builds it)")
    assert kb is not None
    return kb


def require_default_model() -> None:
    """Skip (or fail, under KASSIST_REQUIRE_REAL=1) unless llama-cpp-python and the default
    model (Qwen2.5-Coder-0.5B-Instruct, which ``./setup.sh`` installs) are here."""
    import importlib.util

    from assistant.llm.models import CATALOGUE, DEFAULT_MODEL, cached_path

    require(importlib.util.find_spec("llama_cpp") is not None, "llama-cpp-python is not installed")
    require(
        cached_path(CATALOGUE[DEFAULT_MODEL]) is not None,
        f"the default model {DEFAULT_MODEL} is not installed (./setup.sh installs it)",
    )


def run_kassist(
    args: Sequence[str],
    *,
    input: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = HANG_S,
    prefix: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would, and capture its output.

    :param prefix: a command to run it under (e.g. ``setpriv`` to drop capabilities).
    """
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "assistant", *args],
        input=input,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


#: Run a command as root without the capabilities that let root read any file.
WITHOUT_DAC_OVERRIDE = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point XDG config and state at a temporary directory."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path
