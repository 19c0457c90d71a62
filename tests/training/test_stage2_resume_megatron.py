"""Stage II continues Stage I's optimizer under ``trainer.strategy: megatron`` (NeMo-2 MegatronStrategy, megatron's
distributed optimizer, bf16 ``Float16Module``; on CPU, one process at a time): a run stopped at the pre-decay megatron
checkpoint and continued as Stage II (``init_from`` it, no warmup, decay over the whole stage) on the same batches
holds, before its first step and after each, the uninterrupted Stage I run's fp32 main parameters, Adam moments,
step counts and bf16 weights. Stage II's own learning rates and weight decay apply from its step 0 (the parameter
groups are this run's, not the checkpoint's); with ``init_optimizer=false`` the first step differs (fresh moments,
main parameters from the bf16 weights).

Each run is a subprocess (:mod:`tests.helpers.megatron_fit` with ``--record``) that saves what the distributed
optimizer holds for every parameter; the runs are compared here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from nemo_salad.callbacks import InitOptimizerState
from nemo_salad.callbacks.pre_decay import decay_start_step
from nemo_salad.checkpoint.distributed import is_distributed_checkpoint, resolve_checkpoint
from nemo_salad.checkpoint.init_optimizer import restore_megatron_optimizer_state
from nemo_salad.parts.optim import wsd_factor

ROOT = Path(__file__).resolve().parents[2]

cpu_megatron = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU variant of the MegatronStrategy run")

#: Stage I: 6 steps, the last half decaying (steps 3..5); Stage II: those 3 steps from the step-3 checkpoint
STEPS, DECAY = 6, 0.5
START = decay_start_step(STEPS, DECAY)
COMMON = ["report_gap_at_start=false", "exp_manager.create_checkpoint_callback=false",
          "exp_manager.create_tensorboard_logger=false", "model.optim.warmup_steps=2"]
STAGE2 = ["model.optim.warmup_steps=0", "model.optim.decay_fraction=1.0", "name=salad_stage2"]
#: Stage II hyper-parameters unlike Stage I's (llm_lr 3e-4, adapter_lr 3e-3, weight_decay 0.1, no warmup)
OTHER = {"llm_lr": 1e-4, "adapter_lr": 2e-3, "weight_decay": 0.05, "warmup_steps": 2}
#: what the optimizer holds per parameter (besides the bf16 model weight)
HELD = ("param", "exp_avg", "exp_avg_sq", "step")


def _fit(corpus: Path, exp: Path, max_steps: int, first_batch: int, *overrides: str) -> tuple[dict[str, Any], str]:
    """One megatron run on the fixed batches ``first_batch``, ...; its record and log."""
    exp.mkdir(parents=True, exist_ok=True)
    out = exp / "record.pt"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "tests.helpers.megatron_fit", str(corpus), str(exp), str(max_steps),
                           "--record", str(out), "--first-batch", str(first_batch), "--", *COMMON, *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return torch.load(out, map_location="cpu", weights_only=True), proc.stdout + proc.stderr


def _without_step(groups: list[dict[str, float]]) -> list[dict[str, float]]:
    """Group hyper-parameters without ``step`` (where megatron's checkpoint keeps Adam's step count)."""
    return [{k: v for k, v in g.items() if k != "step"} for g in groups]


def _assert_same_state(got: dict[str, dict[str, torch.Tensor]], want: dict[str, dict[str, torch.Tensor]],
                       exact: bool = False) -> None:
    """Per parameter: fp32 main parameter, moments and step within fp32 rounding of the reference (bit-equal when
    ``exact``), and the bf16 weight within one bf16 rounding step of it (the same fp32 value rounds to the same bf16,
    so only an fp32 difference at a rounding boundary could move it)."""
    assert got.keys() == want.keys()
    for name, held in got.items():
        for key in HELD:
            if exact:
                assert torch.equal(held[key], want[name][key]), (name, key)
            else:
                torch.testing.assert_close(held[key], want[name][key], rtol=1e-5, atol=1e-8, msg=f"{name} {key}")
        model = (held["model"].float(), want[name]["model"].float())
        if exact:
            assert torch.equal(*model), (name, "model")
        else:
            torch.testing.assert_close(*model, rtol=2 ** -7, atol=1e-6, msg=f"{name} model")


@pytest.fixture(scope="module")
def stage1(tone_corpus, tmp_path_factory) -> tuple[dict[str, Any], Path]:
    exp = tmp_path_factory.mktemp("stage1")
    record, log = _fit(tone_corpus, exp, STEPS, 0, f"model.optim.decay_fraction={DECAY}")
    assert record["global_step"] == STEPS and record["restored_step"] is None
    pre_decay = exp / "salad_stage1" / "checkpoints" / "salad_stage1-pre-decay.ckpt"
    assert is_distributed_checkpoint(resolve_checkpoint(str(pre_decay)))  # megatron's folder, found by its .ckpt name
    return record, pre_decay


@cpu_megatron
def test_stage2_continues_the_distributed_optimizer_of_the_pre_decay_checkpoint(stage1, tone_corpus, tmp_path):
    straight, pre_decay = stage1
    record, log = _fit(tone_corpus, tmp_path, STEPS - START, START, f"init_from={pre_decay}", *STAGE2)
    # before its first step: Stage I's state at the decay start, copied (weights by init_from, the rest restored)
    _assert_same_state(record["states"][0], straight["states"][START], exact=True)
    assert "Loading distributed optimizer sharded state of type fully_reshardable" in log
    assert f"Adam moments after {START} steps" in log
    assert record["restored_step"] == START and record["global_step"] == STEPS - START  # Stage II counts from 0
    for k in range(1, STEPS - START + 1):  # then the same steps as the uninterrupted run
        _assert_same_state(record["states"][k], straight["states"][START + k])
        assert all(float(s["step"]) == START + k for s in record["states"][k].values())
    # Stage II's schedule (no warmup, decay over the stage) gives the rates of Stage I's decay, every group alike
    for k in range(STEPS - START):
        assert _without_step(record["groups"][k]) == _without_step(straight["groups"][START + k])
    assert record["groups"][1][0]["lr"] < record["groups"][0][0]["lr"]


@cpu_megatron
def test_stage2_keeps_its_own_hyper_parameters_and_without_init_optimizer_starts_fresh(stage1, tone_corpus, tmp_path):
    """Stage II at other learning rates and weight decay, once continuing the optimizer state and once
    (``init_optimizer=false``) not: the same parameter groups at every step (none of the checkpoint's values), the
    checkpoint's moments in one only, and so other steps."""
    straight, pre_decay = stage1
    steps = STEPS - START
    other = [f"model.optim.{k}={v}" for k, v in OTHER.items() if k != "warmup_steps"]
    stage2 = [*STAGE2, f"model.optim.warmup_steps={OTHER['warmup_steps']}", *other, f"init_from={pre_decay}"]
    fresh, log = _fit(tone_corpus, tmp_path / "fresh", steps, START, *stage2, "++init_optimizer=false")
    assert "weights only (init_optimizer=false)" in log and fresh["restored_step"] is None
    resumed, _ = _fit(tone_corpus, tmp_path / "resumed", steps, START, *stage2)
    assert resumed["restored_step"] == START

    # the moments and main parameters are the checkpoint's ...
    _assert_same_state(resumed["states"][0], straight["states"][START], exact=True)
    for name, held in fresh["states"][0].items():  # ... or fresh: zero moments, main parameters from bf16 weights
        assert float(held["step"]) == 0 and not held["exp_avg"].any() and not held["exp_avg_sq"].any()
        weight = straight["states"][START][name]["model"].float().flatten()  # (the main parameter: a flat shard)
        assert torch.equal(held["param"].flatten(), weight), name
    # ... the hyper-parameters are Stage II's own at every step: the warmup-stable-decay rates of its optimizer
    # section, its weight decay
    for k in range(steps):
        assert _without_step(resumed["groups"][k]) == _without_step(fresh["groups"][k])
        factor = wsd_factor(k, steps, OTHER["warmup_steps"], 1.0)
        assert sorted({g["lr"] for g in resumed["groups"][k]}) == pytest.approx(
            sorted({OTHER["llm_lr"] * factor, OTHER["adapter_lr"] * factor}), rel=1e-9)
        assert {g["weight_decay"] for g in resumed["groups"][k]} == {0.0, OTHER["weight_decay"]}
    assert {g["weight_decay"] for g in straight["groups"][START]} == {0.0, 0.1}  # the checkpoint's differ
    # so the first step differs: same data, rates and weights, other moments
    after = resumed["states"][1]
    moved = max(float((after[n]["param"] - fresh["states"][1][n]["param"]).abs().max()) for n in after)
    assert moved > 1e-3  # a step of about the adapter's rate: far outside the fp32 tolerance of the comparisons
    assert all(float(s["step"]) == START + 1 for s in after.values())


def test_under_megatron_init_optimizer_restores_a_megatron_checkpoint_and_refuses_a_lightning_one(tmp_path):
    """``init_from`` a megatron checkpoint (its folder, possibly named by ``<folder>.ckpt``) gets the callback that
    restores the distributed optimizer; a plain run's Lightning checkpoint file is refused (its AdamW state does not
    fit megatron's distributed optimizer) unless ``init_optimizer=false``."""
    from nemo_salad.recipes.train import init_optimizer_callback

    restore = init_optimizer_callback("/runs/s1-pre-decay.ckpt", True, megatron=True)
    assert isinstance(restore, InitOptimizerState) and restore.megatron and restore.path == "/runs/s1-pre-decay.ckpt"
    plain = tmp_path / "s1-pre-decay.ckpt"
    torch.save({"state_dict": {}, "optimizer_states": [{"state": {}, "param_groups": []}]}, plain)
    with pytest.raises(ValueError, match="does not load into megatron's distributed optimizer"):
        init_optimizer_callback(str(plain), True, megatron=True)
    with pytest.raises(ValueError, match="not a megatron distributed checkpoint"):
        restore_megatron_optimizer_state(None, str(plain))
    assert init_optimizer_callback(str(plain), False, megatron=True) is None
