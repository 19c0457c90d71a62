"""Stage II continues Stage I's optimizer: a run stopped at the pre-decay checkpoint and continued as Stage II
(``init_from`` it, no warmup, decay over the whole stage) on the same batches takes the same steps as the
uninterrupted Stage I run over its decay, weights, AdamW moments and learning rates alike; with
``init_optimizer=false`` the first step already differs (fresh moments)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader

from nemo_salad.callbacks import InitOptimizerState
from nemo_salad.callbacks.pre_decay import decay_start_step
from nemo_salad.checkpoint.init_optimizer import restore_optimizer_state
from nemo_salad.recipes.train import build
from tests.helpers.batches import make_batch
from tests.training.conftest import compose, tiny_overrides

#: Stage I: 10 steps, the last 40% decaying (steps 6..9); Stage II: those 4 steps from the step-6 checkpoint
STEPS, DECAY = 10, 0.4
START = decay_start_step(STEPS, DECAY)


class _Record(pl.Callback):
    """The learning rates of each optimizer step and the trainable parameters after it, by ``global_step``."""

    def __init__(self) -> None:
        self.after: dict[int, dict[str, torch.Tensor]] = {}
        self.lrs: dict[int, list[float]] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self.lrs[trainer.global_step] = [g["lr"] for g in trainer.optimizers[0].param_groups]

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
                           ) -> None:
        self.after[trainer.global_step] = {n: p.detach().clone() for n, p in pl_module.named_parameters()
                                           if p.requires_grad}


def _run(corpus: Path, exp: Path, max_steps: int, first_batch: int, *extra: str) -> tuple[_Record, pl.Trainer]:
    """Build the recipe (``build``: init_from, its callbacks) and fit it on the batches ``first_batch``, ... of one
    fixed sequence, the same in every run (the data module's stream would restart in Stage II)."""
    overrides = tiny_overrides(corpus, exp, max_steps=max_steps) + [
        f"model.optim.decay_fraction={DECAY}", "report_gap_at_start=false", "threads=1",
        "exp_manager.create_checkpoint_callback=false", "exp_manager.create_tensorboard_logger=false", *extra]
    trainer, model, _ = build(compose(overrides))
    record = _Record()
    trainer.callbacks.append(record)
    batches = [make_batch(model, ("prefix", "interleaved")[i % 2], seed=i) for i in range(first_batch, STEPS)]
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None, collate_fn=lambda b: b))
    return record, trainer


@pytest.fixture(scope="module")
def stage1(tone_corpus, tmp_path_factory) -> tuple[_Record, Path]:
    exp = tmp_path_factory.mktemp("stage1")
    record, trainer = _run(tone_corpus, exp, STEPS, 0)
    assert trainer.global_step == STEPS
    pre_decay = exp / "salad_stage1" / "checkpoints" / "salad_stage1-pre-decay.ckpt"
    assert torch.load(pre_decay, map_location="cpu", weights_only=True)["global_step"] == START
    return record, pre_decay


STAGE2 = ["model.optim.warmup_steps=0", "model.optim.decay_fraction=1.0", "name=salad_stage2"]


def test_stage2_continues_the_optimizer_of_the_pre_decay_checkpoint(stage1, tone_corpus, tmp_path, caplog):
    straight, pre_decay = stage1
    with caplog.at_level(logging.INFO):
        record, trainer = _run(tone_corpus, tmp_path, STEPS - START, START, f"init_from={pre_decay}", *STAGE2)
    assert trainer.global_step == STEPS - START  # Stage II counts its own steps
    for k in range(1, STEPS - START + 1):
        for name, reference in straight.after[START + k].items():
            torch.testing.assert_close(record.after[k][name], reference, rtol=1e-5, atol=1e-6, msg=name)
    (restore,) = [cb for cb in trainer.callbacks if isinstance(cb, InitOptimizerState)]
    assert restore.restored_step == START  # Adam's step counts continue: the bias correction of step START + k
    assert any(f"AdamW moments after {START} steps" in r.getMessage() for r in caplog.records)
    # the schedule: Stage II's first rate is Stage I's stable rate, then the same linear decay
    assert record.lrs[0] == straight.lrs[START - 1] == straight.lrs[START]
    assert all(record.lrs[k] == straight.lrs[START + k] for k in range(STEPS - START))
    assert record.lrs[1] < record.lrs[0]


def test_weights_only_starts_with_fresh_moments(stage1, tone_corpus, tmp_path, caplog):
    straight, pre_decay = stage1
    with caplog.at_level(logging.INFO):
        record, trainer = _run(tone_corpus, tmp_path, STEPS - START, START, f"init_from={pre_decay}",
                               "++init_optimizer=false", *STAGE2)  # `++`: stage1.yaml may not list the key
    assert not [cb for cb in trainer.callbacks if isinstance(cb, InitOptimizerState)]
    assert any("weights only (init_optimizer=false)" in r.getMessage() for r in caplog.records)
    saved = torch.load(pre_decay, map_location="cpu", weights_only=True)["state_dict"]
    first = record.after[1]
    start = {n: saved[n] for n in first}
    moved = [n for n in first if not torch.equal(first[n], start[n])]
    assert moved  # trained from the checkpoint's weights
    differs = max(float((first[n] - straight.after[START + 1][n]).abs().max()) for n in moved)
    assert differs > 1e-4  # a first Adam step with zero moments is another step


def test_a_checkpoint_of_other_trainable_parts_is_refused_naming_them():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    old = torch.optim.AdamW([{"params": [a.weight], "name": "adapter"},
                             {"params": [a.bias], "name": "adapter/no_decay"}])
    a.weight.grad, a.bias.grad = torch.ones(2, 3), torch.ones(2)
    old.step()
    state = old.state_dict()
    new = torch.optim.AdamW([{"params": [b.weight, b.bias], "name": "adapter"}])
    with pytest.raises(ValueError, match=r"checkpoint: adapter\(1\), adapter/no_decay\(1\); this model: adapter\(2\)"):
        restore_optimizer_state(new, "s1.ckpt", state=state)
    wide = torch.nn.Linear(4, 2)
    new = torch.optim.AdamW([{"params": [wide.weight], "name": "adapter"}, {"params": [wide.bias],
                                                                           "name": "adapter/no_decay"}])
    with pytest.raises(ValueError, match=r"adapter: proj.weight \(2, 4\) \(checkpoint moments \(2, 3\)\)"):
        restore_optimizer_state(new, "s1.ckpt", {id(wide.weight): "proj.weight"}, state=state)
    assert not new.state  # nothing loaded


def test_where_the_optimizer_state_is_not_restored_it_is_said(caplog):
    """A .nemo holds no optimizer state: refused unless init_optimizer=false, which the log states (the megatron
    strategy's restore: tests/training/test_stage2_resume_megatron.py)."""
    from nemo_salad.recipes.train import init_optimizer_callback
    from nemo_salad.recipes.validate import ConfigValueError, validate_training_config

    with pytest.raises(ConfigValueError, match=r"a \.nemo holds weights only.*set init_optimizer=false"):
        validate_training_config({"init_from": "/runs/s1.nemo"})
    validate_training_config({"init_from": "/runs/s1.nemo", "init_optimizer": False})
    with caplog.at_level(logging.INFO):
        assert init_optimizer_callback("/runs/s1.nemo", False) is None
    said = [r.getMessage() for r in caplog.records]
    assert any("s1.nemo: weights only (init_optimizer=false)" in m for m in said)
