"""Unusable data stops a run with a clear error instead of training on nothing: a training source whose every
audio file is missing, a source skipping more than ``data.max_skip_fraction``, a validation set whose every item
is skipped. A few bad items below the threshold are skipped and counted in the logged metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_salad.data.skips import UnusableDataError
from nemo_salad.recipes.train import build
from tests.helpers.tone_speech import random_sentences, tone_cuts
from tests.training.conftest import compose, tiny_overrides


def _corpus(root: Path, n: int, missing: int, prefix: str = "utt", seed: int = 5) -> Path:
    """A manifest of ``n`` tone-speech cuts whose first ``missing`` audio files are deleted."""
    cuts = tone_cuts(random_sentences(n, seed=seed), root / prefix, prefix=prefix)
    for i in range(missing):
        (root / prefix / f"{prefix}{i}.flac").unlink()
    manifest = root / f"{prefix}.jsonl.gz"
    cuts.to_file(manifest)
    return manifest


def _overrides(tone_corpus: Path, exp: Path, max_steps: int, train: Path | None = None, val: Path | None = None,
               *extra: str) -> list[str]:
    out = tiny_overrides(tone_corpus, exp, max_steps) + list(extra)
    if train is not None:
        out.append(f"data.sources=[{{name: speech, manifest: {train}, weight: 2}}, "
                   f"{{name: text_replay, texts: {tone_corpus / 'replay.jsonl'}, weight: 1}}]")
    if val is not None:
        out.append(f"data.validation.manifest={val}")
    return out


def test_a_training_source_without_usable_items_stops_the_run(tone_corpus, tmp_path):
    train = _corpus(tmp_path, 24, missing=24)
    trainer, model, data = build(compose(_overrides(tone_corpus, tmp_path / "exp", 200, train,
                                                    None, "report_gap_at_start=false")))
    expected = (r"data source 'speech' yields no usable item: all \d+ items read so far were skipped; "
                r"e\.g\. cut utt\d+: cannot read audio .*utt\d+\.flac")
    with pytest.raises(UnusableDataError, match=expected):
        trainer.fit(model, datamodule=data)
    assert trainer.global_step < 200
    assert not list((tmp_path / "exp").rglob("*.nemo"))  # nothing is exported


def test_the_skip_threshold_names_the_source_and_counts(tone_corpus, tmp_path):
    train = _corpus(tmp_path, 20, missing=13)  # 65% missing
    trainer, model, data = build(compose(_overrides(tone_corpus, tmp_path / "exp", 200, train, None,
                                                    "report_gap_at_start=false", "data.skip_check_items=20")))
    with pytest.raises(UnusableDataError, match=r"data source 'speech': (1[1-9]|20) of its last 20 items were skipped "
                                                r"\(\d+%\), more than data\.max_skip_fraction=0\.5 \(\d+ skipped of "
                                                r"\d+ in all\)"):
        trainer.fit(model, datamodule=data)
    assert trainer.global_step < 200


def test_a_few_bad_items_are_skipped_and_counted(tone_corpus, tmp_path):
    train = _corpus(tmp_path, 20, missing=2)
    val = _corpus(tmp_path, 12, missing=3, prefix="val", seed=6)
    trainer, model, data = build(compose(_overrides(tone_corpus, tmp_path / "exp", 8, train, val,
                                                    "data.skip_check_items=20", "trainer.val_check_interval=8")))
    trainer.fit(model, datamodule=data)
    assert trainer.global_step == 8
    totals = data.skip_monitor.totals()["speech"]
    assert totals["skipped"] >= 2 and totals["used"] >= 18  # every training file was read at least once
    assert trainer.logged_metrics["train/skipped"] == totals["skipped"]
    assert trainer.logged_metrics["train/proportional_cuts"] == totals["used"]  # tone cuts carry no alignment
    assert trainer.logged_metrics["val/skipped"] == 3.0
    (metrics,) = trainer.validate(model, datamodule=data)
    assert metrics["val/skipped"] == 3.0 and metrics["val/misalignment"] > 0


def test_a_validation_set_without_usable_items_is_refused(tone_corpus, tmp_path):
    val = _corpus(tmp_path, 6, missing=6, prefix="val")
    trainer, model, data = build(compose(_overrides(tone_corpus, tmp_path / "exp", 5, None, val)))
    expected = (r"data\.validation \(manifest=.*val\.jsonl\.gz\): every one of its 6 items was skipped, so no loss, "
                r"F or M can be measured; e\.g\. cut val0: cannot read audio")
    with pytest.raises(UnusableDataError, match=expected):
        trainer.validate(model, datamodule=data)
    with pytest.raises(UnusableDataError, match=expected):  # the held-out report before the first step
        trainer.fit(model, datamodule=data)
    assert trainer.global_step == 0
