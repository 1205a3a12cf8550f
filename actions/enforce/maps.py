"""The policy table compiled into the BPF map's rules, and the map's C structs.

:func:`compile_rules` is pure: it takes :meth:`actions.policy.Policy.table`'s rows
(plain data) and two readers of the running kernel, and returns one
:class:`Rule` per sysctl the guard program enforces. What becomes a rule:

- an ``allow`` row with a type: its range (``int``, ``ints`` of ``length``) or its
  words (``choice``); a glob is expanded over the keys ``/proc/sys`` has now;
- a security-baseline key (without ``override``): a floor at its current value,
  so that no process of a guarded cgroup can lower it;
- ``deny`` rows are not compiled: the agent will not write those keys, but the
  admin's tools still may (guard mode leaves unmanaged keys alone).

sysfs patterns (``block/*/queue/...``) are skipped: a cgroup-sysctl program sees
only ``/proc/sys``. The kernel enforces type, range and words; the step bound,
the rate limit and the cross-key invariants stay in the agent's user-space checks.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from actions.errors import ActionError
from actions.knobs import glob_match

NAME_LEN = 64
VALUE_LEN = 128
WORD_LEN = 16
MAX_WORDS = 8
MAX_INTS = 4
MAX_RULES = 4096
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

#: ``enum rule_type`` in kassist_sysctl.bpf.c, by the policy's type names.
RULE_TYPES = {"int": 1, "ints": 2, "choice": 3}
TYPE_NAMES = {v: k for k, v in RULE_TYPES.items()}
#: ``enum mode`` and ``enum reason``.
MODES = {1: "lockdown", 2: "guard"}
REASONS = {
    1: "lockdown: every write is refused",
    2: "out of range",
    3: "not the rule's shape (plain decimal ints, the right count)",
    4: "not an allowed word",
    5: "value too long to check",
    6: "write at a file offset other than 0",
    7: "no rules published (fail closed)",
}


class RuleKey(ctypes.Structure):
    """``struct rule_key``: the sysctl's name with ``/`` separators, NUL padded."""

    _fields_ = [("name", ctypes.c_char * NAME_LEN)]


class RuleValue(ctypes.Structure):
    """``struct rule``."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("length", ctypes.c_uint32),
        ("min", ctypes.c_int64),
        ("max", ctypes.c_int64),
        ("generation", ctypes.c_uint32),
        ("nwords", ctypes.c_uint32),
        ("words", (ctypes.c_char * WORD_LEN) * MAX_WORDS),
    ]


class RefusalEvent(ctypes.Structure):
    """``struct refusal``: one ring-buffer record."""

    _fields_ = [
        ("boot_ns", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("mode", ctypes.c_uint32),
        ("reason", ctypes.c_uint32),
        ("generation", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
        ("name", ctypes.c_char * NAME_LEN),
        ("value", ctypes.c_char * VALUE_LEN),
    ]


assert ctypes.sizeof(RuleKey) == 64 and ctypes.sizeof(RuleValue) == 160
assert ctypes.sizeof(RefusalEvent) == 248


@dataclass(frozen=True)
class Rule:
    """What the guard program allows for one sysctl.

    :param key: the dotted key (``net.core.somaxconn``).
    :param type: ``int``, ``ints`` or ``choice``.
    :param length: how many ints (1 for ``int``).
    :param min: the lowest each int may be (``None``: no floor).
    :param max: the highest each int may be (``None``: no ceiling).
    :param words: the words a ``choice`` may take.
    :param source: the policy row it comes from (``allow net.core.*``, ``baseline ...``).
    :param kernel_name: the path under /proc/sys when a component holds a dot.
    """

    key: str
    type: str
    length: int = 1
    min: int | None = None
    max: int | None = None
    words: tuple[str, ...] = ()
    source: str = ""
    kernel_name: str = ""

    @property
    def name(self) -> str:
        """The name the kernel gives the program: ``net/core/somaxconn``."""
        return self.kernel_name or self.key.replace(".", "/")

    def to_dict(self) -> dict[str, Any]:
        """Return the rule as plain data (for status and JSON output)."""
        return {
            "key": self.key,
            "type": self.type,
            "length": self.length,
            "min": self.min,
            "max": self.max,
            "words": list(self.words),
            "source": self.source,
            "name": self.name,
        }

    def encode(self, generation: int) -> tuple[RuleKey, RuleValue]:
        """Return the map entry for this rule, stamped with ``generation``."""
        value = RuleValue(
            type=RULE_TYPES[self.type],
            length=self.length,
            min=INT64_MIN if self.min is None else self.min,
            max=INT64_MAX if self.max is None else self.max,
            generation=generation,
            nwords=len(self.words),
        )
        for i, word in enumerate(self.words):
            value.words[i].value = word.encode()
        return RuleKey(self.name.encode()), value


def decode(key: RuleKey, value: RuleValue) -> tuple[Rule, int]:
    """Turn a map entry read back from the kernel into a rule and its generation."""
    kind = TYPE_NAMES.get(value.type, f"unknown {value.type}")
    words = tuple(value.words[i].value.decode() for i in range(min(value.nwords, MAX_WORDS)))
    rule = Rule(
        key=key.name.decode().replace("/", "."),
        type=kind,
        length=value.length,
        min=None if value.min == INT64_MIN else value.min,
        max=None if value.max == INT64_MAX else value.max,
        words=words,
    )
    return rule, value.generation


# --- the compiler ---------------------------------------------------------------------

#: Read a sysctl's current text by its path under /proc/sys, or ``None`` when it cannot.
ReadCurrent = Callable[[str], str | None]
#: List the sysctls the kernel has now, as paths under /proc/sys (``net/ipv4/conf/eth0.5/...``).
ListKeys = Callable[[], Iterable[str]]


def proc_sys_keys(root: Path = Path("/proc/sys")) -> Iterator[str]:
    """Yield every sysctl under ``root`` as its path there (for glob expansion).

    Paths, not dotted keys: a component may hold a dot (``conf/eth0.5/rp_filter``).
    """
    for dirpath, _dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel + "/"
        for f in files:
            yield prefix + f


def read_proc_sys(path: str, root: Path = Path("/proc/sys")) -> str | None:
    """Read a sysctl's text by its path under ``root``; ``None`` when it cannot be read."""
    try:
        return (root / path).read_text()
    except OSError:
        return None


