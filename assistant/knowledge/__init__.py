"""The kernel's own knowledge, offline: documentation, MAINTAINERS and sysctls in SQLite.

Built once (``kassist kb build``; ``setup.sh`` does it as root) from the Debian
packages ``linux-doc-6.1`` and ``linux-source-6.1``; read with :func:`open_default`
or :func:`try_open`. A missing knowledge base is one notice line for the caller,
never an error of its own.
"""

from __future__ import annotations

from assistant.knowledge.base import KnowledgeBase, open_default, try_open
from assistant.knowledge.model import DocHit, KnowledgeUnavailable, Subsystem, SysctlDef

__all__ = [
    "DocHit",
    "KnowledgeBase",
    "KnowledgeUnavailable",
    "Subsystem",
    "SysctlDef",
    "open_default",
    "try_open",
]
