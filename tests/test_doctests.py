"""Every module's ``>>>`` examples run and hold (CI runs no ``--doctest-modules``)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from types import ModuleType

import pytest

#: The packages whose docstrings carry examples.
PACKAGES = ("assistant", "probes", "actions", "tui")


def _modules() -> list[str]:
    # Every module of the packages, but the entry points (importing one runs it).
    names = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if info.name.rsplit(".", 1)[-1] != "__main__":
                names.append(info.name)
    return names


def _tests(module: ModuleType) -> list[doctest.DocTest]:
    return [t for t in doctest.DocTestFinder().find(module) if t.examples]


WITH_EXAMPLES = [n for n in _modules() if _tests(importlib.import_module(n))]


def test_the_examples_are_found() -> None:
    # a finder that found nothing would pass every module it did not look at
    assert {"assistant.knowledge.answer", "assistant.drafters.checker"} <= set(WITH_EXAMPLES)


@pytest.mark.parametrize("name", WITH_EXAMPLES)
def test_module_examples_hold(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {name}'s examples failed (printed above)"
