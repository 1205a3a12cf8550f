"""The layers of DESIGN.md, checked two ways: every import statement, and what importing loads.

- ``probes/`` and ``actions/`` import nothing else of ours;
- ``assistant/`` imports from ``actions`` only the agent's types and client
  (:data:`ASSISTANT_MAY_IMPORT_FROM_ACTIONS`), and ``tui`` only from its CLI (lazily);
- the core (``assistant``, ``probes``, ``actions``) never imports ``textual``.

The statements are read with :mod:`ast`, so an import inside a function counts
as much as one at the top. Every module of the core must import: one that
fails is a failure here, not a module skipped.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

#: What ``assistant`` may import from the agent's package (every module it imports today).
ASSISTANT_MAY_IMPORT_FROM_ACTIONS = frozenset(
    {
        "actions.client",  # AgentClient: the socket client
        "actions.model",  # Recommendation, Changeset: the data the two sides exchange
        "actions.errors",  # ActionError
        "actions.protocol",  # the queue entries and their limits (MAX_ENTRY)
        "actions.policy",  # `kassist agent policy`: the policy is plain data (DESIGN.md)
        "actions.text",  # printable(): the one sanitiser for untrusted text on a terminal
        "actions.enforce",  # pinned_status(): what `kassist agent enforce status` reads back
    }
)
#: Imports that break the rule today and that another change of issue 10 removes:
#: `kassist agent serve` runs the daemon in-process until it delegates to `python -m actions`.
#: Each pair must still occur (a stale entry fails the test, so the list only shrinks).
KNOWN_EXCEPTIONS: frozenset[tuple[str, str]] = frozenset()
CORE = ("assistant", "probes", "actions")
OURS = ("assistant", "probes", "actions", "prompts", "tui")


def _package(path: Path) -> str:
    # The package relative imports resolve against: a module's, or an __init__'s own.
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


def _imports(source: str, package: str) -> set[str]:
    """Return the absolute module names a file of ``package`` imports (``from a import b``
    gives ``a`` and ``a.b``)."""
    tree = ast.parse(source)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the file's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _violations() -> set[tuple[str, str]]:
    bad: set[tuple[str, str]] = set()
    for package in CORE:
        for path in _files(package):
            rel = str(path.relative_to(ROOT))
            for name in _imports(path.read_text(encoding="utf-8"), _package(path)):
                top = _top(name)
                lower_layer = package in ("probes", "actions") and top in OURS and top != package
                if top == "textual" or lower_layer:
                    bad.add((rel, name))
                elif package == "assistant" and top == "actions" and name != "actions":
                    module = ".".join(name.split(".")[:2])
                    if module not in ASSISTANT_MAY_IMPORT_FROM_ACTIONS:
                        bad.add((rel, module))
                elif (
                    package == "assistant" and top == "tui" and not rel.startswith("assistant/cli/")
                ):
                    bad.add((rel, name))
    return bad


def test_the_scan_sees_imports_in_functions_and_relative_ones() -> None:
    source = "def f():\n    from ..drgn import stack\n    import assistant.cli\n"
    found = _imports(source, "probes.logs")
    assert found >= {"probes.drgn", "probes.drgn.stack", "assistant.cli"}
    assert _package(ROOT / "probes" / "logs" / "kmsg.py") == "probes.logs"
    assert _package(ROOT / "probes" / "logs" / "__init__.py") == "probes.logs"


def test_layers_hold_in_every_import_statement() -> None:
    found = _violations()
    new = sorted(found - KNOWN_EXCEPTIONS)
    assert not new, "imports that break DESIGN.md's layers: " + ", ".join(
        f"{f} imports {m}" for f, m in new
    )
    stale = sorted(KNOWN_EXCEPTIONS - found)
    assert not stale, f"no longer imported: remove from KNOWN_EXCEPTIONS: {stale}"


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


# Import every module of the given packages; print the failures, then what got loaded.
_IMPORT_ALL = """
import importlib, pkgutil, sys
failed = []
for top in {packages!r}:
    pkg = importlib.import_module(top)
    def broken(name):
        failed.append(f"{{name}}: cannot import it to walk its modules")
    for info in pkgutil.walk_packages(pkg.__path__, top + ".", onerror=broken):
        if info.name.endswith(".__main__"):  # runs the program when imported
            continue
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed.append(f"{{info.name}}: {{type(exc).__name__}}: {{exc}}")
print("FAILED=" + " | ".join(failed))
print("LOADED=" + ",".join(sorted(sys.modules)))
"""


def _import_all(packages: tuple[str, ...]) -> set[str]:
    out = dict(
        line.split("=", 1) for line in _run(_IMPORT_ALL.format(packages=packages)).splitlines()
    )
    assert out["FAILED"] == "", f"modules that do not import: {out['FAILED']}"
    return set(out["LOADED"].split(","))


def test_probes_and_actions_import_nothing_of_ours() -> None:
    loaded = _import_all(("probes", "actions"))
    ours = sorted(m for m in loaded if _top(m) in ("assistant", "tui", "prompts"))
    assert ours == []


def test_core_does_not_import_textual() -> None:
    loaded = _import_all(CORE)
    assert "assistant.cli.triage" in loaded  # every module was imported, the CLI's too
    assert sorted(m for m in loaded if _top(m) == "textual") == []


def test_triaging_and_reporting_a_log_do_not_load_drgn() -> None:
    # The vmcore types are imported for type checking only: drgn loads with a vmcore.
    loaded = _run(
        "import sys\n"
        "import assistant.cli.triage, assistant.cli.report, assistant.drafters.bug_report\n"
        "import assistant.triage.model\n"
        "print(','.join(m for m in sys.modules if m.split('.')[0] in ('drgn', '_drgn')))\n"
    )
    assert loaded == ""
