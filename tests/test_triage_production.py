"""A production kernel's oops, as a Debian kernel prints it on a serial console."""

from __future__ import annotations

from assistant.triage import triage_path
from tests.conftest import DATA

LOG = DATA / "oops-null-deref-debian-6.1.log"


def test_oops_then_panic_is_one_crash_that_panicked() -> None:
    result = triage_path(str(LOG))
    (crash,) = result.crashes  # the "Kernel panic - not syncing: Fatal exception" joins it
    assert crash.title == (
        "BUG: unable to handle kernel NULL pointer dereference in kassist_crash_level3"
    )
    assert crash.panicked
    assert crash.frame == "kassist_crash_level3"
    assert crash.end_line >= 80  # the report runs past the register dump to the panic


def test_release_and_taint_letters_with_gaps() -> None:
    (crash,) = triage_path(str(LOG)).crashes
    assert crash.kernel.release == "6.1.0-56-cloud-amd64"
    assert set(crash.kernel.tainted) >= {"O", "E"}
    assert crash.task.comm == "kassist-crash"
    assert crash.task.pid == 91
