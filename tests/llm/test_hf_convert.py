"""Hugging Face ⇄ Megatron conversion: logit parity with transformers, exact round trip, clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from nemo_salad.llm import LLMConfig, UnsupportedModelError
from nemo_salad.llm.hf_checkpoint import CheckpointError
from nemo_salad.llm.hf_convert import expected_hf_shapes, export_hf, hf_to_megatron, load_hf, megatron_to_hf

PARITY_TOL = 1e-4  # fp32 max |Δlogit| required by the spec


def _batch(vocab: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (3, 17), generator=g)


@pytest.mark.parametrize("attention", ["sdpa", "local"])
def test_logit_parity_with_transformers(tiny_hf, attention):
    name, hf_model, path = tiny_hf
    llm = load_hf(path, attention=attention)
    ids = _batch(hf_model.config.vocab_size)
    with torch.no_grad():
        ref = hf_model(ids).logits
        out = llm(input_ids=ids)
    assert out.shape == ref.shape
    diff = (out - ref).abs().max().item()
    assert diff <= PARITY_TOL, f"{name}/{attention}: max |Δlogit| {diff:.2e}"


def test_parity_is_sensitive_to_every_norm(tiny_hf):
    """Sanity of the parity test itself: a converter that dropped any RMSNorm would fail it."""
    _, hf_model, path = tiny_hf
    llm = load_hf(path)
    ids = _batch(hf_model.config.vocab_size)
    with torch.no_grad():
        ref = hf_model(ids).logits
        for name, param in llm.gpt.named_parameters():
            if "layernorm" in name:
                saved = param.clone()
                param.fill_(1.0)
                assert (llm(input_ids=ids) - ref).abs().max() > PARITY_TOL, name
                param.copy_(saved)


def test_export_reproduces_original_state_dict(tiny_hf, tmp_path):
    _, hf_model, path = tiny_hf
    llm = load_hf(path)
    export_hf(llm, tmp_path / "exported")
    original = load_file(str(path / "model.safetensors"))
    exported = load_file(str(tmp_path / "exported" / "model.safetensors"))
    assert sorted(exported) == sorted(original)
    for key, tensor in original.items():
        assert torch.equal(exported[key], tensor), key


def test_exported_directory_loads_in_transformers(tiny_hf, tmp_path):
    from transformers import AutoModelForCausalLM

    _, hf_model, path = tiny_hf
    export_hf(load_hf(path), tmp_path / "exported")
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path / "exported")).eval()
    ids = _batch(hf_model.config.vocab_size, seed=2)
    with torch.no_grad():
        assert torch.equal(again(ids).logits, hf_model(ids).logits)


def test_state_dict_round_trip_is_exact():
    cfg = LLMConfig.preset("tiny-qwen2", num_attention_heads=6, num_query_groups=3, hidden_size=48)
    g = torch.Generator().manual_seed(0)
    hf_state = {k: torch.randn(*s, generator=g) for k, s in expected_hf_shapes(cfg).items()}
    back = megatron_to_hf(cfg, hf_to_megatron(cfg, hf_state))
    assert sorted(back) == sorted(hf_state)
    assert all(torch.equal(back[k], hf_state[k]) for k in hf_state)


def test_qkv_layout_groups_queries_with_their_kv_head():
    """Megatron's fused QKV rows are [q heads of group g; k_g; v_g] for each group g."""
    cfg = LLMConfig.preset("tiny-llama", hidden_size=8, num_attention_heads=4, num_query_groups=2, num_layers=1)
    state = {k: torch.zeros(*s) for k, s in expected_hf_shapes(cfg).items()}
    d = cfg.kv_channels  # 2
    state["model.layers.0.self_attn.q_proj.weight"] = torch.arange(8.0)[:, None].repeat(1, 8)  # rows 0..7
    state["model.layers.0.self_attn.k_proj.weight"] = 100 + torch.arange(4.0)[:, None].repeat(1, 8)
    state["model.layers.0.self_attn.v_proj.weight"] = 200 + torch.arange(4.0)[:, None].repeat(1, 8)
    qkv = hf_to_megatron(cfg, state)["decoder.layers.0.self_attention.linear_qkv.weight"][:, 0].tolist()
    assert d == 2
    assert qkv == [0, 1, 2, 3, 100, 101, 200, 201, 4, 5, 6, 7, 102, 103, 202, 203]


# ---------------------------------------------------------------------------------------------- bad input
def _copy(path, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(path, dst)
    return dst


def test_missing_directory_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match=str(tmp_path / "nope")):
        load_hf(tmp_path / "nope")


def test_missing_config_names_the_file(tiny_hf, tmp_path):
    ckpt = _copy(tiny_hf[2], tmp_path)
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        load_hf(ckpt)


def test_corrupt_config_names_the_file(tiny_hf, tmp_path):
    ckpt = _copy(tiny_hf[2], tmp_path)
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        load_hf(ckpt)


def test_corrupt_weights_name_the_file(tiny_hf, tmp_path):
    ckpt = _copy(tiny_hf[2], tmp_path)
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=r"cannot read weights from .*model\.safetensors"):
        load_hf(ckpt)


def test_no_weights_says_what_was_expected(tiny_hf, tmp_path):
    ckpt = _copy(tiny_hf[2], tmp_path)
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="expected model.safetensors"):
        load_hf(ckpt)


def test_unsupported_architecture_names_it(tiny_hf, tmp_path):
    ckpt = _copy(tiny_hf[2], tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["GPT2LMHeadModel"], "gpt2"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedModelError, match=r"config\.json: architectures=\['GPT2LMHeadModel'\]"):
        load_hf(ckpt)


def test_vocab_mismatch_reports_found_and_expected(tiny_hf, tmp_path):
    ckpt = _copy(tiny_hf[2], tmp_path)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["vocab_size"] = cfg["vocab_size"] + 8
    (ckpt / "config.json").write_text(json.dumps(cfg))
    pattern = r"model\.embed_tokens\.weight in .*model\.safetensors: found \(320, \d+\), expected \(328, \d+\)"
    with pytest.raises(CheckpointError, match=pattern):
        load_hf(ckpt)


def test_missing_tensor_is_reported(tiny_hf, tmp_path):
    ckpt = _copy(tiny_hf[2], tmp_path)
    state = load_file(str(ckpt / "model.safetensors"))
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, str(ckpt / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"missing, e\.g\. \['model\.layers\.1\.mlp\.up_proj\.weight'\]"):
        load_hf(ckpt)


def test_shard_index_pointing_to_missing_file(tiny_hf, tmp_path):
    ckpt = _copy(tiny_hf[2], tmp_path)
    state = load_file(str(ckpt / "model.safetensors"))
    (ckpt / "model.safetensors").unlink()
    names = sorted(state)
    save_file({k: state[k] for k in names[::2]}, str(ckpt / "model-00001-of-00002.safetensors"))
    weight_map = {k: f"model-0000{1 + i % 2}-of-00002.safetensors" for i, k in enumerate(names)}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(CheckpointError, match=r"lists shard\(s\) that do not exist: .*00002-of-00002"):
        load_hf(ckpt)


def test_sharded_checkpoint_loads(tiny_hf, tmp_path):
    name, hf_model, path = tiny_hf
    ckpt = tmp_path / "sharded"
    hf_model.save_pretrained(str(ckpt), max_shard_size="40KB")
    assert (ckpt / "model.safetensors.index.json").is_file()
    ids = _batch(hf_model.config.vocab_size)
    with torch.no_grad():
        assert (load_hf(ckpt)(input_ids=ids) - hf_model(ids).logits).abs().max() <= PARITY_TOL
