"""A run killed after a checkpoint and resumed with the same command repeats the uninterrupted run exactly: the
same per-step training losses (dropout active), the same validation results, and logged steps that continue the
checkpoint's count without a gap or a repeat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader

from nemo_salad.callbacks.exact_resume import ExactResume, batch_seed

ROOT = Path(__file__).resolve().parents[2]

#: dropout in the encoder: every training step draws random numbers; every 5 steps a checkpoint, validation after 8
OVERRIDES = ["model.encoder.encoder.dropout=0.1", "model.encoder.encoder.dropout_att=0.1", "data.num_workers=1",
             "trainer.log_every_n_steps=1", "trainer.val_check_interval=8",
             "exp_manager.checkpoint_callback_params.every_n_train_steps=5"]


def _start(corpus: Path, exp: Path, log: Path, max_steps: int, kill_at: int | None = None
           ) -> tuple[subprocess.Popen, Path]:
    """Start the tiny recipe in a process of its own, its output going to ``log``."""
    kill = ["--kill-at", str(kill_at)] if kill_at is not None else []
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.killable_fit", str(corpus), str(exp),
                                 str(max_steps), *kill, "--", *OVERRIDES], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    return proc, log


def _finish(run: tuple[subprocess.Popen, Path], expect_rc: int = 0) -> str:
    proc, log = run
    try:
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:  # timed out
            proc.kill()
    text = log.read_text()
    assert proc.returncode == expect_rc, text[-6000:]
    return text


def _scalars(version_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] in logging order, from a TensorBoard run folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(version_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow
def test_killed_and_resumed_run_repeats_the_uninterrupted_run(tone_corpus, tmp_path):
    straight = _start(tone_corpus, tmp_path / "straight", tmp_path / "straight.log", 12)
    killed = _start(tone_corpus, tmp_path / "killed", tmp_path / "killed.log", 12, kill_at=7)  # after step-5 ckpt
    _finish(straight)
    _finish(killed, expect_rc=-9)
    # the same command again: resumes from the step-5 checkpoint
    log = _finish(_start(tone_corpus, tmp_path / "killed", tmp_path / "resumed.log", 12))
    assert "resuming the training stream after 5 consumed batches" in log

    runs = tmp_path / "killed" / "salad_stage1"
    reference = _scalars(tmp_path / "straight" / "salad_stage1" / "version_0")
    resumed = _scalars(runs / "version_1")  # the resumed run's TensorBoard folder (the killed run wrote version_0)
    assert [s for s, _ in reference["train/loss"]] == list(range(12))
    # one point per step: the resumed run continues after the checkpoint's 5 steps (step 5 = the 6th batch)
    assert [s for s, _ in resumed["train/loss"]] == list(range(5, 12))
    for tag in ("train/loss", "train/kd", "train/tokens"):
        assert resumed[tag] == reference[tag][5:], tag  # bitwise: dropout drew the same numbers
    # the validation after the 8th batch (logged at step 7) saw the same weights
    for tag in ("val/loss", "val/misalignment", "val/forgetting"):
        assert resumed[tag] == [p for p in reference[tag] if p[0] >= 5] and resumed[tag], tag


def test_batch_seeds_depend_on_seed_rank_and_batch_only():
    seeds = {batch_seed(seed, rank, batch) for seed in (0, 1) for rank in (0, 1) for batch in range(50)}
    assert len(seeds) == 200 and all(0 <= s < 2**62 for s in seeds)


class _DropoutNet(pl.LightningModule):
    """A linear layer behind dropout, fed the same batch every step; validation draws random numbers, as a
    DataLoader iterator or a selection round does between training steps."""

    def __init__(self) -> None:
        super().__init__()
        self.lin, self.drop = torch.nn.Linear(8, 1), torch.nn.Dropout(0.5)
        self.losses: dict[int, float] = {}

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss = self.lin(self.drop(batch)).pow(2).mean()
        self.losses[self.global_step] = float(loss.detach())
        self.log("loss", loss)
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        torch.rand(batch_idx + 1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Steps(Logger):
    """Records the step of every logged training loss."""

    name, version = "steps", 0

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[int] = []

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if "loss" in metrics:
            self.steps.append(step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


class _Killed(Exception):
    pass


class _Stop(pl.Callback):
    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == 5:
            raise _Killed  # after the step-4 checkpoint


def _fit(tmp_path: Path, callbacks: list[pl.Callback], ckpt_path: str | None = None) -> tuple[_DropoutNet, _Steps]:
    pl.seed_everything(0)
    model, logger = _DropoutNet(), _Steps()
    checkpoints = ModelCheckpoint(tmp_path, every_n_train_steps=4, save_last=True, save_top_k=0)
    trainer = pl.Trainer(max_steps=8, val_check_interval=3, check_val_every_n_epoch=None, log_every_n_steps=1,
                         default_root_dir=tmp_path, logger=logger,
                         callbacks=[ExactResume(seed=1), *callbacks, checkpoints], enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    data = DataLoader([torch.ones(4, 8)] * 1000, batch_size=None)  # the same batch every step: no data position
    trainer.fit(model, train_dataloaders=data, val_dataloaders=DataLoader([torch.ones(4, 8)] * 2, batch_size=None),
                ckpt_path=ckpt_path)
    return model, logger


def test_exact_resume_callback_repeats_losses_and_logged_steps(tmp_path):
    straight, straight_log = _fit(tmp_path / "straight", [])
    with pytest.raises(_Killed):
        _fit(tmp_path / "killed", [_Stop()])
    resumed, resumed_log = _fit(tmp_path / "killed", [], ckpt_path=str(tmp_path / "killed" / "last.ckpt"))
    assert sorted(resumed.losses) == [4, 5, 6, 7]
    assert resumed.losses == {s: v for s, v in straight.losses.items() if s >= 4}
    assert straight_log.steps == list(range(8)) and resumed_log.steps == [4, 5, 6, 7]
