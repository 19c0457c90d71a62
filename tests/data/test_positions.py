"""Batches bounded by LLM positions (``data.batch_tokens``): the estimate the sampler fills batches with, against the
positions the dataset then lays out."""

from __future__ import annotations

import random

import pytest
import torch
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment
from lhotse.dataset import DynamicBucketingSampler

from nemo_salad.data.batch import FrameCounter
from nemo_salad.data.datamodule import SaladDataModule
from nemo_salad.data.dataset import SaladDataset
from nemo_salad.data.layout import LayoutConfig
from nemo_salad.data.positions import PositionConstraint, estimated_positions
from nemo_salad.data.replay import text_cuts_for_replay
from tests.helpers.tone_speech import SR, random_sentences, tone_cuts

#: one frame per 80 ms, as a FastConformer (8x subsampling of 10 ms features)
FRAMES = FrameCounter.from_formula(lambda n: torch.div(n, 1280, rounding_mode="floor"), 40 * SR)


def test_a_text_cut_counts_its_tokens(tiny_tokenizer):
    cut = text_cuts_for_replay([("r", "a dog ran in the park")])[0]
    n = len(tiny_tokenizer("a dog ran in the park", add_special_tokens=False).input_ids)
    assert estimated_positions(cut, tiny_tokenizer, FRAMES, 0.5) == n


@pytest.mark.parametrize("kind", ["interleaved", "prefix", "mixed"])
def test_batches_hold_about_the_bound_in_laid_out_positions(tmp_path, tiny_tokenizer, kind):
    layout = LayoutConfig(kind=kind, text_words=(3, 6), speech_words=(2, 4))
    cuts = tone_cuts(random_sentences(120, seed=2, min_words=8, max_words=20), tmp_path / kind)
    bound = 300
    constraint = PositionConstraint(bound, tiny_tokenizer, FRAMES, layout.speech_share())
    sampler = DynamicBucketingSampler(cuts, constraint=constraint, num_buckets=2, shuffle=True, seed=0,
                                      world_size=1, rank=0)
    dataset = SaladDataset(tiny_tokenizer, layout, frames=FRAMES, pad_id=0)
    estimated, laid_out = [], []
    for cut_batch in sampler:
        est = [constraint.measure_length(c) for c in cut_batch]
        batch = dataset[cut_batch]
        assert batch.skipped == []
        assert sum(est) <= bound + max(est)  # lhotse closes a batch once one more of its longest would pass
        estimated.append(sum(est))
        laid_out.append(batch.positions)
        assert batch.positions == int(batch.student_mask.sum())
    full = laid_out[:-1]  # the last batch of the epoch holds what was left
    assert len(full) >= 5 and sum(full) / len(full) == pytest.approx(bound, rel=0.2)
    assert sum(laid_out) == pytest.approx(sum(estimated), rel=0.06)  # measured: within 3 %


def test_the_data_module_bounds_training_batches_by_positions(tmp_path, tiny_tokenizer):
    speech = tone_cuts(random_sentences(40, seed=3, min_words=8, max_words=16), tmp_path / "s")
    speech.to_file(tmp_path / "speech.jsonl.gz")
    (tmp_path / "replay.jsonl").write_text("\n".join(f'{{"id": "r{i}", "text": "{t}"}}' for i, t in
                                                     enumerate(random_sentences(60, seed=4))) + "\n")
    cfg = {"sources": [{"name": "speech", "manifest": str(tmp_path / "speech.jsonl.gz"), "weight": 1},
                       {"name": "text", "texts": str(tmp_path / "replay.jsonl"), "weight": 1}],
           "batch_tokens": 200, "num_buckets": 2, "bins_estimate_cuts": 50, "buffer_size": 100,
           "layout": {"kind": "interleaved", "text_words": [3, 6], "speech_words": [2, 4]}}
    data = SaladDataModule(cfg, tiny_tokenizer, FRAMES, pad_id=0)
    sizes: dict[str, list[int]] = {"speech": [], "text": []}
    for batch, _ in zip(data.train_dataloader(), range(16)):
        sizes[batch.source].append(batch.positions)
    for source, got in sizes.items():  # text and speech batches alike hold about the bound
        assert got and sum(got) / len(got) == pytest.approx(200, rel=0.25), (source, got)


def _recording(i: int, seconds: float) -> Recording:
    """A recording that is never read: the sampler measures cuts without loading audio."""
    return Recording(f"rec{i}", [AudioSource("file", [0], f"/nonexistent/{i}.flac")], SR, int(seconds * SR), seconds)


@pytest.mark.parametrize("kind", ["speech", "text"])
def test_recipe_size_batches_fill_the_bound_within_ten_percent(tiny_tokenizer, kind):
    """The recipes' 8,192 positions per batch with LibriHeavy-like utterances (10–40 s, 2.7 words/s) or replay
    documents of up to ~1,800 tokens: away from the end of an epoch (where each of the 30 buckets hands out what is
    left), batches average within 10 % of the bound, so tokens per step is what the recipe says."""
    rng = random.Random(0)
    words = "the cat sat on mat a dog ran in park he turned sharply and faced across table".split()
    cuts = []
    for i in range(1500 if kind == "speech" else 800):
        if kind == "speech":
            seconds = rng.uniform(10, 40)
            text = " ".join(rng.choice(words) for _ in range(int(2.7 * seconds)))
            rec = _recording(i, seconds)
            cuts.append(MonoCut(f"c{i}", 0.0, seconds, 0, recording=rec, supervisions=[
                SupervisionSegment(f"c{i}", rec.id, 0.0, seconds, text=text)]))
        else:
            cuts.extend(text_cuts_for_replay([(f"t{i}", " ".join(rng.choice(words) for _ in range(
                rng.randint(50, 700))))]))
    layout = LayoutConfig(kind="interleaved")
    constraint = PositionConstraint(8192, tiny_tokenizer, FRAMES, layout.speech_share())
    sampler = DynamicBucketingSampler(CutSet.from_cuts(cuts), constraint=constraint, num_buckets=30, shuffle=True,
                                      seed=0, world_size=1, rank=0, num_cuts_for_bins_estimate=len(cuts))
    fills = [sum(constraint.measure_length(c) for c in b) for b in sampler][:-30]  # the epoch's end drains 30 buckets
    assert len(fills) >= 10 and sum(fills) / len(fills) == pytest.approx(8192, rel=0.1)
