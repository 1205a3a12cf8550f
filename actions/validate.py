"""The validator: every rule a recommendation must pass before anything is written.

Each rule raises :class:`~actions.errors.Rejected` naming itself (``name``,
``exists``, ``writable``, ``catalogue``, ``value``, ``type``, ``range``,
``baseline``, ``policy``, ``noop``, ``stale``, ``step``, ``rate``, ``evidence``,
``rationale``, ``text``, ``duplicate``, ``size``, ``invariant``) with one line a
person understands. Rules read the kernel (current values) but never write.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from actions.errors import Rejected
from actions.knobs import (
    KINDS,
    Knob,
    Roots,
    bracket_options,
    check_chars,
    parse_ints,
    parse_kernel_text,
    read_file,
    resolve,
)
from actions.limits import CHOICE_MODULES, INVARIANTS, Spec
from actions.model import RISKS, Change, Recommendation
from actions.policy import Policy

#: Counts a key's changes in the last hour: (kind, key) -> count.
RecentChanges = Callable[[str, str], int]

_WORD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")
_MIN_RATIONALE = 10


@dataclass(frozen=True)
class Planned:
    """A recommendation that passed every rule: the knob, and its old and new value.

    :param old: the kernel's current value, canonical text.
    :param new: the value to write, canonical text.
    """

    rec: Recommendation
    knob: Knob
    spec: Spec
    old: str
    new: str

    @property
    def risk(self) -> str:
        """The higher of the recommendation's own risk and the policy's risk for the key."""
        return max(self.rec.risk, self.spec.risk, key=RISKS.index)

    def diff(self) -> Change:
        """Return the dry-run line: kind, target, old -> new, risk (no state yet)."""
        return Change(
            kind=self.knob.kind,
            target=self.knob.key,
            old=self.old,
            new=self.new,
            risk=self.risk,
            state="",
            rec_id=self.rec.id,
        )


# --- text fields ----------------------------------------------------------------------


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _bad_char(text: str) -> str | None:
    # Control characters (terminal escapes) and bidi/format characters (text that reads
    # differently from what it says) have no place in prose a person approves.
    if text.isascii():
        m = _ASCII_CONTROL.search(text)
        return m.group() if m else None
    for c in text:
        if c in "\n\t":
            continue
        if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co"):
            return c
    return None


def check_text(rec: Recommendation) -> None:
    """Refuse control and format characters in the prose fields.

    :raises Rejected: rule ``text``.
    """
    fields = {
        "rationale": rec.rationale,
        "expected_effect": rec.expected_effect,
        "evidence": rec.evidence,
    }
    for name, value in fields.items():
        for text in _strings(value):
            bad = _bad_char(text)
            if bad is not None:
                raise Rejected(
                    "text",
                    rec.target[:80],
                    f"{name} contains the control character U+{ord(bad):04X}; send plain text",
                )


def check_evidence(rec: Recommendation) -> None:
    """Require evidence and a rationale.

    :raises Rejected: rules ``evidence`` and ``rationale``.
    """
    target = rec.target[:80]
    if not rec.evidence:
        raise Rejected("evidence", target, "no evidence given; a recommendation must cite it")
    for i, item in enumerate(rec.evidence):
        if not any(s.strip() for s in _strings(item)):
            raise Rejected("evidence", target, f"evidence item {i} is empty")
    if len(rec.rationale.strip()) < _MIN_RATIONALE:
        raise Rejected("rationale", target, "no rationale given; say why the change helps")


# --- values ---------------------------------------------------------------------------


def canonical_value(raw: object, target: str) -> str:
    """Turn a recommendation's value (int, list of ints, or text) into canonical text.

    :raises Rejected: rule ``value`` for hostile characters or an unusable shape.
    """
    if isinstance(raw, bool):
        raise Rejected("value", target, "a boolean is not a kernel value; use 0 or 1")
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, list):
        if not raw or len(raw) > 8:
            raise Rejected("value", target, "a vector value must hold 1 to 8 integers")
        return " ".join(str(v) for v in raw)
    if not isinstance(raw, str):
        raise Rejected("value", target, "the value must be an integer, a list of them, or a word")
    if len(raw) > 128:
        raise Rejected("value", target, "value longer than 128 characters")
    check_chars("value", raw, target)
    words = raw.split()
    if not words:
        raise Rejected("value", target, "the value is empty")
    return " ".join(_decimal(w) for w in words)


_DECIMAL = re.compile(r"^[+-]?[0-9]{1,64}$")


def _decimal(word: str) -> str:
    # The kernel reads integers with base 0 ("010000" is octal 4096, "0x10" is 16): a
    # word of digits becomes canonical decimal, which is what is validated and written.
    if not _DECIMAL.match(word):
        return word
    return str(int(word, 10))


def check_type(new: str, spec: Spec, target: str) -> None:
    """Check that a value parses for the key's type.

    :raises Rejected: rule ``type``.
    """
    if spec.type == "choice":
        if not _WORD.match(new):
            raise Rejected("type", target, f"{new!r} is not a single word")
        return
    ints = parse_ints(new)
    want = spec.length if spec.type == "ints" else 1
    if ints is None:
        raise Rejected("type", target, f"{new!r} is not {_ints_phrase(want)}")
    if len(ints) != want:
        raise Rejected("type", target, f"expects {_ints_phrase(want)}, got {len(ints)}")


def _ints_phrase(n: int) -> str:
    return "an integer" if n == 1 else f"{n} integers"


def check_range(new: str, spec: Spec, target: str, offered: Sequence[str]) -> None:
    """Check a value against the spec's range or set of words, and what the kernel offers.

    :param offered: the choices the kernel itself lists for this knob (may be empty).
    :raises Rejected: rule ``range``.
    """
    if spec.type == "choice":
        if spec.values and new not in spec.values:
            raise Rejected(
                "range", target, f"{new!r} is not one of {', '.join(spec.values)} ({spec.source})"
            )
        if offered and new not in offered:
            raise Rejected(
                "range", target, f"this kernel does not offer {new!r} (it has {', '.join(offered)})"
            )
        return
    for v in parse_ints(new) or ():
        if spec.min is not None and v < spec.min:
            raise Rejected("range", target, f"{v} is below the floor {spec.min} ({spec.source})")
        if spec.max is not None and v > spec.max:
            raise Rejected("range", target, f"{v} is above the limit {spec.max} ({spec.source})")


def check_step(old: str, new: str, spec: Spec, policy: Policy, target: str) -> None:
    """Bound how far one change may move a numeric value (default x4 / /4).

    Zero counts as one, so a 0/1 switch may flip; negative values are not bounded. A
    positive value below the range's floor (or above its ceiling) may move to that bound
    in one change: it comes into policy, and no smaller move could.

    :raises Rejected: rule ``step``.
    """
    factor = policy.max_step if spec.max_step is None else spec.max_step
    if spec.type == "choice" or factor == 0:
        return
    before, after = parse_ints(old), parse_ints(new)
    if before is None or after is None or len(before) != len(after):
        return
    for a, b in zip(before, after, strict=True):
        if a < 0 or b < 0 or _to_nearest_bound(a, b, spec):
            continue
        lo, hi = sorted((max(a, 1), max(b, 1)))
        if hi / lo > factor:
            direction = "up" if b > a else "down"
            raise Rejected(
                "step",
                target,
                f"{a} -> {b} moves {direction} by x{hi / lo:.4g}; one change may "
                f"move at most x{factor:g} (max_step); change it in steps",
            )


def _to_nearest_bound(old: int, new: int, spec: Spec) -> bool:
    # 0 is left out: it often means "off" or "the other mode" (vm.dirty_bytes).
    below = spec.min is not None and 0 < old < spec.min and new == spec.min
    return below or (spec.max is not None and old > spec.max and new == spec.max)


def offered_choices(knob: Knob) -> tuple[str, ...]:
    """Return the choices the kernel lists for a knob (bracketed list or an ``available_`` file)."""
    raw = knob.read_raw()
    options = bracket_options(raw)
    if options:
        return options
    sibling = {
        "scaling_governor": "scaling_available_governors",
        "tcp_congestion_control": "tcp_available_congestion_control",
    }.get(knob.path.name)
    if sibling is None:
        return ()
    try:
        return tuple(read_file(knob.path.with_name(sibling)).split())
    except OSError:
        return ()


def check_module(knob: Knob, old: str, new: str, roots: Roots) -> None:
    """Refuse a word whose kernel module is not loaded (writing it would load the module).

    A module counts as loaded when ``/sys/module/<name>`` exists; the current word is
    always in use, so always offered.

    :raises Rejected: rule ``range``.
    """
    modules = CHOICE_MODULES.get(knob.key)
    if modules is None or new == old:
        return
    if new not in modules:
        raise Rejected("range", knob.key, f"kassist does not know which module {new!r} needs")
    module = modules[new]
    if module is not None and not (roots.sys / "module" / module).is_dir():
        raise Rejected(
            "range",
            knob.key,
            f"{new!r} needs the kernel module {module}, which is not loaded (writing it "
            f"would load it); load it first (modprobe {module}) if that is meant",
        )


# --- one recommendation ---------------------------------------------------------------


def check_baseline(knob: Knob, old: str, new: str, policy: Policy) -> None:
    """Refuse to lower a security-baseline key unless the policy overrides it.

    "Lower" follows the key's security order (:meth:`Policy.lowers_baseline`): 1 is
    stricter than 2 for ``kernel.unprivileged_bpf_disabled``.

    :raises Rejected: rule ``baseline``.
    """
    sep = KINDS[knob.kind].sep
    if policy.may_lower_baseline(knob.key, sep) or not policy.lowers_baseline(
        knob.key, sep, old, new
    ):
        return
    order = policy.baseline_order.get(knob.key)
    ranked = [parse_ints(v) for v in (old, new)]
    if order is not None and any(v is None or v[0] not in order for v in ranked):
        levels = ", ".join(map(str, order))
        raise Rejected(
            "baseline",
            knob.key,
            f"{old} -> {new}: not a level kassist can rank (from the least strict to the "
            f"strictest: {levels}); only an explicit policy override allows it",
        )
    raise Rejected(
        "baseline",
        knob.key,
        f"lowers the security baseline ({old} -> {new}); only an "
        "explicit policy override ([baseline] override) allows that",
    )


def check_policy(knob: Knob, policy: Policy) -> None:
    """Check the allow and deny globs (deny wins).

    :raises Rejected: rule ``policy``.
    """
    sep = KINDS[knob.kind].sep
    denied = policy.denied_by(knob.key, sep)
    if denied:
        raise Rejected("policy", knob.key, f"denied by the policy (deny {denied!r})")
    if policy.allowed_by(knob.key, sep) is None:
        raise Rejected("policy", knob.key, "not in the policy's allow list")


def plan_one(
    rec: Recommendation, policy: Policy, roots: Roots, recent: RecentChanges | None
) -> Planned:
    """Run every per-recommendation rule, in order, and return the planned change.

    :raises Rejected: the first rule the recommendation breaks.
    """
    check_text(rec)
    check_evidence(rec)
    knob = resolve(rec.kind, rec.target, roots)
    new = canonical_value(rec.value, knob.key)
    try:
        old = knob.read()
    except OSError as exc:
        raise Rejected("exists", knob.key, f"cannot be read ({exc.strerror})") from None
    check_baseline(knob, old, new, policy)
    check_policy(knob, policy)
    spec = policy.spec(knob.key, KINDS[knob.kind].sep)
    if spec is None:
        raise Rejected(
            "type",
            knob.key,
            "kassist knows no type or range for this key; "
            f'give one in the policy ([keys."{knob.key}"])',
        )
    check_type(new, spec, knob.key)
    check_range(new, spec, knob.key, offered_choices(knob) if spec.type == "choice" else ())
    if spec.type == "choice":
        check_module(knob, old, new, roots)
    if _same(old, new):
        raise Rejected("noop", knob.key, f"already {old}; nothing to change")
    if rec.current is not None:
        said = canonical_value(rec.current, knob.key)
        if not _same(said, old):
            raise Rejected(
                "stale",
                knob.key,
                f"drafted for the value {said} but the kernel has {old}; draft it again",
            )
    check_step(old, new, spec, policy, knob.key)
    if recent is not None:
        count = recent(knob.kind, knob.key)
        if count >= policy.max_changes_per_hour:
            raise Rejected(
                "rate",
                knob.key,
                f"changed {count} times in the last hour; at most "
                f"{policy.max_changes_per_hour} (max_changes_per_hour)",
            )
    return Planned(rec, knob, spec, old, new)


def _same(a: str, b: str) -> bool:
    ia, ib = parse_ints(a), parse_ints(b)
    if ia is not None and ib is not None:
        return ia == ib
    return a.split() == b.split()


def values_equal(a: str, b: str) -> bool:
    """Tell whether two canonical values are the same value (``"01"`` equals ``"1"``)."""
    return _same(a, b)


# --- the changeset --------------------------------------------------------------------


def _current_ints(key: str, roots: Roots) -> tuple[int, ...] | None:
    try:
        knob = resolve("sysctl", key, roots, writable=False)
        return parse_ints(parse_kernel_text(knob.read_raw()))
    except (Rejected, OSError):
        return None


_INVARIANT_KEYS = frozenset(k for keys, _ in INVARIANTS for k in keys)


Ints = dict[str, tuple[int, ...] | None]


def _invariant_state(proposed: Mapping[str, object], roots: Roots) -> dict[str, tuple[int, ...]]:
    # The current value of every key an invariant touching ``proposed`` reads.
    current: dict[str, tuple[int, ...]] = {}
    for keys, _ in INVARIANTS:
        if not any(k in proposed for k in keys):
            continue
        for k in keys:
            if k not in current:
                value = _current_ints(k, roots)
                if value is None:
                    break
                current[k] = value
    return current


def _deficits(
    state: Mapping[str, tuple[int, ...]], touched: Iterable[str]
) -> dict[int, tuple[int, str, str]]:
    # Invariant index -> (deficit, first touched key, message), for the invariants over
    # ``touched`` keys whose every key has a value in ``state``.
    keyset = set(touched)
    out: dict[int, tuple[int, str, str]] = {}
    for i, (keys, check) in enumerate(INVARIANTS):
        hit = [k for k in keys if k in keyset]
        if not hit or not all(k in state for k in keys):
            continue
        try:
            deficit, message = check(state)
        except (ValueError, IndexError):
            continue
        out[i] = (deficit, hit[0], message)
    return out


def _total(state: Mapping[str, tuple[int, ...]], touched: Iterable[str]) -> int:
    return sum(d for d, _, _ in _deficits(state, touched).values())


def invariant_errors(proposed: Ints, roots: Roots, when: str) -> list[Rejected]:
    """Check cross-key invariants on the state that writing ``proposed`` would leave.

    Each invariant over a proposed key must hold afterwards, or at least not move further
    from holding than it already was.

    :param proposed: key -> its new integers (``None``: not integers; skipped).
    :param when: how the message ends (``after this changeset``, ``after this rollback``).
    """
    wanted = {k: v for k, v in proposed.items() if v is not None}
    if not wanted.keys() & _INVARIANT_KEYS:
        return []
    before = _invariant_state(dict(wanted), roots)
    after = {**before, **wanted}
    was = _deficits(before, wanted)
    errors: list[Rejected] = []
    for i, (now, key, message) in _deficits(after, wanted).items():
        if now > 0 and (i not in was or now > was[i][0]):
            errors.append(Rejected("invariant", key, f"{message} {when}"))
    return errors


def check_invariants(planned: Sequence[Planned], roots: Roots) -> list[Rejected]:
    """Check cross-key invariants on the state the changeset would leave."""
    proposed = {p.knob.key: parse_ints(p.new) for p in planned if p.knob.kind == "sysctl"}
    return invariant_errors(proposed, roots, "after this changeset")


def order_writes(
    start: Mapping[str, str], targets: Sequence[tuple[str, str]], roots: Roots
) -> list[int]:
    """Order writes so that no intermediate state breaks an invariant more than needed.

    The kernel itself refuses some intermediate states (``ipfrag_low_thresh`` above
    ``ipfrag_high_thresh`` is ``EINVAL``): raising a pair writes the upper key first,
    lowering it the lower key first. Greedy: at each step the first remaining write (in
    the given order) that does not add to the invariants' deficit, else the one that
    adds least.

    :param start: key -> its current canonical value (every target key).
    :param targets: ``(key, value)`` to write, in the preferred order.
    :return: indices into ``targets``.
    """
    keys = [k for k, _ in targets]
    if not set(keys) & _INVARIANT_KEYS:
        return list(range(len(targets)))
    state = _invariant_state(dict.fromkeys(keys), roots)
    for k in keys:
        ints = parse_ints(start.get(k, ""))
        if ints is not None:
            state[k] = ints
    remaining = list(range(len(targets)))
    order: list[int] = []
    while remaining:
        base = _total(state, keys)
        best, best_total = remaining[0], None
        for i in remaining:
            ints = parse_ints(targets[i][1])
            trial = state if ints is None else {**state, keys[i]: ints}
            total = _total(trial, keys)
            if total <= base:
                best = i
                break
            if best_total is None or total < best_total:
                best, best_total = i, total
        order.append(best)
        remaining.remove(best)
        ints = parse_ints(targets[best][1])
        if ints is not None:
            state[keys[best]] = ints
    return order


def validate(
    recs: Sequence[Recommendation],
    policy: Policy,
    roots: Roots,
    recent: RecentChanges | None = None,
) -> tuple[list[Planned], list[Rejected]]:
    """Validate a changeset: every recommendation, then the changeset as a whole.

    :param recent: counts a key's changes in the last hour (the journal); ``None`` skips
        the rate rule.
    :return: the planned changes (meaningful only when there are no rejections) and the
        rejections, one line each.
    """
    errors: list[Rejected] = []
    if len(recs) > policy.max_changes_per_changeset:
        errors.append(
            Rejected(
                "size",
                "",
                f"{len(recs)} changes in one changeset; at most "
                f"{policy.max_changes_per_changeset} (max_changes_per_changeset)",
            )
        )
        return [], errors
    planned: list[Planned] = []
    seen: set[tuple[str, str]] = set()
    for rec in recs:
        try:
            p = plan_one(rec, policy, roots, recent)
        except Rejected as exc:
            errors.append(exc)
            continue
        ident = (p.knob.kind, p.knob.key)
        if ident in seen:
            errors.append(Rejected("duplicate", p.knob.key, "appears twice in one changeset"))
            continue
        seen.add(ident)
        planned.append(p)
    if not errors:
        errors.extend(check_invariants(planned, roots))
    return planned, errors
