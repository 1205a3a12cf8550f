"""The types the knowledge base answers with."""

from __future__ import annotations

from dataclasses import dataclass, field

from assistant.errors import NotAvailable


class KnowledgeUnavailable(NotAvailable):
    """The knowledge base is not built (or cannot be read) on this machine."""


@dataclass(frozen=True)
class DocHit:
    """One section of the kernel's documentation.

    :param path: the rst source inside the tree, e.g. ``Documentation/networking/ip-sysctl.rst``.
    :param title: the section title (or the sysctl entry's term).
    :param anchor: the section's HTML anchor as Sphinx makes it (``#anchor`` on docs.kernel.org).
    :param text: the section's text, rst markup kept.
    :param score: BM25 relevance, higher is better (0.0 where no search ranked it).
    """

    path: str
    title: str
    anchor: str
    text: str
    score: float = 0.0

    @property
    def cite(self) -> str:
        """Return the citation ``Documentation/path.rst#anchor``."""
        return f"{self.path}#{self.anchor}" if self.anchor else self.path


@dataclass(frozen=True)
class Subsystem:
    """One MAINTAINERS section that covers a file.

    :param name: the section title, e.g. ``NETWORKING [IPv4/IPv6]``.
    :param status: its ``S:`` line (``Maintained``, ``Supported``, ``Odd Fixes``, ...).
    :param maintainers: its ``M:`` lines, ``Name <address>``.
    :param reviewers: its ``R:`` lines.
    :param lists: its ``L:`` mailing list addresses (without the ``(moderated ...)`` notes).
    """

    name: str
    status: str
    maintainers: tuple[str, ...] = ()
    reviewers: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()


@dataclass(frozen=True)
class SysctlDef:
    """One sysctl as the kernel's ``struct ctl_table`` entry defines it.

    :param name: the dotted name, e.g. ``net.core.somaxconn``.
    :param table: the C name of the ``struct ctl_table`` array, e.g. ``netns_core_table``.
    :param source: the C file inside the tree, e.g. ``net/core/sysctl_net_core.c``.
    :param line: the 1-based line of its ``.procname`` in ``source``.
    :param handler: its ``.proc_handler``, e.g. ``proc_dointvec_minmax``.
    :param minimum: ``extra1`` where it is a constant (``SYSCTL_ZERO`` → 0), else None.
    :param maximum: ``extra2`` where it is a constant, else None.
    :param default: the constant initialiser of its ``.data`` variable, where one is visible.
    :param maxlen: ``.maxlen`` as written in C (``sizeof(int)``), or "".
    :param mode: ``.mode`` as written in C (``0644``), or "".
    :param data: ``.data`` as written in C (``&sysctl_somaxconn``), or "".
    :param doc: the documentation section that describes it, if any.
    """

    name: str
    table: str
    source: str
    line: int
    handler: str
    minimum: int | None = None
    maximum: int | None = None
    default: str | None = None
    maxlen: str = ""
    mode: str = ""
    data: str = ""
    doc: DocHit | None = field(default=None, compare=False)
