"""The offline broad-text corpus: passage bounds, stable ids, determinism, and no evaluation-benchmark text."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re

import numpy as np
import pytest

from nemo_salad.data.decontaminate import NgramIndex
from nemo_salad.data.olmo_text import EVAL_BENCHMARKS, TEXT_SOURCES, eval_benchmark_texts
from nemo_salad.data.text_corpus import chunk_text, offline_text_corpus, read_text_jsonl, split_sentences

_WORD = re.compile(r"[a-z0-9]+")


@pytest.fixture(scope="module")
def corpus():
    return offline_text_corpus()


@pytest.fixture(scope="module")
def eval_grams():
    """Reference re-computation of the leak criterion with plain string n-grams (no hashing): every 13-word
    window of every benchmark text, and benchmark texts of 10-12 words as whole word sequences."""
    grams: dict[int, set[str]] = {}
    for texts in eval_benchmark_texts().values():
        for text in texts:
            words = _WORD.findall(text.lower())
            if len(words) < 10:
                continue
            size = min(13, len(words))
            grams.setdefault(size, set()).update(" ".join(words[i:i + size]) for i in range(len(words) - size + 1))
    return grams


def _leaks(text: str, grams: dict[int, set[str]]) -> bool:
    words = _WORD.findall(text.lower())
    return any(" ".join(words[i:i + s]) in g for s, g in grams.items() for i in range(len(words) - s + 1))


def test_eval_benchmarks_cannot_be_requested():
    for name in [*EVAL_BENCHMARKS, "ARC-Easy", "arc_challenge", "mmlu", "HellaSwag", "openbookqa"]:
        with pytest.raises(ValueError, match="evaluation benchmark"):
            offline_text_corpus([name])
    with pytest.raises(ValueError, match="unknown text source 'wikitext'.*boolq"):
        offline_text_corpus(["wikitext"])
    assert not set(TEXT_SOURCES) & set(EVAL_BENCHMARKS)


def test_no_passage_contains_benchmark_text(corpus, eval_grams):
    # The benchmarks are really loaded (a broken reader would make this test vacuous).
    texts = eval_benchmark_texts()
    assert min(len(texts[n]) for n in EVAL_BENCHMARKS if n != "storycloze") >= 300
    assert sum(len(g) for g in eval_grams.values()) > 1_000_000
    # Positive control: raw medical chunks DO share 13-grams with MMLU, so the check can detect a leak ...
    raw = [c for _, t in TEXT_SOURCES["medqa"]() for c in chunk_text(t)]
    assert sum(_leaks(c, eval_grams) for c in raw) >= 20
    # ... and none survive in the corpus: all medical passages plus a random sample of the rest.
    rng = np.random.default_rng(0)
    medical = [d for d in corpus if d.source in ("medqa", "medmcqa")]
    others = [d for d in corpus if d.source not in ("medqa", "medmcqa")]
    sample = medical + [others[i] for i in rng.choice(len(others), 3000, replace=False)]
    leaked = [d.id for d in sample if _leaks(d.text, eval_grams)]
    assert leaked == []


def test_ngram_index_catches_an_injected_item():
    item = next(t for t in eval_benchmark_texts()["arc_easy"] if len(t.split()) >= 20)
    index = NgramIndex([item, "an unrelated reference sentence that is long enough to be indexed here"])
    passage = f"Some innocent preamble. {item.upper()} And an epilogue."
    assert index.contains_many([passage, "Some innocent preamble. And an epilogue."]).tolist() == [True, False]


def test_passages_bounded_unique_and_stably_identified(corpus):
    assert len(corpus) > 40_000
    assert len({d.source for d in corpus}) == len(TEXT_SOURCES)
    words = np.array([len(d.text.split()) for d in corpus])
    assert words.min() >= 12 and words.max() <= 64
    assert len({d.id for d in corpus}) == len(corpus)
    assert len({" ".join(_WORD.findall(d.text.lower())) for d in corpus}) == len(corpus)
    for d in corpus[::997]:
        key = " ".join(_WORD.findall(d.text.lower()))
        assert d.id == f"{d.source}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def test_limit_is_a_seeded_subset(corpus):
    a = offline_text_corpus(limit=500, seed=1)
    assert a == offline_text_corpus(limit=500, seed=1)
    b = offline_text_corpus(limit=500, seed=2)
    assert len(a) == len(b) == 500 and a != b
    ids = {d.id: i for i, d in enumerate(corpus)}
    positions = [ids[d.id] for d in a]
    assert positions == sorted(positions)  # a subset in corpus order
    narrow = offline_text_corpus(["sciq", "boolq"], min_words=20, max_words=40)
    assert {d.source for d in narrow} == {"sciq", "boolq"}
    assert all(20 <= len(d.text.split()) <= 40 for d in narrow)


def test_chunking_is_sentence_bounded():
    text = "First short one. " + " ".join(f"W{i}" for i in range(25)) + ". Tail here."
    chunks = chunk_text(text, min_words=3, max_words=10)
    assert all(3 <= len(c.split()) <= 10 for c in chunks)
    assert " ".join(chunks).split() == text.split()  # nothing lost or reordered here
    assert chunks[0] == "First short one."  # sentence boundary respected before the long sentence
    assert split_sentences("Dr. Who arrived. it was late") == ["Dr.", "Who arrived. it was late"]
    assert chunk_text("Too short.", min_words=3, max_words=10) == []
    with pytest.raises(ValueError, match="min_words"):
        chunk_text("x", min_words=5, max_words=2)


def test_read_text_jsonl_counts_and_names_bad_lines(tmp_path, caplog):
    path = tmp_path / "web.jsonl.gz"
    lines = ['{"id": "a", "text": "First   page."}', "{broken", '{"text": 5}', "[1, 2]", "",
             '{"text": "No id here."}', '{"id": "c", "text": "  "}']
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING):
        docs = read_text_jsonl(path)
    assert [(d.id, d.text, d.source) for d in docs] == [("a", "First page.", "web"), ("web-6", "No id here.", "web")]
    messages = "\n".join(r.getMessage() for r in caplog.records)
    for line in (2, 3, 4, 7):
        assert f"{path}:{line}:" in messages
    assert "skipped 4 bad lines" in messages
    dup = tmp_path / "dup.jsonl"
    dup.write_text(json.dumps({"id": "x", "text": "one"}) + "\n" + json.dumps({"id": "x", "text": "two"}) + "\n")
    with pytest.raises(ValueError, match=r"dup.jsonl:2: duplicate id 'x' \(first on line 1\)"):
        read_text_jsonl(dup)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        read_text_jsonl(tmp_path / "missing.jsonl")
