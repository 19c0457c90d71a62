"""The demo corpus with held-out and replay text from other sources than the training speech (the study's narrow
speech / broad text split): parts disjoint, from their own sources, free of 13-gram overlap with the training
speech; a config without the new keys keeps its cache directory and passages."""

from __future__ import annotations

import pytest

from nemo_salad.data.decontaminate import NgramIndex
from nemo_salad.data.demo import demo_dir, demo_passages

NARROW = {"sources": ["mrpc"], "n_train": 20, "n_val": 6, "n_replay": 30, "min_words": 8, "max_words": 30}


def test_held_out_and_replay_come_from_the_broad_sources_and_stay_apart():
    parts = demo_passages({**NARROW, "val_sources": ["rte", "sciq"], "replay_sources": ["rte", "sciq"]})
    assert [len(parts[p]) for p in ("speech_train", "speech_val", "text_replay")] == [20, 6, 30]
    assert all(i.startswith("mrpc-") for i, _ in parts["speech_train"])
    assert all(i.split("-")[0] in ("rte", "sciq") for p in ("speech_val", "text_replay") for i, _ in parts[p])
    ids = [i for part in parts.values() for i, _ in part]
    assert len(ids) == len(set(ids))
    train = NgramIndex([t for _, t in parts["speech_train"]])
    assert not train.contains_many([t for p in ("speech_val", "text_replay") for _, t in parts[p]]).any()


def test_a_broad_passage_overlapping_the_training_speech_is_dropped(monkeypatch):
    from nemo_salad.data import text_corpus
    from nemo_salad.data.text_corpus import TextDoc

    words = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen".split()
    narrow = [TextDoc(f"n-{i}", " ".join(words) + f" narrow {i}", "n") for i in range(3)]
    broad = [TextDoc("b-0", "so " + " ".join(words), "b"), TextDoc("b-1", "entirely different words here", "b"),
             TextDoc("b-2", "more other words to read aloud", "b")]
    monkeypatch.setattr(text_corpus, "offline_text_corpus",
                        lambda sources=None, **kw: narrow if sources == ["n"] else broad)
    parts = demo_passages({"sources": ["n"], "val_sources": ["b"], "n_train": 3, "n_val": 2, "n_replay": 0})
    assert sorted(i for i, _ in parts["speech_val"]) == ["b-1", "b-2"]  # b-0 repeats a training 13-gram
    with pytest.raises(ValueError, match=r"data.demo.n_val=3.*2 passages left"):
        demo_passages({"sources": ["n"], "val_sources": ["b"], "n_train": 3, "n_val": 3, "n_replay": 0})


def test_a_config_without_the_new_keys_keeps_its_cache_and_passages():
    old = {**NARROW}
    assert demo_dir(old) == demo_dir({**old, "val_sources": None, "replay_sources": None})
    assert demo_dir(old) != demo_dir({**old, "val_sources": ["rte"]})
    same = demo_passages(old)
    # the legacy draw: one shuffled pool, the first n_train, then n_val, then n_replay passages
    import random

    from nemo_salad.data.text_corpus import offline_text_corpus

    docs = offline_text_corpus(["mrpc"], min_words=8, max_words=30, seed=0)
    order = list(range(len(docs)))
    random.Random(0).shuffle(order)
    picked = [docs[i].id for i in order[:56]]
    assert [i for p in ("speech_train", "speech_val", "text_replay") for i, _ in same[p]] == picked
