"""The layers of DESIGN.md, checked two ways: every import statement, and what importing loads.

- ``probes/`` and ``actions/`` import nothing else of ours;
- ``assistant/`` imports from ``actions`` only the agent's types and client
  (:data:`ASSISTANT_MAY_IMPORT_FROM_ACTIONS`), and ``tui`` only from its CLI (lazily);
- the core never imports the CLI (``assistant.cli`` imports the core, not the reverse);
- no two of our modules import each other, directly or round a longer cycle;
- the core (``assistant``, ``probes``, ``actions``) never imports ``textual``;
- ``probes/`` is the only reader of the kernel: nothing in ``assistant/`` or ``tui/``
  opens or lists a path under ``/proc`` or ``/sys``.

The statements are read with :mod:`ast`, so an import inside a function counts
as much as one at the top. Every module of the core must import: one that
fails is a failure here, not a module skipped.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Container, Iterator
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
        "actions.limits",  # Machine: what the policy's caps are relative to (tune's bounds)
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


def _targets(source: str, package: str, modules: Container[str]) -> set[str]:
    """Return the modules of ``modules`` a file imports, at the top or in a function.

    ``from a import b`` imports the module ``a.b`` when there is one, else ``a``; parent
    packages do not count (importing ``a.b`` runs ``a/__init__.py`` first, and Python
    lets a package re-export what its submodules define).
    """
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {m for m in found if m in modules}


def _absolute(node: ast.ImportFrom, package: str) -> str:
    # The module a ``from ... import`` names, relative ones resolved against the package.
    base = node.module or ""
    if node.level:
        parent = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parent, base] if base else parent)
    return base


def _imports(source: str, package: str) -> set[str]:
    """Return the absolute module names a file of ``package`` imports (``from a import b``
    gives ``a`` and ``a.b``)."""
    tree = ast.parse(source)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
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


# --- the core never imports the CLI ---------------------------------------------------


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _upward() -> set[tuple[str, str]]:
    # (file, CLI module) for every import of assistant.cli outside the CLI itself.
    bad = set()
    for package in CORE:
        for path in _files(package):
            rel = str(path.relative_to(ROOT))
            if rel.startswith("assistant/cli/") or rel == "assistant/__main__.py":
                continue
            for name in _imports(path.read_text(encoding="utf-8"), _package(path)):
                if name == "assistant.cli" or name.startswith("assistant.cli."):
                    bad.add((rel, name))
    return bad


def test_the_scan_finds_an_upward_import(tmp_path: Path) -> None:
    source = "def explain():\n    from assistant.cli.common import notice\n"
    assert "assistant.cli.common" in _imports(source, "assistant.disks")


def test_the_core_never_imports_the_cli() -> None:
    found = sorted(_upward())
    assert not found, "the core imports the CLI: " + ", ".join(f"{f}: {m}" for f, m in found)


# --- no import cycle among our modules -------------------------------------------------


def _graph() -> dict[str, set[str]]:
    # Module -> the modules of ours it imports (at the top or in a function).
    modules = {_module(p): p for top in OURS for p in _files(top)}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = _targets(path.read_text(encoding="utf-8"), _package(path), modules)
        graph[name] = found - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    # Tarjan's strongly connected components of more than one module.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_lazy_and_long_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == {frozenset({"a", "b", "c"})}
    lazy = "def f():\n    from assistant.tuning.scenarios import KNOWN_KEYS\n"
    assert "assistant.tuning.scenarios" in _imports(lazy, "assistant.tuning")


def test_no_import_cycle_among_our_modules() -> None:
    cycles = sorted(sorted(c) for c in _cycles(_graph()))
    assert not cycles, f"import cycles: {cycles}"


# --- the kernel is read in probes/ only ---------------------------------------------------

#: Calls that open or list a path given as their first argument.
_OPENING_CALLS = frozenset(
    {"open", "read_text", "read_bytes", "listdir", "scandir", "walk", "glob", "iglob", "readlink"}
)
#: Methods of a Path that open or list it.
_OPENING_METHODS = frozenset({"open", "read_text", "read_bytes", "iterdir", "glob", "rglob"})
KERNEL_TREES = ("/proc", "/sys")


def _kernel_path(node: ast.AST | None) -> str | None:
    # The text of a string or f-string that names a path under /proc or /sys.
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        text = (
            first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) else ""
        )
    else:
        return None
    if not isinstance(text, str):
        return None
    return text if any(text == t or text.startswith(t + "/") for t in KERNEL_TREES) else None


def _called(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _kernel_reads(source: str) -> Iterator[tuple[int, str]]:
    """Yield (line, path) of each open or listing of a /proc or /sys path in a file.

    An existence check (``os.path.exists``, ``Path(...).exists()``, ``stat``) is not a read.
    """
    tree = ast.parse(source)
    paths: dict[str, str] = {}  # a name bound to Path("/sys/...")
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            path = _kernel_path(node.value.args[0]) if node.value.args else None
            if path and _called(node.value) == "Path":
                paths.update({t.id: path for t in node.targets if isinstance(t, ast.Name)})
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _called(node)
            path = _kernel_path(node.args[0]) if node.args else None
            if path and name in _OPENING_CALLS:
                yield node.lineno, path
            receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
            if name in _OPENING_METHODS and isinstance(receiver, ast.Call):
                inner = _kernel_path(receiver.args[0]) if receiver.args else None
                if inner and _called(receiver) == "Path":
                    yield node.lineno, inner
            if name in _OPENING_METHODS and isinstance(receiver, ast.Name) and receiver.id in paths:
                yield node.lineno, paths[receiver.id]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for default in [*node.args.defaults, *node.args.kw_defaults]:
                if (path := _kernel_path(default)) is not None:
                    yield node.lineno, path  # a parameter that defaults to a kernel path


def test_the_kernel_read_scan_finds_each_way_to_open() -> None:
    source = (
        "import os\nfrom pathlib import Path\n"
        'def a():\n    return open("/proc/loadavg").read()\n'
        'def b(res):\n    return read_text(f"/proc/pressure/{res}")\n'
        'def c():\n    d = Path("/sys/fs/pstore")\n    return list(d.iterdir())\n'
        'def d(root="/sys/class/block"):\n    return root\n'
        'def e():\n    return Path("/proc/sys/kernel/random/boot_id").read_text()\n'
        'def f():\n    return os.listdir("/proc")\n'
        'def g():\n    return os.path.exists("/proc/kcore") or Path("/sys/x").exists()\n'
        'def h():\n    return ["/proc/net/netstat TcpExt", "/procfs"]\n'
    )
    assert sorted(line for line, _ in _kernel_reads(source)) == [4, 6, 9, 10, 13, 15]


def test_the_kernel_is_read_only_in_probes() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} {kernel_path}"
        for top in ("assistant", "tui")
        for path in _files(top)
        for line, kernel_path in _kernel_reads(path.read_text(encoding="utf-8"))
    ]
    assert not found, "kernel reads outside probes/ (use or add a reader there): " + ", ".join(
        sorted(found)
    )


# Import each module first, in a process that has imported nothing of ours yet: an
# import cycle through a package's __init__ (a imports b, b's package imports a) works
# in one order and fails in the other, and the walk above imports in one order only.
_EACH_FIRST = """
import os, sys
names = {names!r}
for name in names:
    pid = os.fork()
    if pid == 0:
        import importlib
        try:
            importlib.import_module(name)
        except BaseException as exc:
            sys.stdout.write(f"{{name}}: {{type(exc).__name__}}: {{exc}}\\n")
            sys.stdout.flush()
            os._exit(1)
        os._exit(0)
    os.waitpid(pid, 0)
print(sorted(m for m in sys.modules if m.split(".")[0] in {tops!r}))
"""


def test_every_module_imports_when_it_is_imported_first() -> None:
    # The names come from the files, not from an import walk, so the parent has imported
    # nothing of ours before each fork (its last line proves it).
    names = sorted(_module(p) for top in OURS for p in _files(top))
    names = [n for n in names if not n.endswith(".__main__")]
    assert len(names) > 100
    *failures, loaded = _run(_EACH_FIRST.format(names=names, tops=OURS)).splitlines()
    assert loaded == "[]", loaded
    assert not failures, "modules that fail when imported first: " + "; ".join(failures)
