"""Layouts, collation into model batches, skipped bad input, the resumable weighted mixture."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest
import torch
from lhotse import CutSet

from nemo_salad.data.batch import FrameCounter
from nemo_salad.data.dataset import SaladDataset
from nemo_salad.data.layout import LayoutConfig, Word, plan_spans, word_timings
from nemo_salad.data.replay import text_cuts_for_replay
from nemo_salad.data.sampler import MixtureSampler
from tests.helpers.tone_speech import SR, UNIT, random_sentences, tone_audio, tone_cuts

#: one frame per 10 ms of audio (no network needed to lay out a batch)
FRAMES = FrameCounter.from_formula(lambda n: torch.div(n, 160, rounding_mode="floor"), 40 * SR)


def _dataset(tokenizer, layout=None, **kwargs) -> SaladDataset:
    return SaladDataset(tokenizer, layout, frames=FRAMES, pad_id=0, **kwargs)


@pytest.mark.parametrize("kind", ["prefix", "interleaved", "mixed"])
def test_plans_cover_every_word_once_and_alternate(kind):
    cfg = LayoutConfig(kind=kind, text_words=(2, 4), speech_words=(1, 3))
    for seed in range(50):
        words = [Word(str(i), i, i + 1) for i in range(random.Random(seed).randint(2, 30))]
        spans = plan_spans(words, cfg, random.Random(seed))
        assert [w for s in spans for w in s.words] == words
        assert all(a.kind != b.kind for a, b in zip(spans, spans[1:]))
        assert any(s.kind == "speech" for s in spans)
        if kind == "interleaved" and len(words) >= cfg.text_words[1] + cfg.speech_words[1]:
            assert all(cfg.text_words[0] <= len(s.words) <= cfg.text_words[1] for s in spans[:-1] if s.kind == "text")


@pytest.mark.parametrize("start_with", ["text", "speech", "random"])
@pytest.mark.parametrize("kind", ["prefix", "interleaved", "mixed"])
def test_every_plan_has_text_after_speech(kind, start_with):
    """A plan ending in speech with no text after it would leave the speech path nothing to learn from (the paper's
    10–30 text / 5–15 speech words give one for 9 % of 12–30-word passages before the fix)."""
    cfg = LayoutConfig(kind=kind, text_words=(10, 30), speech_words=(5, 15), start_with=start_with)
    rng = random.Random(0)
    for _ in range(2000):
        words = [Word(str(i), i, i + 1) for i in range(rng.randint(2, 60))]
        spans = plan_spans(words, cfg, rng)
        assert [w for s in spans for w in s.words] == words
        assert all(a.kind != b.kind for a, b in zip(spans, spans[1:]))
        first = next(i for i, s in enumerate(spans) if s.kind == "speech")
        assert any(s.kind == "text" for s in spans[first + 1:]), [(s.kind, len(s.words)) for s in spans]


def test_proportional_timings_are_exact_on_tone_speech(tmp_path):
    cut = tone_cuts(["hello big world"], tmp_path)[0]
    ends = [w.end for w in word_timings(cut)]
    assert np.allclose(ends, [6 * UNIT, 10 * UNIT, 16 * UNIT], atol=1e-6)


def test_batch_segments_rebuild_text_and_audio(tmp_path, tiny_tokenizer):
    texts = random_sentences(6, seed=1)
    cuts = tone_cuts(texts, tmp_path) + text_cuts_for_replay([("r0", "a dog ran in the park")])
    ds = _dataset(tiny_tokenizer, LayoutConfig(kind="interleaved", text_words=(2, 3), speech_words=(2, 3)))
    batch = ds[cuts]
    assert batch.skipped == [] and len(batch.segments) == 7
    for cut, segments in zip(cuts, batch.segments):
        teacher = [i for s in segments for i in s.ids]
        assert tiny_tokenizer.decode(teacher).split() == cut.supervisions[0].text.split()
        for seg in segments:
            if seg.kind == "speech":  # the clip is exactly this span's audio
                words = tiny_tokenizer.decode(seg.ids).split()
                n = int(batch.audio_lens[seg.clip])
                expected = tone_audio(" ".join(words))
                assert abs(n - len(expected)) <= 1
                assert np.allclose(batch.audio[seg.clip, : min(n, len(expected))].numpy(),
                                   expected[: min(n, len(expected))], atol=1e-3)
    assert batch.segments[-1][0].kind == "text" and len(batch.segments[-1]) == 1


def test_bad_cuts_are_skipped_counted_and_logged(tmp_path, tiny_tokenizer, caplog):
    cuts = list(tone_cuts(random_sentences(5, seed=2), tmp_path))
    (tmp_path / "utt1.flac").unlink()  # missing file
    (tmp_path / "utt2.flac").write_bytes(b"not audio at all")  # unreadable
    cuts[3].supervisions[0].text = "  "  # empty transcript
    long = tone_cuts(["word " * 200], tmp_path / "long")[0]  # far longer than max_duration
    ds = _dataset(tiny_tokenizer, LayoutConfig(), max_duration=10.0)
    with caplog.at_level(logging.WARNING):
        batch = ds[CutSet.from_cuts(cuts + [long])]
    reasons = dict(batch.skipped)
    assert batch.sample_ids == ["utt0", "utt4"]
    assert "utt1.flac" in reasons["utt1"] and "cannot read audio" in reasons["utt1"]
    assert "utt2.flac" in reasons["utt2"]
    assert reasons["utt3"] == "empty transcript"
    assert "longer than max_duration=10.0 s" in reasons[long.id]
    assert sum("skipping cut" in r.message for r in caplog.records) >= 4


def test_mixture_weights_and_resume(tmp_path):
    from lhotse.dataset import SimpleCutSampler

    a = text_cuts_for_replay([(f"a{i}", "x y") for i in range(30)])
    b = text_cuts_for_replay([(f"b{i}", "x y") for i in range(30)])
    make = lambda cuts, seed: SimpleCutSampler(cuts, max_cuts=2, shuffle=True, seed=seed)  # noqa: E731
    s = MixtureSampler(make, seed=7)
    s.add_source("a", a, 2.0)
    s.add_source("b", b, 1.0)
    it = iter(s)
    draws = [next(it) for _ in range(600)]
    share = sum(batch[0].id.startswith("a") for batch in draws) / len(draws)
    assert abs(share - 2 / 3) < 0.06  # 600 draws: binomial s.d. 0.019, tolerance ~3 s.d.
    c = text_cuts_for_replay([(f"c{i}", "x y") for i in range(10)])
    s.add_source("c", c, 1.0)  # joins at draw 600, without rebuilding the iterator
    later = [next(it) for _ in range(200)]
    assert any(batch[0].id.startswith("c") for batch in later)
    state = s.state_dict(consumed=650)
    fresh = MixtureSampler(make, seed=0)
    fresh.add_source("a", a, 1.0)
    fresh.add_source("b", b, 5.0)
    fresh.add_source("c", c, 1.0)
    fresh.resume(json.loads(json.dumps(state)))
    it2 = iter(fresh)
    resumed = [next(it2) for _ in range(150)]
    assert [[cut.id for cut in batch] for batch in resumed] == [[cut.id for cut in batch] for batch in
                                                                (draws + later)[650:800]]


def test_resume_refuses_different_sources():
    s = MixtureSampler(lambda cuts, seed: None)
    s.add_source("a", text_cuts_for_replay([("a", "x")]), 1.0)
    with pytest.raises(ValueError, match=r"sources \['a'\] differ from the checkpoint's \['a', 'b'\]"):
        s.resume({"seed": 0, "consumed": 3, "sources": [{"name": "a", "weight": 1, "added_at": 0},
                                                        {"name": "b", "weight": 1, "added_at": 5}]})


def test_audio_at_other_rates_is_resampled(tmp_path, tiny_tokenizer):
    cut = tone_cuts(["the cat sat on the mat again"], tmp_path)[0].resample(8000)
    batch = _dataset(tiny_tokenizer, LayoutConfig(kind="prefix"))[CutSet.from_cuts([cut])]
    assert batch.skipped == [] and torch.isfinite(batch.audio).all()
    assert abs(int(batch.audio_lens.sum()) - SR * cut.duration * 3 / 7) < 0.5 * SR  # roughly 3 of 7 words


def test_cuts_laid_out_with_proportional_times_are_counted_and_logged(tmp_path, tiny_tokenizer, caplog):
    from lhotse.supervision import AlignmentItem

    cuts = list(tone_cuts(random_sentences(4, seed=3), tmp_path))
    aligned = cuts[0].supervisions[0]
    aligned.alignment = {"word": [AlignmentItem(w.text, w.start, w.end - w.start) for w in word_timings(cuts[0])]}
    ds = _dataset(tiny_tokenizer, LayoutConfig(kind="interleaved", text_words=(2, 3), speech_words=(2, 3)),
                      source="tones")
    with caplog.at_level(logging.WARNING):
        first = ds[CutSet.from_cuts(cuts[:2])]
        second = ds[CutSet.from_cuts(cuts[2:])]
    assert first.proportional == ["utt1"] and second.proportional == ["utt2", "utt3"]
    assert ds.n_proportional == 3
    warnings = [r.message for r in caplog.records if "proportional word times" in r.message]
    assert len(warnings) == 1 and "1 cut(s) (this batch: source 'tones')" in warnings[0]  # first one, then every 1000
    assert _dataset(tiny_tokenizer, LayoutConfig(alignment_fallback="skip"))[
        CutSet.from_cuts(cuts[1:2])].proportional == []


def test_packed_rows_are_never_wider_than_the_context(tiny_tokenizer):
    """pack_length larger than the LLM context: rows are filled only up to the context."""
    cuts = text_cuts_for_replay([(f"r{i}", " ".join(["word"] * 8)) for i in range(6)])
    batch = _dataset(tiny_tokenizer, max_len=64, pack_length=2048)[cuts]
    assert batch.skipped == [] and batch.num_samples == 6
    assert batch.student_ids.shape[1] <= 64 and batch.teacher_ids.shape[1] <= 64
    assert batch.student_ids.shape[0] > 1  # several rows rather than one row wider than the context
