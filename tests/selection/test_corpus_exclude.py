"""``corpus.exclude``: the selection corpus leaves out the passages a study measures or trains on, by id and by
13-word overlap, and says how many."""

from __future__ import annotations

import json
import logging

import pytest

from nemo_salad.selection.cli import CorpusConfig, load_corpus

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron".split()


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_excluded_ids_and_overlapping_passages_leave_the_corpus(tmp_path, caplog):
    corpus = _jsonl(tmp_path / "web.jsonl", [
        {"id": "keep", "text": "a short passage about rivers and the sea and other things"},
        {"id": "same-id", "text": "another passage that is only excluded by its id here"},
        {"id": "overlap", "text": "it says " + " ".join(WORDS) + " again"},
    ])
    used = _jsonl(tmp_path / "used.jsonl", [{"id": "same-id", "text": "unrelated"},
                                            {"id": "x", "text": " ".join(WORDS)}])
    with caplog.at_level(logging.INFO, logger="nemo_salad.selection.cli"):
        docs = load_corpus(CorpusConfig(jsonl=corpus, min_words=4, exclude=[used]))
    assert [d.id for d in docs] == ["keep"]
    assert "2 of 3 passages removed" in caplog.text
    assert [d.id for d in load_corpus(CorpusConfig(jsonl=corpus, min_words=4))] == ["keep", "same-id", "overlap"]


def test_a_missing_exclude_file_is_named(tmp_path):
    corpus = _jsonl(tmp_path / "web.jsonl", [{"id": "a", "text": "one two three four five six"}])
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_corpus(CorpusConfig(jsonl=corpus, min_words=4, exclude=[str(tmp_path / "nope.jsonl")]))
