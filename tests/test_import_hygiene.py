"""The core never imports textual: importing it in a fresh interpreter proves it."""

from __future__ import annotations

import subprocess
import sys

CORE = ["assistant", "assistant.cli", "assistant.triage", "assistant.llm", "probes", "actions"]


def test_core_does_not_import_textual() -> None:
    code = (
        "import importlib, sys\n"
        f"for m in {CORE!r}: importlib.import_module(m)\n"
        "import assistant.cli.triage, assistant.cli.report, assistant.cli.doctor\n"
        "bad = sorted(m for m in sys.modules if m == 'textual' or m.startswith('textual.'))\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""


def test_probes_and_actions_import_nothing_of_ours() -> None:
    code = (
        "import importlib, pkgutil, sys\n"
        "import probes, actions\n"
        "for pkg in (probes, actions):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        try: importlib.import_module(info.name)\n"
        "        except ImportError: pass\n"
        "ours = [m for m in sys.modules if m.split('.')[0] in ('assistant', 'tui')]\n"
        "print(','.join(sorted(ours)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""
