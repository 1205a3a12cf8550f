"""The one sanitiser for untrusted text shown to a person (the CLI, the TUI, the agent's errors).

Recommendations, kernel values and crash text are attacker-influenced: a terminal
escape (CSI, OSC, a C1 control) in them could clear the operator's screen, retitle the
terminal or forge lines. :func:`printable` makes any such text one inert line.
"""

from __future__ import annotations

import unicodedata

#: The escapes shown for the common controls; every other one is ``\\xNN`` or ``\\uNNNN``.
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}
#: Unicode categories never shown raw: controls, format (bidi) characters, surrogates,
#: private use, and line and paragraph separators.
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _escape(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """Return ``text`` as one line safe to print on a terminal: every control, format or
    separator character escaped (``\\n``, ``\\x1b``, ``\\u202e``); nothing is dropped.

    >>> printable("ok\\x1b]0;owned\\x07")
    'ok\\\\x1b]0;owned\\\\x07'
    >>> printable("two\\nlines")
    'two\\\\nlines'
    """
    s = text if isinstance(text, str) else str(text)
    if s.isascii() and s.isprintable():
        return s
    return "".join(
        _escape(c)
        if (c.isascii() and not c.isprintable()) or unicodedata.category(c) in _HIDDEN
        else c
        for c in s
    )


def printable_lines(text: object) -> str:
    """Return ``text`` safe to print, keeping its line breaks: :func:`printable` per line.

    >>> printable_lines("a\\nb\\x1b[2J")
    'a\\nb\\\\x1b[2J'
    """
    s = text if isinstance(text, str) else str(text)
    return "\n".join(printable(line) for line in s.split("\n"))
