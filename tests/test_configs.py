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


TOP_LEVEL = sorted(p.stem for p in CONF.glob("*.yaml") if "defaults" in OmegaConf.load(p))


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

    from nemo_salad.parts.pretrained import ENCODER_KINDS

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
