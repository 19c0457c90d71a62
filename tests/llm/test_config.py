"""LLMConfig: presets agree with NeMo-2's llm configs, HF config mapping, validation messages."""

from __future__ import annotations

import pytest

from nemo_salad.llm import PRESETS, LLMConfig, UnsupportedModelError

NEMO_EQUIVALENTS = {
    "qwen2.5-0.5b": "Qwen25Config500M",
    "qwen2.5-1.5b": "Qwen25Config1P5B",
    "qwen2.5-3b": "Qwen25Config3B",
    "qwen2.5-7b": "Qwen25Config7B",
    "llama3.2-1b": "Llama32Config1B",
}
# Qwen2.5-0.5B/1.5B are tied in their published config.json; NeMo-2's configs untie them (its Qwen2 importer
# copies lm_head into a separate output layer), which gives the same logits but drifts apart in training.
KNOWN_DIFFERENCES = {"qwen2.5-0.5b": {"tie_embeddings"}, "qwen2.5-1.5b": {"tie_embeddings"}}


@pytest.mark.parametrize("preset", sorted(NEMO_EQUIVALENTS))
def test_presets_match_nemo_llm_configs(preset):
    from nemo.collections import llm as nemo_llm

    ours = LLMConfig.preset(preset)
    theirs = getattr(nemo_llm, NEMO_EQUIVALENTS[preset])(apply_rope_fusion=False)  # TE-only default
    pairs = {
        "num_layers": theirs.num_layers, "hidden_size": theirs.hidden_size,
        "num_attention_heads": theirs.num_attention_heads, "num_query_groups": theirs.num_query_groups,
        "ffn_hidden_size": theirs.ffn_hidden_size, "rope_base": float(theirs.rotary_base),
        "tie_embeddings": theirs.share_embeddings_and_output_weights, "norm_eps": theirs.layernorm_epsilon,
        "qkv_bias": bool(theirs.add_qkv_bias),
    }
    if getattr(theirs, "vocab_size", None):
        pairs["vocab_size"] = theirs.vocab_size
    mismatched = {k: (getattr(ours, k), v) for k, v in pairs.items()
                  if getattr(ours, k) != v and k not in KNOWN_DIFFERENCES.get(preset, set())}
    assert not mismatched, mismatched


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_round_trip_through_hf_config(preset):
    cfg = LLMConfig.preset(preset)
    back = LLMConfig.from_hf(cfg.to_hf())
    assert back.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_hf_config_is_accepted_by_transformers(preset):
    import transformers

    hf = LLMConfig.preset(preset).to_hf()
    config = transformers.AutoConfig.for_model(**hf)
    assert config.num_key_value_heads == hf["num_key_value_heads"]


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown LLMConfig field\(s\) \['hidden'\]"):
        LLMConfig.from_dict({"hidden": 3})


def test_invalid_group_count_is_explained():
    with pytest.raises(ValueError, match="num_attention_heads=6 is not a multiple of num_query_groups=4"):
        LLMConfig(num_attention_heads=6, num_query_groups=4, hidden_size=48)


def test_unknown_preset_lists_known_ones():
    with pytest.raises(KeyError, match="qwen2.5-3b"):
        LLMConfig.preset("qwen9")


@pytest.mark.parametrize("field,value,message", [
    ("use_sliding_window", True, "use_sliding_window=true"),
    ("hidden_act", "gelu", "hidden_act='gelu'"),
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0}, "rope_scaling="),
])
def test_unsupported_options_are_named(field, value, message):
    hf = LLMConfig.preset("tiny-qwen2").to_hf()
    hf[field] = value
    with pytest.raises(UnsupportedModelError, match=message):
        LLMConfig.from_hf(hf, source="x/config.json")


def test_missing_required_field_is_named():
    hf = LLMConfig.preset("tiny-llama").to_hf()
    del hf["intermediate_size"]
    with pytest.raises(UnsupportedModelError, match="x/config.json: required field 'intermediate_size' is missing"):
        LLMConfig.from_hf(hf, source="x/config.json")


def test_llama3_rope_scaling_matches_transformers():
    """Llama-3.x RoPE scaling: same logits as transformers on a tiny model."""
    import torch
    import transformers

    from nemo_salad.llm.hf_convert import hf_to_megatron, load_megatron_state
    from nemo_salad.llm.model import MegatronLLM

    cfg = LLMConfig.preset("tiny-llama", rope_scaling_factor=32.0, rope_base=500000.0, max_position_embeddings=16384)
    hf = transformers.LlamaForCausalLM(transformers.AutoConfig.for_model(**cfg.to_hf())).eval()
    llm = MegatronLLM(cfg).eval()
    load_megatron_state(llm, hf_to_megatron(cfg, hf.state_dict()))
    ids = torch.randint(0, 256, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (llm(input_ids=ids) - hf(ids).logits).abs().max() <= 1e-4


@pytest.mark.parametrize("field,value,message", [
    ("hidden_size", "64", "hidden_size='64' is not an integer"),
    ("hidden_size", 64.5, "hidden_size=64.5 is not an integer"),
    ("num_key_value_heads", True, "num_key_value_heads=True is not an integer"),
    ("rope_theta", "1e4", "rope_theta='1e4' is not a number"),
])
def test_a_bad_value_in_config_json_names_the_file_and_field(tmp_path, field, value, message):
    """Read through the real entry point: a Hugging Face directory named by ``model.llm.pretrained``."""
    import json

    from nemo_salad.models.build import build_llm

    hf = LLMConfig.preset("tiny-llama").to_hf()
    hf[field] = value
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(UnsupportedModelError, match=f"{tmp_path / 'config.json'}: {message}"):
        build_llm({"pretrained": str(tmp_path)}, load_weights=False)


def test_model_type_disagreeing_with_architectures_is_refused():
    hf = LLMConfig.preset("tiny-qwen2").to_hf()
    hf["model_type"] = "llama"
    with pytest.raises(UnsupportedModelError, match=r"x/config.json: model_type='llama' disagrees with "
                                                    r"architectures=\['Qwen2ForCausalLM'\] \(expected model_type "
                                                    r"'qwen2'\)"):
        LLMConfig.from_hf(hf, source="x/config.json")
    hf["model_type"] = "qwen2"
    assert LLMConfig.from_hf(hf).family == "qwen2"
