"""Prompt templates, as data files: Jinja2 bodies under a TOML front matter.

This package holds no code; ``assistant.llm.prompts`` loads and renders its files.
"""
