"""Skip accounting per source (window, threshold, all-skipped), the source name carried by each mixture batch,
and the data module's own check of its batch settings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from nemo_salad.data.batch import FrameCounter
from nemo_salad.data.datamodule import SaladDataModule
from nemo_salad.data.dataset import SaladDataset
from nemo_salad.data.replay import text_cuts_for_replay
from nemo_salad.data.sampler import MixtureSampler
from nemo_salad.data.skips import HeldOutCount, SkipMonitor, UnusableDataError
from tests.helpers.tone_speech import random_sentences, tone_cuts


def _bad(n: int, start: int = 0) -> list[tuple[str, str]]:
    return [(f"c{i}", "cannot read audio x.flac") for i in range(start, start + n)]


def test_early_bad_items_do_not_stop_a_run_before_the_window_fills():
    monitor = SkipMonitor(max_fraction=0.5, window=10)
    monitor.update("speech", used=0, skipped=_bad(3))  # 100% so far, but only 3 items seen
    monitor.update("speech", used=7, skipped=[])  # 3 of 10: below the threshold
    monitor.update("text_replay", used=4, skipped=_bad(1, 3))
    assert monitor.totals() == {"speech": {"used": 7, "skipped": 3}, "text_replay": {"used": 4, "skipped": 1}}


def test_the_threshold_counts_a_sliding_window_per_source():
    monitor = SkipMonitor(max_fraction=0.5, window=10)
    monitor.update("speech", used=10, skipped=[])
    monitor.update("speech", used=5, skipped=_bad(5))  # last 10: exactly 5 skipped, not more than half
    monitor.update("text_replay", used=0, skipped=_bad(4))  # another source's window is still filling
    with pytest.raises(UnusableDataError, match=r"data source 'speech': 6 of its last 10 items were skipped \(60%\), "
                                                r"more than data\.max_skip_fraction=0\.5 \(6 skipped of 21 in all\); "
                                                r"e\.g\. cut c0: cannot read audio x\.flac"):
        monitor.update("speech", used=0, skipped=_bad(1, 5))


def test_a_source_without_any_usable_item_fails_even_with_no_threshold():
    monitor = SkipMonitor(max_fraction=1.0, window=4)
    with pytest.raises(UnusableDataError, match=r"data source 'speech' yields no usable item: all 4 items read so far "
                                                r"were skipped"):
        monitor.update("speech", used=0, skipped=_bad(4))


def test_a_held_out_pass_with_no_usable_item_is_refused():
    count = HeldOutCount()
    count.add(SimpleNamespace(num_samples=1, skipped=_bad(2), source="data.validation (manifest=v.jsonl)"))
    assert count.finish() == 2
    count = HeldOutCount()
    count.add(SimpleNamespace(num_samples=0, skipped=_bad(2), source="data.validation (manifest=v.jsonl)"))
    with pytest.raises(UnusableDataError, match=r"data\.validation \(manifest=v\.jsonl\): every one of its 2 items"):
        count.finish()


def test_mixture_batches_name_their_source(tmp_path, tiny_tokenizer):
    from lhotse.dataset import SimpleCutSampler

    speech = tone_cuts(random_sentences(4, seed=1), tmp_path / "a")
    text = text_cuts_for_replay((f"t{i}", t) for i, t in enumerate(random_sentences(4, seed=2)))
    mixture = MixtureSampler(lambda cuts, seed: SimpleCutSampler(cuts, max_cuts=2, shuffle=True, seed=seed))
    mixture.add_source("speech", speech, 1.0)
    mixture.add_source("replay", text, 1.0)
    frames = FrameCounter.from_formula(lambda n: torch.div(n, 160, rounding_mode="floor"), 40 * 16000)
    dataset = SaladDataset(tiny_tokenizer, frames=frames, pad_id=0, source="fallback")
    batches = [dataset[cuts] for cuts, _ in zip(mixture, range(12))]
    names = {b.source for b in batches}
    assert names == {"speech", "replay"}
    assert all((b.source == "speech") == all(i.startswith("utt") for i in b.sample_ids) for b in batches)
    assert dataset[speech].source == "fallback"  # a CutSet that names no source


@pytest.mark.parametrize("key, value, expected", [("batch_duration", 0, "a number of seconds > 0"),
                                                  ("max_duration", -1.0, "a number of seconds > 0"),
                                                  ("num_buckets", 0, "an integer >= 1"),
                                                  ("max_skip_fraction", 2.0, "a number in [0, 1]")])
def test_the_data_module_names_a_bad_batch_setting(tiny_tokenizer, key, value, expected):
    with pytest.raises(ValueError, match=rf"data\.{key}={value!r}: expected {expected}".replace("[", r"\[")):
        SaladDataModule({"sources": [], key: value}, tiny_tokenizer, frames=None, pad_id=0)
