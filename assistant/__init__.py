"""kassist's user-space extension: crash triage, the LLM runtime, drafters and the CLI."""

__version__ = "0.1.0"
