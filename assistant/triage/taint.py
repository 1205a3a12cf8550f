"""Kernel taint flags: the letters of ``Tainted:`` lines and what they mean.

From the kernel's Documentation/admin-guide/tainted-kernels.rst (the letters that
``print_tainted()`` prints in ``kernel/panic.c``).
"""

from __future__ import annotations

#: taint letter → meaning. ``G``/``' '`` are the absence of a taint and are not listed.
TAINT_FLAGS: dict[str, str] = {
    "P": "proprietary module was loaded",
    "F": "module was force loaded",
    "S": "kernel running on an out of specification system",
    "R": "module was force unloaded",
    "M": "processor reported a Machine Check Exception (MCE)",
    "B": "bad page referenced or some unexpected page flags",
    "U": "taint requested by userspace application",
    "D": "kernel died recently, i.e. there was an OOPS or BUG",
    "A": "an ACPI table was overridden by user",
    "W": "kernel issued warning",
    "C": "staging driver was loaded",
    "I": "workaround for bug in platform firmware applied",
    "O": "externally-built (out-of-tree) module was loaded",
    "E": "unsigned module was loaded",
    "L": "soft lockup occurred",
    "K": "kernel has been live patched",
    "X": "auxiliary taint, defined for and used by distros",
    "T": "kernel was built with the struct randomization plugin",
    "N": "an in-kernel test has been run",
    "J": "userspace used a mutating debug operation in fwctl",
}


def decode_taint(letters: str) -> list[str]:
    """Return the taint letters set in a ``Tainted:`` value, in kernel order.

    >>> decode_taint("G        W  O")
    ['W', 'O']
    """
    return [ch for ch in letters if ch in TAINT_FLAGS]


def describe_taint(flags: list[str]) -> list[str]:
    """Return one line per taint letter: ``"W: kernel issued warning"``."""
    return [f"{f}: {TAINT_FLAGS[f]}" for f in flags if f in TAINT_FLAGS]
