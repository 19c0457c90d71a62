"""The MegatronStrategy path of the training recipe, piece by piece: strategy, precision plugin, data sampler,
megatron optimizer matching the plain path's parameter groups and schedule, deferred model. (``fit`` itself:
test_megatron_fit.py; the step against the plain step: tests/distributed/test_megatron_step.py.)"""

from __future__ import annotations

import pytest
import torch

from nemo_salad.recipes.megatron import megatron_optimizer, megatron_trainer_kwargs, non_llm_param
from tests.training.conftest import compose, tiny_overrides

MEGATRON = ["+trainer.strategy=megatron", "+megatron={tensor_model_parallel_size: 1, ckpt_async_save: false}",
            "trainer.precision=bf16-mixed", "model.optim.lora_lr=null", "model/teacher=shared",
            "model.llm.lora={rank: 4, alpha: 8}"]


def test_recipe_builds_megatron_strategy_deferred_model_and_megatron_optimizer(tone_corpus, tmp_path):
    from nemo.lightning import MegatronMixedPrecision, MegatronStrategy
    from nemo.lightning.pytorch.optim import MegatronOptimizerModule

    from nemo_salad.recipes.train import build

    cfg = compose(tiny_overrides(tone_corpus, tmp_path) + MEGATRON)
    trainer, model, data = build(cfg)
    assert isinstance(trainer.strategy, MegatronStrategy)
    assert trainer.strategy.ddp_config.use_distributed_optimizer
    assert isinstance(trainer.precision_plugin, MegatronMixedPrecision)
    assert not model._built  # built by configure_model once the strategy has set up parallel state
    assert isinstance(model.optim, MegatronOptimizerModule)
    assert model.optim.lr_mult == pytest.approx(3e-3 / 3e-4) and model.optim.config.lr == pytest.approx(3e-4)
    assert model.min_audio_samples > 0 and data is not None


def test_scaled_parameters_are_the_plain_paths_non_llm_groups(tone_corpus):
    """The parameters megatron scales to adapter_lr are exactly those the plain AdamW puts in the adapter,
    encoder and LoRA groups."""
    from nemo_salad.models import SaladModel
    from nemo_salad.parts.optim import param_groups
    from tests.helpers.tiny import model_cfg

    model = SaladModel(model_cfg(tone_corpus / "tok", teacher="shared", **{"llm.lora": {"rank": 4, "alpha": 8.0}}))
    plain = {id(p) for g in param_groups(model, {}) if not g["name"].startswith("llm") for p in g["params"]}
    scaled = {id(p) for n, p in model.named_parameters() if p.requires_grad and non_llm_param(f"module.{n}", p)}
    assert plain == scaled and len(scaled) > 10
    full = SaladModel(model_cfg(tone_corpus / "tok", teacher="copy"))
    llm = {id(p) for g in param_groups(full, {}) if g["name"].startswith("llm") for p in g["params"]}
    assert llm == {id(p) for n, p in full.named_parameters() if p.requires_grad and not non_llm_param(n, p)}


def test_megatron_optimizer_schedule_is_the_plain_schedule():
    from nemo_salad.parts.optim import wsd_factor

    module = megatron_optimizer({"adapter_lr": 1e-3, "llm_lr": 5e-5, "warmup_steps": 2, "decay_fraction": 0.2},
                                max_steps=10)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=5e-5)
    sched = module.lr_scheduler.scheduler(None, opt)["lr_scheduler"]["scheduler"]
    got = []
    for _ in range(10):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert got == pytest.approx([5e-5 * wsd_factor(s, 10, 2, 0.2) for s in range(10)])
    with pytest.raises(ValueError, match="lora_lr"):
        megatron_optimizer({"adapter_lr": 1e-3, "lora_lr": 2e-3}, max_steps=10)
    with pytest.raises(ValueError, match="max_steps"):
        megatron_optimizer({}, max_steps=-1)


