"""The policy table compiled into the BPF map's rules, and the map's C structs.

:func:`compile_rules` is pure: it takes :meth:`actions.policy.Policy.table`'s rows
(plain data) and a lister of the running kernel's keys, and returns the
:class:`Rule` for each sysctl name the map holds and the :class:`Glob` rules the
program matches on names it sees (``kassist_policy.h``). What becomes a rule:

- an ``allow`` row with a type: its range (``int``, ``ints`` of ``length``) or its
  words (``choice``). A glob becomes a glob rule, matched in the kernel on every name,
  so that a key that appears later (a new interface) is covered; the keys it names now
  also get exact rules with their own spec (``spec_of``: the validator's, when known);
- a security-baseline key (without ``override``): never lowered below its current value
  (read by the program at each write), in its security ``order`` when the row has one;
- a ``deny`` glob: a glob rule the guard skips and the validator of record refuses (deny
  wins over allow, as in :mod:`actions.validate`); a denied name with a rule is flagged.

sysfs patterns (``block/*/queue/...``) are skipped: a cgroup-sysctl program sees only
``/proc/sys``. A row the map cannot hold (too many words, a long vector, a name of 64
bytes or more, a glob with more than one wildcard) is *unfit*: :meth:`Compiled.require_fit`
refuses it in one line, because enforcement that was asked for must not silently leave a
key out. The step bound, the rate limit and the cross-key invariants stay in the agent's
user-space checks.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from actions.errors import ActionError
from actions.knobs import glob_match

NAME_LEN = 64
VALUE_LEN = 128
WORD_LEN = 16
MAX_WORDS = 8
MAX_INTS = 4
MAX_ORDER = 8
MAX_RULES = 4096
MAX_GLOBS = 64
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
KEY_GLOB = 1
KEY_GLOB_COUNT = 2

#: ``enum rule_type`` in kassist_policy.h, by the policy's type names.
RULE_TYPES = {"none": 0, "int": 1, "ints": 2, "choice": 3, "deny": 4}
TYPE_NAMES = {v: k for k, v in RULE_TYPES.items()}
#: ``enum rule_flag``.
F_BASELINE, F_ORDER, F_DENIED, F_NOT_ALLOWED = 1, 2, 4, 8
#: ``enum glob_kind``.
GLOB_KINDS = {"*": 1, "**": 2}
#: ``enum mode`` and ``enum reason``.
MODES = {1: "lockdown", 2: "guard"}
REASONS = {
    1: "lockdown: every write is refused",
    2: "out of range",
    3: "not the rule's shape (plain decimal ints, the right count, or one word)",
    4: "not an allowed word",
    5: "value too long to check",
    6: "write at a file offset other than 0",
    7: "no rules published (fail closed)",
    8: "lowers a security baseline",
    9: "denied by the policy",
    10: "not in the policy's allow list",
    11: "no known type or range",
    12: "name too long to check against the policy's globs",
    13: "over the extension's rate",
    14: "not a valid submission entry",
    15: "no room to account for a new extension",
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
        ("flags", ctypes.c_uint32),
        ("glob", ctypes.c_uint32),
        ("prefix_len", ctypes.c_uint32),
        ("suffix_len", ctypes.c_uint32),
        ("words", (ctypes.c_char * WORD_LEN) * MAX_WORDS),
        ("prefix", ctypes.c_char * NAME_LEN),
        ("suffix", ctypes.c_char * NAME_LEN),
        ("prefix_mask", ctypes.c_uint8 * NAME_LEN),
        ("suffix_mask", ctypes.c_uint8 * NAME_LEN),
        ("order", ctypes.c_int64 * MAX_ORDER),
        ("norder", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
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


assert ctypes.sizeof(RuleKey) == 64 and ctypes.sizeof(RuleValue) == 504
assert ctypes.sizeof(RefusalEvent) == 248


@dataclass(frozen=True)
class Rule:
    """What the policy says of one sysctl name (or, for a :class:`Glob`, of the names it covers).

    :param key: the dotted key (``net.core.somaxconn``), or the glob.
    :param type: ``int``, ``ints``, ``choice``, ``none`` (no type: only the flags apply) or
        ``deny`` (a deny glob).
    :param length: how many ints (1 for ``int``).
    :param min: the lowest each int may be (``None``: no floor).
    :param max: the highest each int may be (``None``: no ceiling).
    :param words: the words a ``choice`` may take (empty: any one word).
    :param source: the policy rows it comes from (``allow net.core.*``, ``baseline ...``).
    :param kernel_name: the path under /proc/sys when a component holds a dot.
    :param baseline: never lowered below its current value (a security baseline).
    :param order: the baseline's levels from the least strict (empty: by number).
    :param denied: a deny glob covers it (the validator refuses it; the guard checks it).
    :param allowed: an allow row covers it (``False``: a baseline key only).
    """

    key: str
    type: str
    length: int = 1
    min: int | None = None
    max: int | None = None
    words: tuple[str, ...] = ()
    source: str = ""
    kernel_name: str = ""
    baseline: bool = False
    order: tuple[int, ...] = ()
    denied: bool = False
    allowed: bool = True

    @property
    def name(self) -> str:
        """The name the kernel gives the program: ``net/core/somaxconn``."""
        return self.kernel_name or self.key.replace(".", "/")

    @property
    def flags(self) -> int:
        """``enum rule_flag`` bits."""
        return (
            (F_BASELINE if self.baseline else 0)
            | (F_ORDER if self.order else 0)
            | (F_DENIED if self.denied else 0)
            | (F_NOT_ALLOWED if not self.allowed else 0)
        )

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
            "baseline": self.baseline,
            "order": list(self.order),
            "denied": self.denied,
            "allowed": self.allowed,
        }

    def value(self, generation: int) -> RuleValue:
        """Return ``struct rule`` for this rule, stamped with ``generation``."""
        value = RuleValue(
            type=RULE_TYPES[self.type],
            length=self.length,
            min=INT64_MIN if self.min is None else self.min,
            max=INT64_MAX if self.max is None else self.max,
            generation=generation,
            nwords=len(self.words),
            flags=self.flags,
            norder=len(self.order),
        )
        for i, word in enumerate(self.words):
            value.words[i].value = word.encode()
        for i, level in enumerate(self.order):
            value.order[i] = level
        return value

    def encode(self, generation: int) -> tuple[RuleKey, RuleValue]:
        """Return the map entry for this rule, stamped with ``generation``."""
        return RuleKey(self.name.encode()), self.value(generation)


@dataclass(frozen=True)
class Glob:
    """A policy glob the program matches on the names it sees (``kassist_policy.h``).

    :param pattern: the policy's glob (``net.ipv4.neigh.*.base_reachable_time_ms``).
    :param kind: ``*`` (within one component) or ``**`` (across components).
    :param prefix: the kernel name's text before the wildcard (``net/ipv4/neigh/``).
    :param suffix: ...and after it (``/base_reachable_time_ms``).
    :param rule: what applies to a name it matches (``type="deny"`` for a deny glob).
    """

    pattern: str
    kind: str
    prefix: str
    suffix: str
    rule: Rule

    def matches(self, name: str) -> bool:
        """Tell whether the program matches ``name`` (a kernel name) with this glob."""
        if not name.startswith(self.prefix) or not name.endswith(self.suffix):
            return False
        middle = len(name) - len(self.prefix) - len(self.suffix)
        if self.kind == "**":
            return middle >= 1
        return middle >= 0 and "/" not in name[len(self.prefix) : len(name) - len(self.suffix)]

    def encode(self, index: int, generation: int) -> tuple[RuleKey, RuleValue]:
        """Return the map entry of the ``index``-th glob (key ``"\\x01" index``)."""
        value = self.rule.value(generation)
        value.glob = GLOB_KINDS[self.kind]
        prefix, suffix = self.prefix.encode(), self.suffix.encode()
        value.prefix_len, value.suffix_len = len(prefix), len(suffix)
        value.prefix = prefix
        end = ctypes.addressof(value) + RuleValue.suffix.offset + NAME_LEN
        ctypes.memmove(end - len(suffix), suffix, len(suffix))
        for i in range(len(prefix)):
            value.prefix_mask[i] = 0xFF
        for i in range(NAME_LEN - len(suffix), NAME_LEN):
            value.suffix_mask[i] = 0xFF
        return RuleKey(bytes([KEY_GLOB, index])), value


def raw_field(value: ctypes.Structure, name: str) -> bytes:
    """Return a ``char[]`` member's bytes, NULs included (ctypes stops at the first NUL)."""
    member = getattr(type(value), name)
    return ctypes.string_at(ctypes.addressof(value) + member.offset, member.size)


