"""N-gram decontamination: drop training passages that share a word n-gram with evaluation items.

Text is normalised to lower-case alphanumeric words; every run of ``n`` consecutive words of every
evaluation text is hashed to 64 bits (a polynomial hash over per-word random keys, wrapping uint64), and a
passage is contaminated when any of its own ``n``-grams hashes into that set. Reference texts shorter than
``n`` words (but at least ``min_words``) are matched as a whole (their full word sequence is one window of
their own length), so a short benchmark item copied verbatim into a passage is caught too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["NgramIndex", "normalize_words"]

_WORD = re.compile(r"[a-z0-9]+")
_MULT = np.uint64(0x9E3779B97F4A7C15)


def normalize_words(text: str) -> list[str]:
    """Lower-case alphanumeric words of ``text`` (punctuation and spacing ignored).

    >>> normalize_words("It's 5 o'clock -- Tea-time!")
    ['it', 's', '5', 'o', 'clock', 'tea', 'time']
    """
    return _WORD.findall(text.lower())


class NgramIndex:
    """A set of hashed word n-grams of reference texts, queried with other texts.

    Args:
        texts (Iterable[str]): reference texts (e.g. all evaluation items).
        n (int): n-gram length in words. Default: 13.
        min_words (int): reference texts with fewer words are ignored (too short to identify leakage).
            Default: 10.

    >>> index = NgramIndex(["the quick brown fox jumps over the lazy dog"], n=5, min_words=5)
    >>> index.contains("Look: The quick brown fox jumps high.")
    True
    >>> index.contains("the quick brown cat jumps")
    False
    """

    def __init__(self, texts: Iterable[str], n: int = 13, min_words: int = 10) -> None:
        if not 1 <= min_words <= n:
            raise ValueError(f"need 1 <= min_words <= n, got n={n}, min_words={min_words}")
        self.n = n
        self.min_words = min_words
        self._keys: dict[str, int] = {}
        self._key_values = np.random.default_rng(0).integers(1, 2**63, size=1 << 16, dtype=np.uint64)
        words = [w for w in (normalize_words(t) for t in texts) if len(w) >= min_words]
        self._lengths = sorted({min(n, len(w)) for w in words})
        parts = []
        for size in self._lengths:
            group = [w for w in words if min(n, len(w)) == size]
            parts.append(self._windows(group, size)[0])
        self._set = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.uint64)

    def __len__(self) -> int:
        return int(self._set.size)

    def _ids(self, words: Sequence[str]) -> np.ndarray:
        """Random 64-bit key per word: (len(words),) uint64."""
        keys = self._keys
        index = np.fromiter((keys.setdefault(w, len(keys)) for w in words), np.int64, len(words))
        if len(keys) > self._key_values.size:  # grow the key table deterministically
            extra = np.random.default_rng(len(keys)).integers(1, 2**63, size=len(keys), dtype=np.uint64)
            self._key_values = np.concatenate([self._key_values, extra])
        return self._key_values[index]

    def _windows(self, docs: Sequence[Sequence[str]], size: int) -> tuple[np.ndarray, np.ndarray]:
        """Hashes of all ``size``-word windows inside each document, and each window's document index."""
        lengths = np.array([len(d) for d in docs], np.int64)
        if lengths.sum() < size:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        ids = self._ids([w for d in docs for w in d])  # (W,)
        doc_of = np.repeat(np.arange(len(docs)), lengths)  # (W,)
        end = np.cumsum(lengths)  # (D,) one past each document's last word
        count = len(ids) - size + 1
        acc = np.zeros(count, np.uint64)
        with np.errstate(over="ignore"):
            for offset in range(size):  # h = ((k0 * M + k1) * M + k2) ... wrapping uint64
                acc = acc * _MULT + ids[offset:offset + count]
            acc ^= np.uint64(size)
        valid = np.arange(count) + size <= end[doc_of[:count]]  # window ends inside its own document
        return acc[valid], doc_of[:count][valid]

    def _member(self, hashes: np.ndarray) -> np.ndarray:
        """Boolean mask of ``hashes`` present in the (sorted, unique) index."""
        if self._set.size == 0:
            return np.zeros(hashes.shape, bool)
        pos = np.searchsorted(self._set, hashes).clip(max=self._set.size - 1)
        return self._set[pos] == hashes

    def contains_many(self, texts: Sequence[str]) -> np.ndarray:
        """Whether each text shares an indexed n-gram (or contains a whole short reference text).

        Returns:
            np.ndarray: (len(texts),) bool.

        >>> NgramIndex(["a b c d e f"], n=3, min_words=3).contains_many(["x a b c", "a b x c"]).tolist()
        [True, False]
        """
        docs = [normalize_words(t) for t in texts]
        hit = np.zeros(len(texts), bool)
        for size in self._lengths:
            hashes, doc_of = self._windows(docs, size)
            hit[doc_of[self._member(hashes)]] = True
        return hit

    def contains(self, text: str) -> bool:
        """Whether ``text`` shares any indexed n-gram (or contains a whole short reference text)."""
        return bool(self.contains_many([text])[0])
