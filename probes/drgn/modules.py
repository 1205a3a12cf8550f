"""Loaded kernel modules with their addresses and the taint they brought."""

from __future__ import annotations

from dataclasses import dataclass

import drgn
from drgn.helpers.linux.module import for_each_module, module_address_regions, module_taints


@dataclass
class KernelModule:
    """One loaded module.

    :param name: ``module.name``.
    :param address: its lowest address (core text).
    :param size: bytes of all its regions together.
    :param state: ``module.state`` without ``MODULE_STATE_`` (``LIVE``, ``COMING``, ...).
    :param taints: taint letters it set (``O``: out of tree, ``E``: unsigned, ...), or ``""``.
    :param debug_info: drgn found its debug info.
    """

    name: str
    address: int
    size: int
    state: str
    taints: str
    debug_info: bool = False


def _state(mod: drgn.Object) -> str:
    try:
        enumerator: str = mod.state.format_(type_name=False)
    except drgn.FaultError:
        return "?"
    return enumerator.removeprefix("MODULE_STATE_")


def loaded_modules(prog: drgn.Program) -> list[KernelModule]:
    """Return the kernel's loaded modules, in load order (newest first, as ``lsmod``)."""
    out = []
    for mod in for_each_module(prog):
        name = mod.name.string_().decode(errors="replace")
        regions = [r for r in module_address_regions(mod) if r[1]]
        try:
            debug = prog.module(name).debug_file_status == drgn.ModuleFileStatus.HAVE
        except LookupError:
            debug = False
        out.append(
            KernelModule(
                name=name,
                address=min((start for start, _ in regions), default=0),
                size=sum(size for _, size in regions),
                state=_state(mod),
                taints=module_taints(mod),
                debug_info=debug,
            )
        )
    return out
