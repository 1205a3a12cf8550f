"""Markdown helpers for every renderer: untrusted text that cannot break out of its Markdown,
and Markdown that shows what it says (``/proc/<pid>/stat`` is not taken for an HTML tag)."""

from __future__ import annotations

import re


def md_inline(text: str) -> str:
    """Return text safe inside a Markdown table cell or inline code span.

    Attacker-influenced text (comm, titles, panic messages) must not break out
    of the Markdown: backticks, pipes and newlines are neutralised.
    """
    return text.replace("`", "'").replace("|", "\\|").replace("\n", " ")


def md_code_block(body: str) -> str:
    """Return ``body`` fenced as a code block that the body cannot close."""
    safe = body.replace("```", "'''")
    return f"```\n{safe}\n```\n"


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
