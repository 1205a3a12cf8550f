"""Triage a vmcore: drgn's analyses plus the triage engine run over its printk buffer.

A vmcore's log buffer goes through the same engine as a console log, so the
crash gets the same title, type, frame and signature; the drgn analyses
(crashed stack with locals, blocked tasks, memory, modules, sysctls) go into
``TriageResult.vmcore``, a :class:`VmcoreSection`. Printing is the CLI's
(``assistant/cli/vmcore.py``) and the bug report's (``assistant/drafters/vmcore_markdown.py``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from assistant.errors import InputError, NotAvailable
from assistant.triage import TriageResult, triage_lines
from probes.drgn import (
    ANALYSES,
    Analysis,
    DebugSources,
    Findings,
    Progress,
    Target,
    analyse,
    dmesg_lines,
    open_live,
    open_qmp,
    open_vmcore,
)
from probes.errors import ProbeError, ProbeUnavailable

#: The ``FILE`` argument that means the running kernel.
LIVE = "/proc/kcore"
#: The prefix of the ``FILE`` argument that means a QEMU guest: ``qmp:/path/to/qmp.sock``.
QMP_PREFIX = "qmp:"


@dataclass
class VmcoreSection(Findings):
    """drgn's findings about a dump: the ``vmcore`` section of ``kassist triage --vmcore``.

    The :class:`~probes.drgn.Findings` of an analysis (its printk buffer is the
    triage result's input, so only counted here), in the JSON shape the README
    documents.

    :param dmesg_records: how many printk records the buffer held.
    """

    dmesg_records: int = 0

    @classmethod
    def from_analysis(cls, a: Analysis) -> VmcoreSection:
        """Return the section for an analysis."""
        return cls(**a.findings(), dmesg_records=len(a.dmesg or []))


def _open(path: str, sources: DebugSources, progress: Progress | None) -> Target:
    # The running kernel, a QEMU guest, or a dump file, by the FILE argument's form. A
    # running kernel's modules are all loaded (``modules`` is a dump's), and the running
    # kernel's own only from the places named (no ``extra``).
    if path == LIVE:
        return open_live(replace(sources, extra=(), modules=None), progress=progress)
    if path.startswith(QMP_PREFIX):
        return open_qmp(path[len(QMP_PREFIX) :], replace(sources, modules=None), progress)
    return open_vmcore(path, sources, progress)


def open_target(
    path: str,
    vmlinux: str | None = None,
    debug_dir: str | None = None,
    extra: Sequence[str] = (),
    progress: Progress | None = None,
    modules: Collection[str] | None = None,
) -> Target:
    """Open a vmcore, ``/proc/kcore`` (the running kernel) or ``qmp:SOCKET`` (a QEMU guest).

    :param path: the vmcore, :data:`LIVE`, or :data:`QMP_PREFIX` + QEMU's QMP socket.
    :param vmlinux: the fields of :class:`probes.drgn.DebugSources`, as ``debug_dir``,
        ``extra`` (not for the running kernel) and ``modules`` (a dump's only: a running
        kernel's are all loaded).
    :param progress: called with a line before each slow step (loading debug info takes
        seconds); the CLI prints them on stderr.
    :raises NotAvailable: there is no ``/proc/kcore`` here.
    :raises InputError: the dump, or its debug info, cannot be used.
    """
    sources = DebugSources(vmlinux, debug_dir, tuple(extra), modules)
    try:
        return _open(path, sources, progress)
    except ProbeUnavailable as exc:
        raise NotAvailable(exc.message, exc.hint) from None
    except ProbeError as exc:
        raise InputError(exc.message, exc.hint) from None


def analyse_target(
    target: Target, only: Sequence[str] = ANALYSES, with_locals: bool = True
) -> Analysis:
    """Run drgn's analyses over an opened target.

    :raises InputError: nothing could be read from it.
    """
    try:
        return analyse(target, tuple(only), with_locals)
    except ProbeError as exc:
        raise InputError(exc.message, exc.hint) from None


def triage_analysis(analysis: Analysis) -> TriageResult:
    """Triage an analysis' printk buffer and attach the analysis as ``vmcore``.

    :param analysis: the output of :func:`analyse_target` (with ``dmesg``).
    """
    lines = dmesg_lines(analysis.dmesg or [])
    source = analysis.source if analysis.live else f"vmcore:{analysis.source}"
    result = triage_lines(lines, source=source)
    result.warnings.extend(analysis.warnings)
    if analysis.missing_debug_info:
        result.warnings.append(
            "no debug info for modules: " + ", ".join(analysis.missing_debug_info)
        )
    result.warnings.extend(analysis.errors)
    result.vmcore = VmcoreSection.from_analysis(analysis)
    return result


def triage_vmcore(
    path: str,
    vmlinux: str | None = None,
    debug_dir: str | None = None,
    progress: Progress | None = None,
) -> TriageResult:
    """Open a vmcore, run every analysis, and triage its printk buffer.

    >>> result = triage_vmcore("/var/crash/202611270430/vmcore", debug_dir="/usr/lib/debug")
    ... # doctest: +SKIP
    >>> result.crashes[0].title  # doctest: +SKIP
    'BUG: unable to handle kernel NULL pointer dereference in kassist_crash_level3'

    The arguments are :func:`open_target`'s.

    :raises KassistError: the dump or its debug info cannot be used.
    """
    target = open_target(path, vmlinux, debug_dir, progress=progress)
    return triage_analysis(analyse_target(target))
