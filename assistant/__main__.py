"""``python -m assistant`` runs the kassist CLI."""

from assistant.cli import main

main()