def test_bad_megatron_sections_are_named():
    with pytest.raises(ValueError, match="pipeline"):
        megatron_trainer_kwargs({"devices": 2}, {"pipeline_model_parallel_size": 2})
    with pytest.raises(ValueError, match="unknown keys.*tensor_parallel"):
        megatron_trainer_kwargs({"devices": 2}, {"tensor_parallel": 2})
    with pytest.raises(ValueError, match="multiple of megatron.tensor_model_parallel_size = 4"):
        megatron_trainer_kwargs({"devices": 2, "num_nodes": 1}, {"tensor_model_parallel_size": 4})
    with pytest.raises(ValueError, match="accumulate_grad_batches.*num_microbatches"):
        megatron_trainer_kwargs({"accumulate_grad_batches": 4}, {})
    with pytest.raises(ValueError, match="num_microbatches=0"):
        megatron_trainer_kwargs({}, {"num_microbatches": 0})
    with pytest.raises(ValueError, match="gradient_clip_algorithm"):
        megatron_trainer_kwargs({"gradient_clip_algorithm": "value"}, {})
    kwargs = megatron_trainer_kwargs({"devices": 8, "num_nodes": 2, "precision": "bf16-mixed",
                                      "gradient_clip_val": 1.0}, {"tensor_model_parallel_size": 2})
    assert kwargs["strategy"].tensor_model_parallel_size == 2 and "precision" not in kwargs
    assert "gradient_clip_val" not in kwargs  # Lightning's clipping refuses megatron's optimizer; it clips itself
    assert megatron_optimizer({}, 10, clip_grad=1.0).config.clip_grad == 1.0
    assert megatron_optimizer({}, 10).config.clip_grad == 0.0


@pytest.mark.parametrize("name", ["stage1_qwen2.5_3b", "stage1_qwen2.5_7b"])
def test_paper_recipes_give_valid_megatron_settings(name):
    from omegaconf import OmegaConf

    cfg = compose([], name=name)
    trainer = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert trainer["strategy"] == "megatron"
    kwargs = megatron_trainer_kwargs(trainer, OmegaConf.to_container(cfg.megatron))
    assert kwargs["strategy"].tensor_model_parallel_size == cfg.megatron.tensor_model_parallel_size
    module = megatron_optimizer(OmegaConf.to_container(cfg.model.optim, resolve=True), cfg.trainer.max_steps,
                                clip_grad=cfg.trainer.gradient_clip_val)
    assert module.config.lr == cfg.model.optim.llm_lr and module.config.clip_grad == 1.0
    assert module.config.lr * module.lr_mult == pytest.approx(cfg.model.optim.adapter_lr)


@pytest.mark.parametrize("size", ["3b", "7b"])
def test_paper_stage2_recipes_continue_their_stage1_from_its_pre_decay_checkpoint(size):
    from pathlib import Path

    from nemo_salad.callbacks import PreDecayCheckpoint
    from nemo_salad.recipes.train import active_selection_callback

    s1, s2 = compose([], name=f"stage1_qwen2.5_{size}"), compose([], name=f"stage2_qwen2.5_{size}")
    assert s2.model.llm == s1.model.llm and s2.model.encoder == s1.model.encoder and s2.megatron == s1.megatron
    assert s2.model.adapter == s1.model.adapter and s2.model.optim.llm_lr == s1.model.optim.llm_lr
    written = PreDecayCheckpoint(Path(s1.exp_manager.exp_dir) / s1.name / "checkpoints", s1.name, 0.2).path
    assert Path(s2.init_from) == written  # where Stage I's callback put it (a folder without .ckpt under megatron)
    assert (s2.model.optim.warmup_steps, s2.model.optim.decay_fraction) == (0, 1.0)  # decay to 0 over Stage II
    callback = active_selection_callback(s2.active_selection)
    assert callback.at_train_start and callback.config.cluster.k == 128 and callback.config.gamma == 5.0
    assert s2.active_selection.tts.name == "nemo" and s2.trainer.strategy == "megatron"
    # the TTS filter transcribes with the ASR model the encoder comes from (built only when the round runs)
    assert callback.asr_filter["engine"] == "nemo" and callback.asr_filter["model"] == s2.model.encoder.pretrained
