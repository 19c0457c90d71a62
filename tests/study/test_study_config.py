"""The shipped study configs: each validates, and every run it plans composes into a training config that the
training schema accepts (the study's keys included), with the run's own alpha, gamma and checkpoint."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from nemo_salad.recipes.schema import typed_training_config
from nemo_salad.recipes.validate import validate_training_config
from nemo_salad.study import load_study_config
from nemo_salad.study.plan import demo_settings, plan_steps
from tests.helpers.tiny import CONF


def _study(name: str):
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return load_study_config(compose(config_name=name))


@pytest.mark.parametrize("name", ["study", "study_gpu"])
def test_every_planned_run_composes_and_type_checks(name, tmp_path):
    study = _study(name)
    steps = plan_steps(study)
    assert [s.name for s in steps][:3] == ["data", "clusters", "base"]
    trained = [s for s in steps if s.kind in ("base", "train")]
    assert {s.alpha for s in trained if s.group == "stage1" and s.kind == "train"} == set(study.stage1.alphas)
    for step in trained:
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            cfg = compose(config_name=step.config_name, overrides=list(study.train_overrides))
        OmegaConf.set_struct(cfg, False)
        extra = {"exp_manager": {"exp_dir": str(tmp_path)}}
        if step.group == "stage2":
            extra["init_from"] = str(tmp_path / "pre-decay.ckpt")
        if step.settings.get("active_selection"):
            extra["active_selection"] = {"workdir": str(tmp_path / "sel")}
        cfg = OmegaConf.merge(cfg, step.settings, extra)
        validate_training_config(cfg)
        typed = typed_training_config(cfg)
        assert typed.model.loss.alpha == (step.alpha if step.alpha is not None else study.stage2.from_alpha)
        demo = OmegaConf.to_container(typed.data.demo)
        assert all(demo[k] == v for k, v in demo_settings(study).items())
        if step.gamma is not None:
            assert typed.active_selection.selection.gamma == step.gamma
            assert typed.active_selection.selection.budget == study.stage2.budget_hours
        elif step.group == "stage2":
            assert not typed.active_selection  # the arm without synthetic speech


def test_fingerprints_follow_what_a_run_depends_on():
    base = load_study_config({})
    steps = {s.name: s for s in plan_steps(base)}
    longer = load_study_config({"stage2": {"max_steps": 31}})
    changed = {s.name: s for s in plan_steps(longer)}
    same = [n for n in steps if steps[n].fingerprint == changed[n].fingerprint]
    assert same == ["data", "clusters", "base", "s1_alpha0.0", "s1_alpha0.5", "s1_alpha1.0"]
    upstream = {s.name: s for s in plan_steps(load_study_config({"stage1": {"max_steps": 61}}))}
    assert upstream["s2_gamma5.0"].fingerprint != steps["s2_gamma5.0"].fingerprint  # its Stage I run changed
    assert upstream["data"].fingerprint == steps["data"].fingerprint


def test_bad_values_are_listed():
    with pytest.raises(ValueError, match=r"stage1.alphas.*stage2.from_alpha=0.3"):
        load_study_config({"stage1": {"alphas": [1.5]}, "stage2": {"from_alpha": 0.3}})
    with pytest.raises(Exception, match="n_itmes"):
        load_study_config({"eval": {"n_itmes": 5}})
