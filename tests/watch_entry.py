"""``kassist watch`` for the tests of its /dev/kmsg machinery: records user space wrote count.

The daemon keeps records of a facility other than the kernel's out of the crash store, and
user space can only write /dev/kmsg with ``LOG_USER``; the kernel cannot be made to oops
here. So the tests that need oopses in the real ring buffer (resume after SIGKILL, storms,
latency) run the real daemon through this entry point, which also takes ``LOG_USER`` (the
only change); ``kassist watch`` itself never does (``tests/test_watch_sources.py`` checks).

    python -m tests.watch_entry [kassist watch options...]
"""

from __future__ import annotations

import sys

from assistant.cli import run
from assistant.watch import daemon

LOG_USER = 1

if __name__ == "__main__":
    daemon.STORED_FACILITIES = frozenset({0, LOG_USER})
    sys.exit(run(["watch", *sys.argv[1:]]))
