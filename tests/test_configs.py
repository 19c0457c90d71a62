"""Every shipped config loads, names only allowed and importable targets whose arguments bind, and every LLM
config names a known architecture. Problems are collected and reported all at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from nemo_salad.llm import PRESETS
from nemo_salad.parts.safe_config import target_problems

CONF = Path(__file__).resolve().parents[1] / "conf"
ALL_YAML = sorted(CONF.rglob("*.yaml"))


def test_there_are_configs():
    assert len(ALL_YAML) >= 10


def test_every_config_is_sound():
    problems = []
    for path in ALL_YAML:
        rel = path.relative_to(CONF)
        raw = OmegaConf.load(path)
        try:  # experiment configs (with a defaults list) interpolate their parents: checked composed, below
            cfg = OmegaConf.to_container(raw, resolve="defaults" not in raw)
        except Exception as exc:  # noqa: BLE001 - report every broken file at once
            problems.append(f"{rel}: does not load/resolve: {exc}")
            continue
        problems += target_problems(cfg, source=str(rel))
        if rel.parts[:2] == ("model", "llm"):
            arch = cfg.get("arch")
            if isinstance(arch, str) and arch not in PRESETS:
                problems.append(f"{rel}: arch={arch!r} is not a preset")
            if not cfg.get("pretrained") and not arch:
                problems.append(f"{rel}: neither pretrained nor arch is set")
    assert not problems, "\n".join(problems)


TOP_LEVEL = sorted(p.stem for p in CONF.glob("*.yaml")  # study configs: tests/study/test_study_config.py
                   if "defaults" in OmegaConf.load(p) and not p.stem.startswith("study"))


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_configs_compose(name):
    """Each experiment config composes with Hydra; its targets are sound; required values are marked ???."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name=name)
    assert not target_problems(OmegaConf.to_container(cfg, resolve=False), source=name)
    assert {"model", "data", "trainer", "exp_manager"} <= set(cfg)


@pytest.mark.parametrize("name", ["qwen2.5_3b", "qwen2.5_7b"])
def test_paper_recipes_validate_without_weights(name):
    """The paper's LLMs cannot be loaded here; their configs still name a real architecture whose adapter
    projection sizes follow (2048-d for 3B, 3584-d for 7B)."""
    from nemo_salad.llm import LLMConfig

    cfg = OmegaConf.load(CONF / "model" / "llm" / f"{name}.yaml")
    arch = LLMConfig.preset(cfg.arch)
    assert arch.hidden_size == {"qwen2.5_3b": 2048, "qwen2.5_7b": 3584}[name]
    assert arch.family == "qwen2" and arch.qkv_bias and arch.rope_base == 1e6


def test_a_broken_config_is_reported(tmp_path):
    """The checker itself catches what it should (an unknown argument, a missing class, a forbidden module)."""
    cfg = {"a": {"_target_": "nemo_salad.modules.adapters.MLPAdapter", "downsampel": 2},
           "b": {"_target_": "nemo_salad.modules.adapters.NoSuchAdapter"},
           "c": {"_target_": "subprocess.run"}}
    problems = target_problems(cfg)
    assert len(problems) == 3
    assert "unexpected keyword argument 'downsampel'" in problems[0]
    assert "cannot import" in problems[1] and "outside the allowlist" in problems[2]


def test_user_prefixes_extend_the_allowlist_only_from_code(monkeypatch):
    from nemo_salad.parts import safe_config

    cfg = {"adapter": {"_target_": "fractions.Fraction"}}  # stands for a user's own package
    with pytest.raises(safe_config.UnsafeTargetError, match="fractions.Fraction"):
        safe_config.check_targets(cfg)
    monkeypatch.setattr(safe_config, "_EXTRA_PREFIXES", [])
    safe_config.allow_target_prefix("fractions.")
    safe_config.check_targets(cfg)
    with pytest.raises(ValueError, match="must be a module path ending with '.'"):
        safe_config.allow_target_prefix("")


ENCODERS = sorted(p.stem for p in (CONF / "model" / "encoder").glob("*.yaml"))


@pytest.mark.parametrize("encoder", ENCODERS)
def test_every_encoder_composes_into_stage1(encoder, monkeypatch):
    """Each encoder of the ``model/encoder`` group is selectable in Stage I, names a known ``kind``, and the
    checkpoint folders of Whisper / Mimi come from their environment variables."""
    from hydra import compose, initialize_config_dir

    from nemo_salad.models.build import ENCODER_KINDS

    monkeypatch.setenv("SALAD_WHISPER", "/models/whisper-small")
    monkeypatch.setenv("SALAD_MIMI", "/models/mimi")
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name="stage1", overrides=[f"model/encoder={encoder}"])
    enc = OmegaConf.to_container(cfg.model.encoder, resolve=True)
    assert enc["kind"] in ENCODER_KINDS and "_target_" not in enc
    assert not target_problems(OmegaConf.to_container(cfg, resolve=False), source=encoder)
    expected = {"whisper_hf": "/models/whisper-small", "mimi": "/models/mimi", "whisper_tiny_en": "tiny.en"}
    if encoder in expected:
        assert enc["pretrained"] == expected[encoder]