def glob_count_entry(count: int, deny: int, generation: int) -> tuple[RuleKey, RuleValue]:
    """Return the entry that says how many globs there are, the first ``deny`` of them deny
    globs (key ``"\\x02"``)."""
    value = RuleValue(length=count, nwords=deny, generation=generation)
    return RuleKey(bytes([KEY_GLOB_COUNT])), value


def decode(key: RuleKey, value: RuleValue) -> tuple[Rule | None, int]:
    """Turn a map entry read back from the kernel into a rule and its generation.

    A glob entry comes back as a rule whose key is its pattern in kernel form with dots
    (``net.ipv4.neigh.*.base_reachable_time_ms``); the glob count entry as ``None``.
    """
    raw = bytes(key.name)
    if raw[:1] == bytes([KEY_GLOB_COUNT]):
        return None, value.generation
    kind = TYPE_NAMES.get(value.type, f"unknown {value.type}")
    words = tuple(value.words[i].value.decode() for i in range(min(value.nwords, MAX_WORDS)))
    if raw[:1] == bytes([KEY_GLOB]):
        wildcard = {v: k for k, v in GLOB_KINDS.items()}.get(value.glob, "?")
        suffix = (
            raw_field(value, "suffix")[NAME_LEN - value.suffix_len :] if value.suffix_len else b""
        )
        name = value.prefix[: value.prefix_len].decode() + wildcard + suffix.decode()
    else:
        name = key.name.decode()
    rule = Rule(
        key=name.replace("/", "."),
        type=kind,
        length=value.length,
        min=None if value.min == INT64_MIN else value.min,
        max=None if value.max == INT64_MAX else value.max,
        words=words,
        baseline=bool(value.flags & F_BASELINE),
        order=tuple(value.order[i] for i in range(min(value.norder, MAX_ORDER))),
        denied=bool(value.flags & F_DENIED),
        allowed=not value.flags & F_NOT_ALLOWED,
    )
    return rule, value.generation