@dataclass(frozen=True)
class Compiled:
    """The rules for the map, and what the compiler left out and why.

    :param rules: dotted key -> rule, in the table's order.
    :param skipped: (pattern, why) for rows that give no kernel rule.
    """

    rules: Mapping[str, Rule]
    skipped: tuple[tuple[str, str], ...]


def _is_sysctl(pattern: str) -> bool:
    return "/" not in pattern


def _expand(pattern: str, list_keys: ListKeys, cache: list[str]) -> list[tuple[str, str]]:
    # (dotted key, the name the kernel gives the program) for each key the pattern names
    if not any(c in pattern for c in "*?["):
        return [(pattern, pattern.replace(".", "/"))]
    if not cache:
        cache.extend(list_keys())
    found = [(path.replace("/", "."), path) for path in cache]
    return [(key, path) for key, path in found if glob_match(pattern, key, ".")]


def _allow_rule(key: str, row: Mapping[str, Any]) -> Rule:
    kind = str(row["type"])
    if kind == "choice":
        words = tuple(str(v) for v in row.get("values") or ())
        too_long = [w for w in words if len(w.encode()) >= WORD_LEN]
        if not words or len(words) > MAX_WORDS or too_long:
            raise ActionError(
                f"policy rule {row['pattern']}: the kernel map holds 1 to {MAX_WORDS} words "
                f"of at most {WORD_LEN - 1} bytes",
                "narrow its values in the policy",
            )
        return Rule(key, "choice", words=words, source=f"allow {row['pattern']}")
    length = int(row.get("length") or 1) if kind == "ints" else 1
    if length > MAX_INTS:
        raise ActionError(
            f"policy rule {row['pattern']}: vectors of more than {MAX_INTS} ints",
            "the kernel map cannot hold it",
        )
    return Rule(key, kind, length, row.get("min"), row.get("max"), source=f"allow {row['pattern']}")


def _floor(rule: Rule | None, key: str, kname: str, current: str | None) -> Rule | None:
    words = (current or "").split()
    if len(words) != 1 or not words[0].lstrip("-").isdigit():
        return rule  # not a single int now (or absent): nothing to hold it at
    now = int(words[0])
    source = f"baseline {key} (floor: its value at start)"
    if rule is None:
        return Rule(key, "int", 1, now, None, source=source, kernel_name=kname)
    if rule.type != "int":
        return rule
    lo = now if rule.min is None else max(rule.min, now)
    return replace(rule, min=lo, source=f"{rule.source}; {source}")


def compile_rules(
    table: Sequence[Mapping[str, Any]],
    read_current: ReadCurrent = read_proc_sys,
    list_keys: ListKeys = proc_sys_keys,
) -> Compiled:
    """Compile the policy table (:meth:`Policy.table` rows) into the guard map's rules.

    :param read_current: reads a key's current text by path (baseline floors).
    :param list_keys: lists the kernel's keys as paths (glob expansion), called at most once.
    :raises ActionError: a rule the map cannot hold (too many words, a long vector, or
        more than 4096 keys), named in one line.
    """
    rules: dict[str, Rule] = {}
    skipped: list[tuple[str, str]] = []
    keys_cache: list[str] = []
    # Allow rows first, so that a baseline floor narrows an allowed range, not the reverse.
    ordered = sorted(table, key=lambda row: row["action"] != "allow")
    for row in ordered:
        pattern, action = str(row["pattern"]), row["action"]
        if not _is_sysctl(pattern):
            skipped.append((pattern, "sysfs: a cgroup-sysctl program sees /proc/sys only"))
            continue
        if action in ("deny", "except"):
            continue  # the agent never writes these; the kernel leaves them to the admin
        if action == "allow" and "type" not in row:
            skipped.append((pattern, "no known type or range"))
            continue
        keys = _expand(pattern, list_keys, keys_cache)
        if not keys:
            skipped.append((pattern, "matches no key on this kernel"))
        for key, kname in keys:
            if len(kname.encode()) >= NAME_LEN:
                skipped.append((key, f"name longer than {NAME_LEN - 1} bytes"))
            elif action == "allow":
                rules[key] = replace(_allow_rule(key, row), kernel_name=kname)
            elif action == "baseline" and not row.get("override"):
                floor = _floor(rules.get(key), key, kname, read_current(kname))
                if floor is not None:
                    rules[key] = floor
    if len(rules) > MAX_RULES:
        raise ActionError(
            f"the policy compiles to {len(rules)} kernel rules (the map holds {MAX_RULES})",
            "narrow its globs",
        )
    return Compiled(rules, tuple(skipped))
