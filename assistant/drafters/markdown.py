"""Markdown helpers shared by the drafters: :mod:`assistant.markdown`'s, for every renderer."""

from __future__ import annotations

from assistant.markdown import md_code_block, md_inline

__all__ = ["md_code_block", "md_inline"]
