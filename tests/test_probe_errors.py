"""Error kinds are exception types (ProbeUnavailable), never told apart by a message prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistant.errors import InputError, NotAvailable
from assistant.vmcore import open_target
from probes.drgn import open_live
from probes.errors import ProbeError, ProbeUnavailable
from probes.logs.pstore import iter_pstore
from tests.conftest import run_kassist


def test_unavailable_things_raise_probe_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ProbeUnavailable, match="no dmesg-"):
        list(iter_pstore(str(tmp_path)))
    with pytest.raises(ProbeUnavailable, match="not available here"):
        open_live(kcore=str(tmp_path / "kcore"))


def test_a_bad_input_is_not_unavailable_whatever_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file named like the old prefix: its "no such file" error starts with the same words.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        open_target("not available here")
    assert not isinstance(caught.value, NotAvailable)
    assert caught.value.message == "not available here: no such file"
    with pytest.raises(ProbeError) as raw:
        list(iter_pstore(str(tmp_path / "missing")))
    assert not isinstance(raw.value, ProbeUnavailable)  # not a directory: a bad input


def test_the_cli_exit_status_follows_the_type() -> None:
    # Relative to the checkout, where no such file exists; the message starts "not available".
    proc = run_kassist(["vmcore", "info", "not available here"])
    assert proc.returncode == 1  # an input error (2 is for what this machine cannot do)
    assert proc.stderr == "kassist: not available here: no such file: give the path of a vmcore\n"
