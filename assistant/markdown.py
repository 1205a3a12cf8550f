"""Markdown helpers for every renderer: untrusted text that cannot break out of its Markdown."""

from __future__ import annotations


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