@pytest.mark.parametrize("name", ["stage1", "stage2", "stage1_qwen2.5_3b", "stage1_qwen2.5_7b"])
def test_default_encoders(name):
    """The embedded default hears through the frozen pretrained Whisper tiny.en (4 frames stacked: 12.5 per second
    into the LLM); the paper recipes keep the FastConformer."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(config_name=name)
    if name.startswith("stage1_qwen"):
        assert (cfg.model.encoder.kind, cfg.model.adapter.downsample, cfg.report) == ("fastconformer", 1, None)
    else:
        enc = cfg.model.encoder
        assert (enc.kind, enc.pretrained, enc.freeze, cfg.model.adapter.downsample) == ("whisper", "tiny.en", True, 4)


TRAINING = sorted(p.stem for p in CONF.glob("stage*.yaml"))


def _compose(name: str, overrides: list[str] | None = None):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(config_name=name, overrides=overrides or [])


@pytest.mark.parametrize("name", TRAINING)
def test_every_training_config_type_checks(name):
    """Each shipped training config merges into the typed schema; keys it leaves out take the schema's defaults."""
    from nemo_salad.recipes.schema import typed_training_config

    cfg = typed_training_config(_compose(name))
    assert isinstance(cfg.data.max_duration, float) and isinstance(cfg.model.optim.warmup_steps, int)
    assert cfg.model.loss.direction in ("forward", "reverse", "js")
    if name.startswith("stage2"):
        assert cfg.active_selection.weight == 1.0 and cfg.active_selection.selection.gamma == 5.0
    if "qwen" in name:
        assert cfg.megatron.ckpt_async_save is True and cfg.data.pack_length == 2048  # megatron: from its defaults


@pytest.mark.parametrize("override, key", [("model.optim.adapter_lr=abc", "model.optim.adapter_lr"),
                                           ("data.num_buckets=many", "data.num_buckets"),
                                           ("data.layout.min_words=x", "data.layout.min_words"),
                                           ("+model.optim.adapter_lrr=1", "model.optim.adapter_lrr"),
                                           ("+model.loss.temperatur=2", "model.loss.temperatur"),
                                           ("+data.max_duraton=20", "data.max_duraton"),
                                           ("+data.sources.0.wieght=2", "data.sources.0.wieght"),
                                           ("+megatron.tensor_parallel=2", "megatron.tensor_parallel"),
                                           ("+seeed=1", "seeed")])
def test_a_wrong_type_or_unknown_key_is_refused_naming_it(override, key):
    from nemo_salad.recipes.schema import ConfigSchemaError, typed_training_config

    with pytest.raises(ConfigSchemaError, match=rf"training config: {key.replace('.', chr(92) + '.')}: "):
        typed_training_config(_compose("stage1_qwen2.5_3b" if "megatron" in override else "stage1", [override]))


def test_build_refuses_an_unknown_key_before_anything_is_built(tmp_path):
    from nemo_salad.recipes.schema import ConfigSchemaError
    from nemo_salad.recipes.train import build

    cfg = _compose("stage1", [f"exp_manager.exp_dir={tmp_path / 'exp'}", "+model.optim.warmup=5"])
    with pytest.raises(ConfigSchemaError, match=r"model\.optim\.warmup: Key 'warmup' not in 'OptimConfig'"):
        build(cfg)
    assert not (tmp_path / "exp").exists()


def test_each_default_has_one_source():
    """The schema reuses the defaults of the code that owns them instead of repeating them."""
    import dataclasses
    import inspect

    from nemo_salad.data import demo
    from nemo_salad.data.layout import LayoutConfig
    from nemo_salad.losses import DistillationLoss
    from nemo_salad.recipes import schema
    from nemo_salad.recipes.megatron import MEGATRON_DEFAULTS

    loss = {k: p.default for k, p in inspect.signature(DistillationLoss.__init__).parameters.items() if k != "self"}
    assert dataclasses.asdict(schema.LossConfig()) == loss
    assert dataclasses.asdict(schema.MegatronConfig()) == MEGATRON_DEFAULTS
    assert dataclasses.asdict(schema.DemoConfig()) == demo._DEFAULTS
    assert dataclasses.asdict(schema.LayoutSchema()) == dataclasses.asdict(LayoutConfig())


def test_the_schema_is_a_hydra_structured_config(tmp_path):
    """Registered in Hydra's ConfigStore as ``salad_training``: a config whose defaults list names it is typed at
    compose time."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from nemo_salad.recipes.schema import register_schema

    register_schema()

    (tmp_path / "exp.yaml").write_text("defaults:\n  - salad_training\n  - _self_\n\nmodel:\n  optim:\n"
                                       "    adapter_lr: 2.0e-3\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose(config_name="exp")
        assert (cfg.model.optim.adapter_lr, cfg.model.optim.llm_lr, cfg.data.max_duration) == (2e-3, 5e-5, 40.0)
        with pytest.raises(ConfigCompositionException, match="model.optim.adapter_lr"):
            compose(config_name="exp", overrides=["model.optim.adapter_lr=abc"])


def test_removed_model_keys_are_ignored_with_a_warning(caplog):
    """model.on_bad_sample and model.splice (removed: the dataset skips and counts every bad sample) still compose."""
    import logging

    from nemo_salad.recipes.schema import typed_training_config

    with caplog.at_level(logging.WARNING):
        cfg = typed_training_config({"model": {"on_bad_sample": "skip", "splice": {"pad_side": "right"}}})
    assert "on_bad_sample" not in cfg.model and "splice" not in cfg.model
    assert any("no longer exist" in r.getMessage() for r in caplog.records)