# --- the compiler ---------------------------------------------------------------------

#: List the sysctls the kernel has now, as paths under /proc/sys (``net/ipv4/conf/eth0.5/...``).
ListKeys = Callable[[], Iterable[str]]
#: The validator's spec of one dotted key as plain data (:meth:`Spec.to_dict`), or ``None``.
SpecOf = Callable[[str], Mapping[str, Any] | None]


def proc_sys_keys(root: Path = Path("/proc/sys")) -> Iterator[str]:
    """Yield every sysctl under ``root`` as its path there (for glob expansion).

    Paths, not dotted keys: a component may hold a dot (``conf/eth0.5/rp_filter``).
    """
    for dirpath, _dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel + "/"
        for f in files:
            yield prefix + f


@dataclass(frozen=True)
class Compiled:
    """The rules for the map, and what the compiler left out and why.

    :param rules: dotted key -> rule, in the table's order.
    :param globs: the globs the program matches, deny globs first.
    :param skipped: (pattern, why) for rows that give no kernel rule by design (sysfs).
    :param unfit: (pattern, why) for rows the kernel map cannot hold: enforcing without
        them would leave keys unguarded (see :meth:`require_fit`).
    """

    rules: Mapping[str, Rule]
    globs: tuple[Glob, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    unfit: tuple[tuple[str, str], ...] = ()

    def require_fit(self) -> Compiled:
        """Return self when every row fits the kernel map.

        :raises ActionError: the first row that does not, and how many do not, in one line.
        """
        if self.unfit:
            pattern, why = self.unfit[0]
            more = f" (and {len(self.unfit) - 1} more)" if len(self.unfit) > 1 else ""
            raise ActionError(
                f"policy rule {pattern}: {why}{more}",
                "narrow it in the policy, or serve with --enforce-best-effort to leave it out",
            )
        return self

    def entries(self, generation: int) -> list[tuple[RuleKey, RuleValue]]:
        """Return every map entry: the exact rules, the globs and their count."""
        out = [rule.encode(generation) for rule in self.rules.values()]
        out += [g.encode(i, generation) for i, g in enumerate(self.globs)]
        deny = sum(1 for g in self.globs if g.rule.type == "deny")
        out.append(glob_count_entry(len(self.globs), deny, generation))
        return out


def _is_sysctl(pattern: str) -> bool:
    return "/" not in pattern


def _has_wildcard(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _glob(pattern: str, rule: Rule) -> Glob | str:
    # The glob in the program's form, or why the program cannot match it.
    parts = pattern.split(".")
    wild = [i for i, p in enumerate(parts) if _has_wildcard(p)]
    if len(wild) != 1 or "?" in pattern or "[" in pattern:
        return "more than one wildcard (the kernel program matches one * or ** per glob)"
    i = wild[0]
    before, part, after = parts[:i], parts[i], parts[i + 1 :]
    head = "".join(p + "/" for p in before)
    tail = "".join("/" + p for p in after)
    if part == "**":
        prefix, suffix, kind = head, tail, "**"
    elif part.count("*") == 1:
        left, right = part.split("*")
        prefix, suffix, kind = head + left, right + tail, "*"
    else:
        return "more than one wildcard (the kernel program matches one * or ** per glob)"
    if len(prefix.encode()) >= NAME_LEN or len(suffix.encode()) >= NAME_LEN:
        return f"longer than {NAME_LEN - 1} bytes around its wildcard"
    return Glob(pattern, kind, prefix, suffix, rule)


def _spec_rule(key: str, spec: Mapping[str, Any] | None, source: str) -> Rule | str:
    # The rule a spec gives, or why the map cannot hold it.
    if spec is None or "type" not in spec:
        return Rule(key, "none", source=source)
    kind = str(spec["type"])
    if kind == "choice":
        words = tuple(str(v) for v in spec.get("values") or ())
        too_long = [w for w in words if len(w.encode()) >= WORD_LEN]
        if len(words) > MAX_WORDS or too_long:
            return f"the kernel map holds up to {MAX_WORDS} words of at most {WORD_LEN - 1} bytes"
        return Rule(key, "choice", words=words, source=source)
    length = int(spec.get("length") or 1) if kind == "ints" else 1
    if length > MAX_INTS:
        return f"vectors of more than {MAX_INTS} ints do not fit the kernel map"
    return Rule(key, kind, length, spec.get("min"), spec.get("max"), source=source)


class _Patterns:
    # Which of a list of patterns matches a key first: exact names through a dict (a
    # policy may name thousands of keys), the globs in order.

    def __init__(self, patterns: Sequence[str]) -> None:
        self.exact: dict[str, int] = {}
        for i, p in enumerate(patterns):
            if not _has_wildcard(p):
                self.exact.setdefault(p, i)
        self.globs = [(i, p) for i, p in enumerate(patterns) if _has_wildcard(p)]

    def first(self, key: str) -> int | None:
        hit = self.exact.get(key)
        for i, pattern in self.globs:
            if hit is not None and i >= hit:
                break
            if glob_match(pattern, key, "."):
                return i
        return hit


@dataclass
class _Table:
    # The table's rows by action, with the validator's answers to "denied?", "allowed by?".
    deny: list[str] = field(default_factory=list)
    excepts: set[str] = field(default_factory=set)
    allow: list[Mapping[str, Any]] = field(default_factory=list)
    baseline: list[Mapping[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index: dict[str, _Patterns] = {}

    def _patterns(self, name: str, rows: Sequence[Any]) -> _Patterns:
        if name not in self._index:
            self._index[name] = _Patterns([r if isinstance(r, str) else str(r["pattern"])
                                           for r in rows])  # fmt: skip
        return self._index[name]

    def denied(self, key: str) -> bool:
        return key not in self.excepts and self._patterns("deny", self.deny).first(key) is not None

    def allowed_by(self, key: str) -> Mapping[str, Any] | None:
        i = self._patterns("allow", self.allow).first(key)
        return None if i is None else self.allow[i]

    def baseline_of(self, key: str) -> Mapping[str, Any] | None:
        i = self._patterns("baseline", self.baseline).first(key)
        return None if i is None else self.baseline[i]


def _split(table: Sequence[Mapping[str, Any]]) -> tuple[_Table, list[tuple[str, str]]]:
    rows, skipped = _Table(), []
    for row in table:
        pattern, action = str(row["pattern"]), row["action"]
        if not _is_sysctl(pattern):
            skipped.append((pattern, "sysfs: a cgroup-sysctl program sees /proc/sys only"))
        elif action == "deny":
            rows.deny.append(pattern)
        elif action == "except":
            rows.excepts.add(pattern)
        elif action == "allow":
            rows.allow.append(row)
        elif action == "baseline" and not row.get("override"):
            rows.baseline.append(row)
    return rows, skipped


def _keys_of(pattern: str, kernel: Mapping[str, str], known: Iterable[str]) -> dict[str, str]:
    # dotted key -> kernel name, for the keys a pattern names now (and the known keys it covers)
    if not _has_wildcard(pattern):
        return {pattern: kernel.get(pattern, pattern.replace(".", "/"))}
    found = {k: n for k, n in kernel.items() if glob_match(pattern, k, ".")}
    for key in known:
        if key not in found and glob_match(pattern, key, "."):
            found[key] = key.replace(".", "/")
    return found


def compile_rules(
    table: Sequence[Mapping[str, Any]],
    list_keys: ListKeys = proc_sys_keys,
    spec_of: SpecOf | None = None,
) -> Compiled:
    """Compile the policy table (:meth:`Policy.table` rows) into the guard map's rules.

    :param list_keys: lists the kernel's keys as paths, called at most once (globs name
        the keys they cover now as exact rules; the program matches the glob for the rest).
    :param spec_of: the validator's spec of a key (built-in limits narrowed by the policy),
        used for every exact key; without it, the allow row's own type and range. With it,
        the keys of kassist's table of limits that an allow glob covers are exact rules too.
    """
    rows, skipped = _split(table)
    unfit: list[tuple[str, str]] = []
    rules = _exact_rules(rows, _names(rows, list_keys, spec_of is not None), spec_of, unfit)
    globs = _glob_rules(rows, unfit)
    if len(rules) + len(globs) + 1 > MAX_RULES:
        unfit.append(
            ("(the whole policy)", f"{len(rules)} kernel rules; the map holds {MAX_RULES}")
        )
    return Compiled(rules, tuple(globs), tuple(skipped), tuple(unfit))


def _names(rows: _Table, list_keys: ListKeys, with_known: bool) -> dict[str, str]:
    # dotted key -> kernel name of every key an allow or baseline row names now, in the
    # table's order (and the deny_except names an allow row covers)
    kernel: dict[str, str] = {}
    if any(_has_wildcard(str(r["pattern"])) for r in [*rows.allow, *rows.baseline]):
        kernel = {path.replace("/", "."): path for path in list_keys()}
    known: list[str] = []
    if with_known:
        from actions.limits import LIMITS

        known = [k for k in LIMITS if _is_sysctl(k) and not _has_wildcard(k)]
    names: dict[str, str] = {}
    for row in [*rows.allow, *rows.baseline]:
        names.update(_keys_of(str(row["pattern"]), kernel, known))
    for key in sorted(rows.excepts):
        if rows.allowed_by(key) is not None:
            names.setdefault(key, key.replace(".", "/"))
    return names


def _exact_rules(
    rows: _Table, names: Mapping[str, str], spec_of: SpecOf | None, unfit: list[tuple[str, str]]
) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for key, kname in names.items():
        allow, base = rows.allowed_by(key), rows.baseline_of(key)
        if allow is None and base is None:
            continue
        source = " ; ".join(f"{r['action']} {r['pattern']}" for r in (allow, base) if r)
        if allow is None:
            made: Rule | str = Rule(key, "none", source=source)
        else:
            made = _spec_rule(key, spec_of(key) if spec_of is not None else allow, source)
        order = tuple(int(v) for v in (base or {}).get("order") or ())
        if isinstance(made, str):
            unfit.append((str(allow["pattern"]) if allow else key, made))
            continue
        if len(order) > MAX_ORDER:
            unfit.append((key, f"a security order of more than {MAX_ORDER} levels"))
            continue
        if len(kname.encode()) >= NAME_LEN:
            unfit.append((key, f"name longer than {NAME_LEN - 1} bytes"))
            continue
        rules[key] = replace(
            made, kernel_name=kname if kname != key.replace(".", "/") else "",
            baseline=base is not None, order=order, denied=rows.denied(key),
            allowed=allow is not None,
        )  # fmt: skip
    return rules


def _glob_rules(rows: _Table, unfit: list[tuple[str, str]]) -> list[Glob]:
    # deny globs first (deny wins, as in the validator), then the allow globs in order
    wanted: list[tuple[str, Rule | str]] = [
        (p, Rule(p, "deny", source=f"deny {p}")) for p in rows.deny if _has_wildcard(p)
    ]
    for row in rows.allow:
        pattern = str(row["pattern"])
        if _has_wildcard(pattern):
            wanted.append((pattern, _spec_rule(pattern, row, f"allow {pattern}")))
    globs: list[Glob] = []
    for pattern, rule in wanted:
        made = rule if isinstance(rule, str) else _glob(pattern, rule)
        if isinstance(made, str):
            unfit.append((pattern, made))
        elif len(globs) == MAX_GLOBS:
            unfit.append((pattern, f"more than {MAX_GLOBS} globs"))
        else:
            globs.append(made)
    return globs
