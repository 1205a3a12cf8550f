"""The facts a documentation page is built from, each with the source it comes from.

Nothing here is written by a model: the kernel's documentation and ``ctl_table``
(from the knowledge base), the value on this machine (``/proc/sys``), the files
under ``sysctl.d`` that set it, and the kernel agent's rule for it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from assistant.errors import InputError
from assistant.knowledge import DocHit, KnowledgeBase, SysctlDef
from assistant.sysctl_d import Setting, assignments_of, read_settings, same_value
from probes.stats import read_sysctl, sysctl_name, sysctl_names, sysctl_path
from probes.stats.sysctl import sysctl_relative

#: ``/proc/sys`` handler → (type, unit) of the value it reads and writes.
HANDLER_TYPES: dict[str, tuple[str, str]] = {
    "proc_dointvec": ("integer (int)", ""),
    "proc_dointvec_minmax": ("integer (int), bounded", ""),
    "proc_douintvec": ("unsigned integer (unsigned int)", ""),
    "proc_douintvec_minmax": ("unsigned integer (unsigned int), bounded", ""),
    "proc_dou8vec_minmax": ("small unsigned integer (u8), bounded", ""),
    "proc_doulongvec_minmax": ("unsigned long", ""),
    "proc_doulongvec_ms_jiffies_minmax": ("unsigned long", "milliseconds"),
    "proc_dointvec_jiffies": ("integer (int)", "seconds (kept in jiffies)"),
    "proc_dointvec_userhz_jiffies": ("integer (int)", "USER_HZ ticks (kept in jiffies)"),
    "proc_dointvec_ms_jiffies": ("integer (int)", "milliseconds (kept in jiffies)"),
    "proc_dobool": ("boolean (0 or 1)", ""),
    "proc_dostring": ("string", ""),
    "proc_do_large_bitmap": ("bitmap (a list of ranges)", ""),
    "proc_do_static_key": ("boolean (0 or 1), a static key", ""),
    "proc_dointvec_minmax_coredump": ("integer (int), bounded", ""),
    "proc_dostring_coredump": ("string", ""),
    "proc_do_uts_string": ("string", ""),
    "proc_doulongvec_minmax_sysadmin": ("unsigned long", ""),
}


@dataclass
class SysctlFacts:
    """Everything known about one sysctl, each part with its source."""

    name: str
    kernel_version: str | None
    running_release: str
    definition: SysctlDef | None = None
    doc: DocHit | None = None
    value: str | None = None
    namespaced: bool = False
    rule: dict[str, object] | None = None
    rule_source: str = ""
    #: The sysctl.d lines that set it at boot, in the order they apply (the last one wins).
    settings: list[Setting] = field(default_factory=list)
    #: The agent's journaled changes to it (None: the journal could not be asked).
    changes: list[Change] | None = None

    @property
    def proc_path(self) -> str:
        """Return the key's file under ``/proc/sys``."""
        return sysctl_path(self.name)

    @property
    def boot_value_holds(self) -> bool | None:
        """Tell whether the value here is what boot configuration sets (None: nothing sets it,
        or there is no value here)."""
        if not self.settings or self.value is None:
            return None
        return same_value(self.settings[-1].value, self.value)

    @property
    def type_and_unit(self) -> tuple[str, str] | None:
        """Return the (type, unit) its handler implies, or None for a handler not in the table."""
        if self.definition is None:
            return None
        return HANDLER_TYPES.get(self.definition.handler)


def normalise(name: str) -> str:
    """Return a sysctl name in dotted form (``net/core/somaxconn`` → ``net.core.somaxconn``).

    A dotted name keeps a ``/`` of its own (``net.ipv4.conf.eth0/10.rp_filter``).

    :raises InputError: not a sysctl name (an empty component, ``..``).
    """
    name = name.strip().strip("/").removeprefix("proc/sys/")
    try:
        return sysctl_name(sysctl_relative(name))
    except ValueError:
        raise InputError(f"{name!r} is not a sysctl name", "e.g. net.core.somaxconn") from None


_PER_DEVICE = re.compile(r"^(net\.(?:ipv4|ipv6)\.(?:conf|neigh))\.[^.]+\.(.+)$")


def canonical(name: str) -> str:
    """Return a per-device key with its device as ``*`` (``net.ipv4.conf.*.forwarding``)."""
    match = _PER_DEVICE.match(name)
    return f"{match.group(1)}.*.{match.group(2)}" if match else name


def definition_of(kb: KnowledgeBase, name: str) -> SysctlDef | None:
    """Return a sysctl's ctl_table entry: its own, else its per-device table's.

    A per-device table is registered at ``conf/all``, ``conf/default`` and every
    device's directory (``conf/*`` in the knowledge base).
    """
    wildcard = canonical(name)
    for candidate in (name, wildcard, wildcard.replace(".*.", ".default.")):
        if (found := kb.sysctl(candidate)) is not None:
            return found
    return None


