"""``python -m actions serve ...``: the agent's own entry point (see :mod:`actions.cli`)."""

import sys

from actions.cli import main

if __name__ == "__main__":
    sys.exit(main())
