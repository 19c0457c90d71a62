"""Encoder lengths, adapters (causality, padding, frame stacking), LoRA."""

from __future__ import annotations

import pytest
import torch

from nemo_salad.llm import LLMConfig, MegatronLLM
from nemo_salad.modules.adapters import CausalTransformerAdapter, MLPAdapter, stack_frames
from nemo_salad.modules.encoder import SpeechEncoder
from nemo_salad.modules.lora import apply_lora, lora_disabled, merge_lora


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return SpeechEncoder(*SpeechEncoder.tiny_configs()).eval()


def test_encoded_lengths_match_the_network(encoder):
    n = torch.tensor([160, 161, 1279, 1280, 1281, 4000, 16000, 16001, 23456])
    with torch.no_grad():
        _, lens = encoder(torch.zeros(len(n), int(n.max())), n)
    assert torch.equal(encoder.encoded_lengths(n), lens.long())


def test_frame_rate_is_12_5_hz(encoder):
    assert encoder.frame_rate == pytest.approx(12.5)
    assert int(encoder.encoded_lengths(torch.tensor([16000 * 8]))) == pytest.approx(100, abs=1)


def test_stack_frames_never_mixes_sequences():
    x = torch.arange(1, 13, dtype=torch.float).view(2, 3, 2)
    y, lens = stack_frames(x, torch.tensor([3, 1]), 2)
    assert lens.tolist() == [2, 1]
    assert y[0].tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    assert y[1, 0].tolist() == [7, 8, 0, 0]


def test_causal_adapter_is_causal_and_padding_exact():
    torch.manual_seed(0)
    a = CausalTransformerAdapter(8, 16, num_layers=2, hidden_size=24, ffn_hidden_size=32, num_attention_heads=3,
                                 num_query_groups=1).eval()
    x = torch.randn(1, 10, 8)
    with torch.no_grad():
        y, _ = a(x, torch.tensor([10]))
        x2 = x.clone()
        x2[:, 6:] += 1.0
        y2, _ = a(x2, torch.tensor([10]))
        assert torch.equal(y[:, :6], y2[:, :6]) and not torch.allclose(y[:, 6:], y2[:, 6:])
        padded = torch.cat([x[:, :6], torch.randn(1, 4, 8)], dim=1)
        yp, lens = a(torch.cat([x, padded]), torch.tensor([10, 6]))
        assert torch.allclose(yp[1, :6], y[0, :6], atol=1e-5) and lens.tolist() == [10, 6]


def test_mlp_adapter_downsamples_by_stacking():
    y, lens = MLPAdapter(4, 6, downsample=3)(torch.randn(2, 7, 4), torch.tensor([7, 2]))
    assert y.shape == (2, 3, 6) and lens.tolist() == [3, 1]


def test_lora_disabled_merge_and_math():
    torch.manual_seed(0)
    llm = MegatronLLM(LLMConfig.preset("tiny-llama")).eval()
    ids = torch.randint(0, 256, (2, 7))
    with torch.no_grad():
        base = llm(input_ids=ids)
        names = apply_lora(llm, rank=4, alpha=8.0)
        assert len(names) == 4 * llm.cfg.num_layers
        assert torch.equal(llm(input_ids=ids), base)  # b = 0 at init
        for m in llm.modules():
            if hasattr(m, "lora"):
                m.lora.b.weight.normal_()
        adapted = llm(input_ids=ids)
        assert not torch.allclose(adapted, base)
        with lora_disabled(llm):
            assert torch.equal(llm(input_ids=ids), base)
        # one layer by hand: y = W x + scale * B A x
        fc2 = llm.gpt.decoder.layers[0].mlp.linear_fc2
        x = torch.randn(3, fc2.weight.shape[1])
        expected = x @ fc2.weight.T + 2.0 * (x @ fc2.lora.a.weight.T @ fc2.lora.b.weight.T)
        assert torch.allclose(fc2(x)[0], expected, atol=1e-5)
        assert merge_lora(llm) == len(names)
        assert torch.allclose(llm(input_ids=ids), adapted, atol=1e-4)


def test_apply_lora_rejects_targets_that_match_nothing():
    llm = MegatronLLM(LLMConfig.preset("tiny-llama"))
    with pytest.raises(ValueError, match=r"LoRA targets \('q_proj',\) match no megatron linear layer"):
        apply_lora(llm, targets=("q_proj",))