def unknown_key(facts: SysctlFacts, kb: KnowledgeBase | None) -> str | None:
    """Say in one line that no such sysctl exists, with the nearest name, or return None.

    A key is unknown when this machine has no such file and the knowledge base has
    neither a ``ctl_table`` entry nor a documentation section for it.
    """
    if facts.value is not None or facts.definition is not None or facts.doc is not None:
        return None
    if read_sysctl(facts.name) is not None:  # write-only or unreadable: it exists
        return None
    names = set(sysctl_names())
    if kb is not None:
        names.update(d.name for d in kb.sysctls() if "*" not in d.name)
    where = "on this machine" + (f" nor in linux {kb.kernel_version}" if kb else "")
    near = difflib.get_close_matches(facts.name, sorted(names), n=1, cutoff=0.8)
    hint = f"did you mean {near[0]}?" if near else "list them with `sysctl -a`"
    return f"no sysctl {facts.name} {where}: {hint}"


def proc_value(name: str) -> str | None:
    """Return the value of a sysctl on this machine as text (one space between numbers), or None."""
    found = read_sysctl(name)
    if found is None or found.value is None:
        return None
    value = found.value
    return " ".join(map(str, value)) if isinstance(value, list) else " ".join(str(value).split())


def agent_rule(name: str) -> tuple[dict[str, object] | None, str]:
    """Return the kernel agent's effective rule for a key (type, range, risk) and its source.

    :return: (None, why) when the policy cannot be loaded or does not know the key.
    """
    from actions.errors import ActionError
    from actions.policy import load_policy
    from assistant.config import load_config

    try:
        policy = load_policy(load_config().agent.policy)
    except ActionError as exc:
        return None, f"the agent's policy cannot be read: {exc.message}"
    if policy.denied_by(name, "."):
        return {"denied": True, "by": policy.denied_by(name, ".")}, policy.source
    spec = policy.spec(name, ".")
    if spec is None or policy.allowed_by(name, ".") is None:
        return None, f"the agent does not manage {name} ({policy.source})"
    rule: dict[str, object] = spec.to_dict()
    rule["baseline"] = policy.in_baseline(name, ".")
    return rule, f"{policy.source}; {spec.source}"


@dataclass(frozen=True)
class Change:
    """One change the kernel agent journaled to a key.

    :param changeset: its changeset id; :param state: ``verified``, ``rolled_back``, ...
    :param created: when, seconds since the epoch.
    """

    changeset: int
    state: str
    created: float
    old: str
    new: str

    @property
    def cite(self) -> str:
        """Return where it is recorded (``kassist agent show ID``)."""
        return (
            f"the agent's journal, changeset {self.changeset} (kassist agent show {self.changeset})"
        )


def agent_changes(
    socket: str | None = None, limit: int = 200
) -> tuple[dict[str, list[Change]] | None, str]:
    """Return the agent's journaled changes by key, newest first, or (None, why not).

    :param socket: the agent's socket (default: the configured one).
    """
    from actions.client import try_history
    from assistant.config import load_config

    reading = try_history(socket or load_config().agent.socket, limit)
    if reading.changesets is None:
        return None, reading.error
    found: dict[str, list[Change]] = {}
    for cs in reading.changesets:
        for change in cs.changes:
            found.setdefault(change.target, []).append(
                Change(cs.id, cs.state, cs.created, change.old, change.new)
            )
    return found, "the agent's journal"


def gather(
    kb: KnowledgeBase | None,
    name: str,
    running_release: str,
    changes: dict[str, list[Change]] | None = None,
) -> SysctlFacts:
    """Collect the facts of one sysctl (``kb`` None: the knowledge base is not built)."""
    name = normalise(name)
    facts = SysctlFacts(name, kb.kernel_version if kb else None, running_release)
    if kb is not None:
        facts.definition = definition_of(kb, name)
        facts.doc = facts.definition.doc if facts.definition else _doc_by_name(kb, name)
    facts.value = proc_value(name)
    definition = facts.definition
    facts.namespaced = bool(
        definition
        and (definition.data.startswith("&init_net.") or definition.source.startswith("net/"))
    ) or name.startswith("net.")
    facts.rule, facts.rule_source = agent_rule(name)
    facts.settings = assignments_of(name, read_settings())
    facts.changes = None if changes is None else changes.get(name, [])
    return facts


def device_free(directory: str) -> str:
    """Return a directory with its network device as ``*`` (``net/ipv4/conf/eth0`` → ``.../*``).

    The documentation writes ``interface``, ``<interface>`` or ``*`` there.
    """
    directory = directory.rstrip("/")
    return re.sub(r"^(net/ipv[46]/(?:conf|neigh))/[^/]+$", r"\1/*", directory)


def _doc_by_name(kb: KnowledgeBase, name: str) -> DocHit | None:
    # A sysctl the sources do not define at a resolved path (per-device tables are
    # built by macros) may still be documented: the entry with its file name whose
    # directory agrees, components from the top, the most (two at least).
    directory, _, leaf = sysctl_relative(name).rpartition("/")
    wanted = device_free(directory).split("/")
    best: tuple[int, DocHit] | None = None
    for doc_dir, doc_name, hit in kb.documented_names():
        if doc_name != leaf:
            continue
        have = device_free(doc_dir).split("/")
        score = 0
        for a, b in zip(wanted, have, strict=False):
            if a != b:
                break
            score += 1
        exact = score == len(wanted) == len(have)
        if (exact or score >= 2) and (best is None or score + 10 * exact > best[0]):
            best = (score + 10 * exact, hit)
    return best[1] if best else None
