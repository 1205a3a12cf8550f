"""The agent's policy: a TOML file of plain data (see ``default_policy.toml``).

A key may be changed when it matches an ``allow`` glob and no ``deny`` glob (a key named
exactly in ``deny_except`` is not covered by the deny globs: ``kernel.pid_max`` under
``kernel.**``; such a name may not be a glob nor a security-baseline key). Its
range is the intersection of the built-in table (:mod:`actions.limits`) and the
policy's ``[keys."glob"]`` entry. Security-baseline keys are never lowered
unless listed in ``[baseline] override``; a policy's ``[baseline] keys`` add to the
built-in floors (:data:`~actions.limits.SECURITY_BASELINE`), never replace them.
"Lower" is the key's security order: its number, or the explicit order of
:data:`~actions.limits.SECURITY_ORDER` and ``[baseline] order`` (least strict first;
``kernel.unprivileged_bpf_disabled`` is ``[0, 2, 1]``), where a value outside the list
cannot be ranked and is refused.
:meth:`Policy.table` gives the whole policy as the plain data a BPF map would hold.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from actions.errors import ActionError
from actions.knobs import first_match, glob_match, parse_ints
from actions.limits import (
    SECURITY_BASELINE,
    SECURITY_ORDER,
    Machine,
    Spec,
    builtin_entry,
    machine,
    resolve_spec,
)
from actions.model import RISKS

_TOP = {
    "version",
    "max_step",
    "max_changes_per_hour",
    "max_changes_per_changeset",
    "auto_approve",
    "allow",
    "deny",
    "deny_except",
    "baseline",
    "keys",
}
_BASELINE_FIELDS = {"keys", "override", "order"}
_KEY_FIELDS = {"type", "min", "max", "length", "values", "risk", "max_step"}
_TYPES = {"int", "ints", "choice"}


@dataclass(frozen=True)
class Policy:
    """A loaded policy.

    :param max_step: the factor one change may move a numeric value by (x and /).
    :param max_changes_per_hour: changes per key per hour.
    :param auto_approve: the highest risk applied without a person's confirmation, or "none".
    """

    allow: tuple[str, ...]
    deny: tuple[str, ...]
    baseline: tuple[str, ...]
    baseline_override: tuple[str, ...] = ()
    #: exact key names the deny globs do not cover (they still need an allow glob)
    deny_except: tuple[str, ...] = ()
    #: baseline key -> its values from the least strict to the strictest (see the module)
    baseline_order: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(SECURITY_ORDER))
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_step: float = 4.0
    max_changes_per_hour: int = 3
    max_changes_per_changeset: int = 16
    auto_approve: str = "none"
    source: str = "built-in default policy"
    machine: Machine = field(default_factory=machine)
    _specs: dict[tuple[str, str], Spec | None] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def denied_by(self, key: str, sep: str) -> str | None:
        """Return the deny glob that matches ``key``, if any (none for a ``deny_except`` key)."""
        if key in self.deny_except:
            return None
        return first_match(self.deny, key, sep)

    def allowed_by(self, key: str, sep: str) -> str | None:
        """Return the allow glob that matches ``key``, if any."""
        return first_match(self.allow, key, sep)

    def in_baseline(self, key: str, sep: str) -> bool:
        """Tell whether ``key`` is a security-baseline key."""
        return first_match(self.baseline, key, sep) is not None

    def may_lower_baseline(self, key: str, sep: str) -> bool:
        """Tell whether the policy explicitly lets ``key`` be lowered."""
        return first_match(self.baseline_override, key, sep) is not None

    def security_rank(self, key: str, value: int) -> int | None:
        """Return where ``value`` stands in ``key``'s security order (higher: stricter).

        :return: the value itself for a key ordered by number; its index in the key's
            explicit order; ``None`` for a value outside that order (it cannot be ranked).
        """
        order = self.baseline_order.get(key)
        if order is None:
            return value
        return order.index(value) if value in order else None

    def lowers_baseline(self, key: str, sep: str, old: str, new: str) -> bool:
        """Tell whether changing a baseline key from ``old`` to ``new`` makes it less strict.

        A value that cannot be ranked counts as lowering (fail closed); a key outside the
        baseline, or a value that is not an integer, never does.

        :param old: the current value (canonical text); ``new``: the value to write.
        """
        if not self.in_baseline(key, sep):
            return False
        before, after = parse_ints(old), parse_ints(new)
        if before is None or after is None:
            return False
        was, now = self.security_rank(key, before[0]), self.security_rank(key, after[0])
        return was is None or now is None or now < was

    def spec(self, key: str, sep: str) -> Spec | None:
        """Return the effective spec of ``key``: built-in limits narrowed by the policy.

        :return: ``None`` when neither the built-in table nor the policy knows the key.
        """
        if (key, sep) not in self._specs:
            self._specs[(key, sep)] = self._spec(key, sep)
        return self._specs[(key, sep)]

    def _spec(self, key: str, sep: str) -> Spec | None:
        found = builtin_entry(key, sep)
        spec = None
        if found is not None:
            spec = resolve_spec(found[1], self.machine, "kassist's table of known limits")
        entry = next((e for g, e in self.keys.items() if glob_match(g, key, sep)), None)
        if entry is None:
            return spec
        if spec is None:
            if "type" not in entry:
                return None
            return resolve_spec(entry, self.machine, f"the policy ({self.source})")
        return _narrow(spec, entry, self.source)

    def table(self) -> list[dict[str, Any]]:
        """Return the policy as plain data: one row per allow glob, deny glob and baseline key.

        This is what a BPF map for a ``BPF_PROG_TYPE_CGROUP_SYSCTL`` program would hold.
        """
        rows: list[dict[str, Any]] = []
        for g in self.deny:
            rows.append({"pattern": g, "action": "deny"})
        for k in self.deny_except:
            rows.append({"pattern": k, "action": "except"})
        for g in self.baseline:
            override = self.may_lower_baseline(g, "/" if "/" in g else ".")
            order = self.baseline_order.get(g)
            rows.append(
                {
                    "pattern": g,
                    "action": "baseline",
                    "override": override,
                    # least strict first; None: by number (a BPF floor compares ranks)
                    "order": list(order) if order is not None else None,
                }
            )
        for g in self.allow:
            sep = "/" if "/" in g else "."
            spec = self.spec(g, sep)
            row: dict[str, Any] = {"pattern": g, "action": "allow"}
            if spec is not None:
                row.update(spec.to_dict())
            rows.append(row)
        return rows


def _narrow(spec: Spec, entry: dict[str, Any], source: str) -> Spec:
    lo, hi = spec.min, spec.max
    src = spec.source
    if "min" in entry and (lo is None or entry["min"] > lo):
        lo, src = int(entry["min"]), f"the policy ({source})"
    if "max" in entry and (hi is None or entry["max"] < hi):
        hi, src = int(entry["max"]), f"the policy ({source})"
    values = spec.values
    if "values" in entry:
        allowed = set(entry["values"])
        values = tuple(v for v in spec.values if v in allowed) if spec.values else tuple(allowed)
    step = float(entry["max_step"]) if "max_step" in entry else spec.max_step
    return replace(
        spec,
        min=lo,
        max=hi,
        values=values,
        risk=str(entry.get("risk", spec.risk)),
        max_step=step,
        source=src,
    )


def _strings(doc: dict[str, Any], name: str, where: str) -> tuple[str, ...]:
    value = doc.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ActionError(f"{where}: {name} must be a list of strings", "fix the policy file")
    return tuple(value)


def _check_keys(keys: object, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(keys, dict):
        raise ActionError(f"{where}: [keys] must be a table", 'write [keys."net.core.somaxconn"]')
    out: dict[str, dict[str, Any]] = {}
    for pattern, entry in keys.items():
        if not isinstance(entry, dict):
            raise ActionError(f"{where}: keys.{pattern} must be a table", "fix the policy file")
        unknown = set(entry) - _KEY_FIELDS
        if unknown:
            raise ActionError(
                f"{where}: keys.{pattern}: unknown field {sorted(unknown)[0]!r}",
                f"known fields: {', '.join(sorted(_KEY_FIELDS))}",
            )
        if "type" in entry and entry["type"] not in _TYPES:
            raise ActionError(f"{where}: keys.{pattern}.type must be int, ints or choice", "")
        if "risk" in entry and entry["risk"] not in RISKS:
            raise ActionError(f"{where}: keys.{pattern}.risk must be low, medium or high", "")
        for num in ("min", "max", "length"):
            if num in entry and (not isinstance(entry[num], int) or isinstance(entry[num], bool)):
                raise ActionError(f"{where}: keys.{pattern}.{num} must be an integer", "")
        out[pattern] = entry
    return out


def _orders(baseline: dict[str, Any], where: str) -> dict[str, tuple[int, ...]]:
    # The built-in orders, and the policy's own for other keys (never a built-in's changed).
    extra = baseline.get("order", {})
    if not isinstance(extra, dict):
        raise ActionError(
            f"{where}: [baseline] order must be a table",
            'write order = { "kernel.some_key" = [0, 2, 1] } (least strict first)',
        )
    orders = dict(SECURITY_ORDER)
    for key, values in extra.items():
        ints = isinstance(values, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        )
        if not ints or not values or len(set(values)) != len(values):
            raise ActionError(
                f"{where}: [baseline] order.{key} must be a list of distinct integers",
                "least strict first",
            )
        if key in SECURITY_ORDER and tuple(values) != SECURITY_ORDER[key]:
            raise ActionError(
                f"{where}: [baseline] order.{key}: kassist's own order is "
                f"{list(SECURITY_ORDER[key])} and cannot be changed",
                "remove it from the policy",
            )
        orders[key] = tuple(values)
    return orders


def _deny_except(doc: dict[str, Any], baseline: tuple[str, ...], where: str) -> tuple[str, ...]:
    names = _strings(doc, "deny_except", where)
    for name in names:
        if "*" in name:
            raise ActionError(f"{where}: deny_except {name!r} is a glob", "name each key exactly")
        if first_match(baseline, name, "/" if "/" in name else ".") is not None:
            raise ActionError(
                f"{where}: deny_except {name!r} is a security-baseline key",
                "the baseline is never exempted from deny",
            )
    return names


def policy_from_dict(doc: dict[str, Any], source: str, m: Machine | None = None) -> Policy:
    """Build a :class:`Policy` from decoded TOML.

    :raises ActionError: an unknown field or a mistyped value, named in one line.
    """
    unknown = set(doc) - _TOP
    if unknown:
        raise ActionError(
            f"{source}: unknown policy field {sorted(unknown)[0]!r}",
            f"known fields: {', '.join(sorted(_TOP))}",
        )
    if doc.get("version", 1) != 1:
        raise ActionError(f"{source}: policy version {doc.get('version')!r}", "this agent reads 1")
    baseline = doc.get("baseline", {})
    if not isinstance(baseline, dict):
        raise ActionError(f"{source}: [baseline] must be a table", "fix the policy file")
    unknown = set(baseline) - _BASELINE_FIELDS
    if unknown:
        raise ActionError(
            f"{source}: unknown [baseline] field {sorted(unknown)[0]!r}",
            f"known fields: {', '.join(sorted(_BASELINE_FIELDS))}",
        )
    auto = doc.get("auto_approve", "none")
    if auto not in ("none", *RISKS):
        raise ActionError(f"{source}: auto_approve must be none, low, medium or high", "")
    step = doc.get("max_step", 4.0)
    if not isinstance(step, int | float) or step < 1:
        raise ActionError(f"{source}: max_step must be a number >= 1", "the default is 4")
    per_hour = doc.get("max_changes_per_hour", 3)
    per_set = doc.get("max_changes_per_changeset", 16)
    for name, val in (("max_changes_per_hour", per_hour), ("max_changes_per_changeset", per_set)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise ActionError(f"{source}: {name} must be a positive integer", "")
    # The built-in floors always apply: a policy's own list only adds to them.
    floors = tuple(dict.fromkeys((*SECURITY_BASELINE, *_strings(baseline, "keys", source))))
    return Policy(
        allow=_strings(doc, "allow", source),
        deny=_strings(doc, "deny", source),
        deny_except=_deny_except(doc, floors, source),
        baseline=floors,
        baseline_override=_strings(baseline, "override", source),
        baseline_order=_orders(baseline, source),
        keys=_check_keys(doc.get("keys", {}), source),
        max_step=float(step),
        max_changes_per_hour=per_hour,
        max_changes_per_changeset=per_set,
        auto_approve=str(auto),
        source=source,
        machine=m or machine(),
    )


def load_policy(path: str | Path | None = None) -> Policy:
    """Load a policy file, or the built-in default policy when ``path`` is empty.

    :raises ActionError: a file that cannot be read, is not TOML, or breaks the schema.
    """
    if not path:
        text = resources.files("actions").joinpath("default_policy.toml").read_text()
        return policy_from_dict(tomllib.loads(text), "built-in default policy")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ActionError(f"cannot read policy {path}: {exc.strerror}", "check the path") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ActionError(f"{path}: not valid TOML ({exc})", "fix the policy file") from None
    return policy_from_dict(doc, str(path))
