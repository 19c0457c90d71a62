"""A training config with values outside their ranges is refused before anything is built, naming every bad key;
every shipped training config passes the same check."""

from __future__ import annotations

import pytest
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from nemo_salad.recipes.train import build
from nemo_salad.recipes.validate import ConfigValueError, training_config_problems
from tests.helpers.tiny import CONF
from tests.training.conftest import compose, tiny_overrides

TRAINING_CONFIGS = sorted(p.stem for p in CONF.glob("stage*.yaml"))


def test_there_are_training_configs():
    assert len(TRAINING_CONFIGS) >= 6


@pytest.mark.parametrize("name", TRAINING_CONFIGS)
def test_every_shipped_training_config_validates(name):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = hydra_compose(config_name=name)
    assert training_config_problems(cfg) == []


def test_bad_values_are_refused_before_anything_is_built(tone_corpus, tmp_path):
    exp = tmp_path / "exp"
    cfg = compose(tiny_overrides(tone_corpus, exp, max_steps=5) + [
        "model.optim.adapter_lr=-1e-3", "model.optim.lora_lr=-2e-3", "model.optim.betas=[0.9,1.0]",
        "data.batch_duration=0", "data.sources.1.weight=0", "model.loss.alpha=1.5", "trainer.max_steps=0"])
    with pytest.raises(ConfigValueError) as err:
        build(cfg)
    message = str(err.value)
    for line in ("model.optim.adapter_lr=-0.001: expected a number >= 0",
                 "model.optim.lora_lr=-0.002: expected a number >= 0 or null",
                 "model.optim.betas.1=1.0: expected a number in [0, 1)",
                 "data.batch_duration=0: expected a number > 0",
                 "data.sources.1.weight=0: expected a number > 0",
                 "model.loss.alpha=1.5: expected a number in [0, 1]",
                 "trainer.max_steps=0: expected an integer >= 1"):
        assert line in message
    assert len(err.value.problems) == 7
    assert not exp.exists()  # no trainer (exp_manager makes this folder), model or data was built


@pytest.mark.parametrize("override, key", [("model.optim.llm_lr=-5e-5", "model.optim.llm_lr"),
                                           ("model.optim.encoder_lr=-1", "model.optim.encoder_lr"),
                                           ("data.max_skip_fraction=1.5", "data.max_skip_fraction"),
                                           ("data.num_buckets=0", "data.num_buckets"),
                                           ("model.optim.decay_fraction=2", "model.optim.decay_fraction"),
                                           ("model.optim.eps=0", "model.optim.eps"),
                                           ("model.loss.temperature=0", "model.loss.temperature"),
                                           ("+trainer.strategy=fsdp", "trainer.strategy"),
                                           ("+trainer.strategy=ddp_spawn", "trainer.strategy")])
def test_each_range_names_its_key(override, key):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = hydra_compose(config_name="stage1", overrides=[override])
    problems = training_config_problems(cfg)
    assert len(problems) == 1 and problems[0].startswith(f"{key}=")


def test_interpolated_values_are_checked_resolved():
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = hydra_compose(config_name="stage1", overrides=["+base_lr=-0.5", "model.optim.llm_lr=${base_lr}"])
    assert training_config_problems(cfg) == ["model.optim.llm_lr=-0.5: expected a number >= 0"]
