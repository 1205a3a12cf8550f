"""``python -m actions serve ...``: the agent's own entry point (see :mod:`actions.cli`)."""

import sys

from actions.cli import main

sys.exit(main())
