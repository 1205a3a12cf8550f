"""Drafters: bug reports, documentation and tuning recommendations, for a person to review."""
