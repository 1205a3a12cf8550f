"""Markdown that shows what it says: ``<pid>`` in documentation stays ``<pid>``.

A Markdown renderer with HTML enabled (Textual's, most viewers') takes ``<pid>`` in
``/proc/<pid>/oom_score`` for a tag and drops it. :func:`markdown_safe` escapes angle
brackets outside code (fenced blocks and inline code spans keep them as they are, where
no renderer reads tags).
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def _escape_text(text: str) -> str:
    out = []
    last = 0
    for m in _CODE_SPAN.finditer(text):
        out.append(text[last : m.start()].replace("<", "\\<").replace(">", "\\>"))
        out.append(m.group(0))
        last = m.end()
    out.append(text[last:].replace("<", "\\<").replace(">", "\\>"))
    return "".join(out)


def markdown_safe(text: str) -> str:
    """Escape ``<`` and ``>`` outside code so that no renderer takes them for HTML.

    A line starting with ``>`` (a block quote) keeps its marker.

    >>> markdown_safe("read /proc/<pid>/oom_score, or `cat /proc/<pid>/stat`")
    'read /proc/\\\\<pid\\\\>/oom_score, or `cat /proc/<pid>/stat`'
    >>> markdown_safe("> quoted <b>")
    '> quoted \\\\<b\\\\>'
    """
    out: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        m = _FENCE.match(line)
        if fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                fence = None
            out.append(line)
            continue
        if m:
            fence = m.group(1)
            out.append(line)
            continue
        quote = re.match(r"^(\s*(?:>\s?)+)", line)
        head = quote.group(1) if quote else ""
        out.append(head + _escape_text(line[len(head) :]))
    return "\n".join(out)
