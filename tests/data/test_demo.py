"""The demo corpus: its cache key (word timings and text sources in it, the worker count not), parallel synthesis."""

from __future__ import annotations

import hashlib
import json

from nemo_salad.data.demo import demo_dir
from nemo_salad.parts.cache import cache_root


def test_corpora_built_without_word_timings_are_not_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SALAD_CACHE", str(tmp_path))
    before = {"backend": {"name": "piper"}, "n_train": 200, "n_val": 24, "n_replay": 3000, "min_words": 12,
              "max_words": 36, "seed": 0}  # the settings of a corpus synthesized without an aligner
    old = cache_root() / f"demo-{hashlib.sha1(json.dumps(before, sort_keys=True).encode()).hexdigest()[:10]}"
    assert demo_dir({}) != old
    assert demo_dir({}) != demo_dir({"word_aligner": "none"})
    assert demo_dir({}) == demo_dir({"word_aligner": "whisper"})


def _settings(**kw):
    return {"backend": {"name": "sine"}, "word_aligner": "none", "sources": ["rte"], "n_train": 7, "n_val": 2,
            "n_replay": 5, "min_words": 12, "max_words": 30, "seed": 0, **kw}


def test_parallel_synthesis_gives_the_single_process_corpus(tmp_path, monkeypatch):
    from nemo_salad.data.demo import demo_source, prepare_demo

    monkeypatch.setenv("SALAD_CACHE", str(tmp_path))
    assert demo_dir(_settings(workers=3)) == demo_dir(_settings())  # the worker count is not part of the key
    assert demo_dir(_settings()) != demo_dir(_settings(sources=["rte", "mrpc"]))
    root = prepare_demo(_settings(workers=3))
    assert json.loads((root / "speech_train" / "plan.json").read_text()) == {"slices": 3, "items": 7}
    parallel = [(c.id, c.supervisions[0].text, c.load_audio().shape) for c in demo_source("speech_train",
                                                                                           _settings(workers=3))]
    val = [c.id for c in demo_source("speech_val", _settings())]

    monkeypatch.setenv("SALAD_CACHE", str(tmp_path / "one"))
    prepare_demo(_settings())
    single = [(c.id, c.supervisions[0].text, c.load_audio().shape) for c in demo_source("speech_train", _settings())]
    assert sorted(parallel) == sorted(single) and len(single) == 7  # same cuts, same audio lengths
    assert sorted(val) == sorted(c.id for c in demo_source("speech_val", _settings()))


def test_demo_settings_are_checked():
    import pytest

    with pytest.raises(ValueError, match=r"data.demo.workers=0"):
        demo_dir(_settings(workers=0))
    with pytest.raises(ValueError, match=r"data.demo.sources='rte'"):
        demo_dir(_settings(sources="rte"))
    with pytest.raises(ValueError, match=r"data.demo.n_replay=100000: .*sources \['rte'\].* passages left"):
        from nemo_salad.data.demo import prepare_demo

        prepare_demo(_settings(n_replay=100000))
