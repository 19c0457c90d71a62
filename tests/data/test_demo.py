"""The demo corpus cache: word timings are part of its key."""

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
