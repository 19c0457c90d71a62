"""Step 1 of Stage II selection: sentence embeddings of a text corpus, streamed in chunks into a memory-mapped
array, resumable after a kill.

Layout of ``out_dir``::

    embeddings.npy    (N, D) float32 or float16, a NumPy ``.npy`` file opened with ``np.load(mmap_mode="r")``
    embeddings.json   {"n", "dim", "dtype", "model", "fingerprint", "chunk_size", "done_chunks", "complete"}

Chunks are written in order; after each chunk the array is flushed and then the sidecar is replaced atomically, so
``done_chunks`` never counts a chunk that is not on disk. A rerun with the same texts, encoder and settings
continues after the last complete chunk; anything else starts over.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nemo_salad.selection.artefacts import read_json, write_json_atomic
from nemo_salad.selection.encoders import TextEncoder

__all__ = ["embed_texts", "load_embeddings", "texts_fingerprint"]

log = logging.getLogger(__name__)

ARRAY = "embeddings.npy"
SIDECAR = "embeddings.json"


def texts_fingerprint(texts: Sequence[str]) -> str:
    """SHA-256 over the texts in order (length-prefixed, so boundaries count).

    >>> texts_fingerprint(["ab", "c"]) == texts_fingerprint(["a", "bc"])
    False
    """
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def embed_texts(
    texts: Sequence[str],
    encoder: TextEncoder,
    out_dir: str | Path,
    chunk_size: int = 2048,
    dtype: str = "float32",
) -> np.ndarray:
    """Embed ``texts`` into ``out_dir`` (see the module docstring), reusing finished work.

    Args:
        texts (Sequence[str]): the corpus, N texts.
        encoder (TextEncoder): produces (B, D) unit-norm float32 rows.
        out_dir (str | Path): artefact directory (created).
        chunk_size (int): texts per resumable chunk. Default: 2048.
        dtype (str): ``"float32"`` or ``"float16"`` on disk. Default: "float32".

    Returns:
        np.ndarray: the (N, D) embeddings, a read-only memory map.

    Raises:
        ValueError: for an empty corpus, a bad dtype/chunk size, or an encoder output of the wrong shape.

    >>> import tempfile
    >>> from nemo_salad.selection.encoders import HashingEncoder
    >>> emb = embed_texts(["a cat", "a dog", "stocks"], HashingEncoder(dim=8), tempfile.mkdtemp(), chunk_size=2)
    >>> emb.shape, emb.dtype
    ((3, 8), dtype('float32'))
    """
    if len(texts) == 0:
        raise ValueError("cannot embed an empty corpus")
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be 'float32' or 'float16', got {dtype!r}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, dim = len(texts), int(encoder.dim)
    meta = {"n": n, "dim": dim, "dtype": dtype, "model": encoder.name, "chunk_size": int(chunk_size),
            "fingerprint": hashlib.sha256(f"{texts_fingerprint(texts)}|{encoder.name}|{dim}|{dtype}".encode())
            .hexdigest()}
    old = read_json(out / SIDECAR)
    same = old is not None and all(old.get(k) == v for k, v in meta.items()) and (out / ARRAY).is_file()
    if same and old.get("complete"):  # type: ignore[union-attr]
        return load_embeddings(out, expect_fingerprint=meta["fingerprint"])
    if same:
        done = int(old.get("done_chunks", 0))  # type: ignore[union-attr]
        array = np.lib.format.open_memmap(out / ARRAY, mode="r+")
        if array.shape != (n, dim) or array.dtype != np.dtype(dtype):
            done, array = 0, None
    else:
        done, array = 0, None
    if array is None:
        (out / SIDECAR).unlink(missing_ok=True)
        array = np.lib.format.open_memmap(out / ARRAY, mode="w+", dtype=np.dtype(dtype), shape=(n, dim))
        write_json_atomic(out / SIDECAR, {**meta, "done_chunks": 0, "complete": False})
    n_chunks = -(-n // chunk_size)
    if done:
        log.info("embeddings: resuming at chunk %d/%d in %s", done, n_chunks, out)
    for chunk in range(done, n_chunks):
        lo, hi = chunk * chunk_size, min(n, (chunk + 1) * chunk_size)
        rows = np.asarray(encoder.encode(list(texts[lo:hi])))
        if rows.shape != (hi - lo, dim):
            raise ValueError(f"encoder {encoder.name!r} returned shape {rows.shape} for {hi - lo} texts; "
                             f"expected ({hi - lo}, {dim})")
        array[lo:hi] = rows
        array.flush()
        write_json_atomic(out / SIDECAR, {**meta, "done_chunks": chunk + 1, "complete": chunk + 1 == n_chunks})
    del array
    return load_embeddings(out, expect_fingerprint=meta["fingerprint"])


def load_embeddings(out_dir: str | Path, expect_fingerprint: str | None = None) -> np.ndarray:
    """Open finished embeddings read-only (memory-mapped).

    Args:
        out_dir (str | Path): a directory written by :func:`embed_texts`.
        expect_fingerprint (str | None): if given, the sidecar must carry this fingerprint. Default: None.

    Returns:
        np.ndarray: (N, D) memory map.

    Raises:
        FileNotFoundError: if the directory holds no complete embeddings.
        ValueError: if the array disagrees with its sidecar or the fingerprint differs.

    >>> import tempfile
    >>> from nemo_salad.selection.encoders import HashingEncoder
    >>> d = tempfile.mkdtemp(); _ = embed_texts(["x", "y"], HashingEncoder(dim=4), d)
    >>> load_embeddings(d).shape
    (2, 4)
    """
    out = Path(out_dir)
    meta = read_json(out / SIDECAR)
    if meta is None or not meta.get("complete") or not (out / ARRAY).is_file():
        raise FileNotFoundError(f"{out} holds no complete embeddings (run embed_texts first; "
                                f"sidecar: {meta and {k: meta.get(k) for k in ('done_chunks', 'complete')}})")
    if expect_fingerprint is not None and meta.get("fingerprint") != expect_fingerprint:
        raise ValueError(f"{out / SIDECAR}: fingerprint {meta.get('fingerprint')!r} does not match the corpus "
                         f"and encoder ({expect_fingerprint!r}); delete the directory or embed again")
    array = np.load(out / ARRAY, mmap_mode="r")
    if array.shape != (meta["n"], meta["dim"]) or array.dtype != np.dtype(meta["dtype"]):
        raise ValueError(f"{out / ARRAY}: shape {array.shape} {array.dtype} disagrees with {out / SIDECAR} "
                         f"({meta['n']}, {meta['dim']}) {meta['dtype']}")
    return array
