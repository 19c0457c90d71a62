"""The Megatron decoder: embeddings in, causality, padding exactness, gradients, attention backends."""

from __future__ import annotations

import pytest
import torch

from nemo_salad.llm import LLMConfig, MegatronLLM, attention_mask_from_padding


@pytest.fixture(scope="module")
def llm() -> MegatronLLM:
    torch.manual_seed(0)
    return MegatronLLM(LLMConfig.preset("tiny-qwen2")).eval()


def _ids(b: int = 2, t: int = 9, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, t), generator=torch.Generator().manual_seed(seed))


def test_decoder_input_reproduces_token_logits_exactly(llm):
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(llm(inputs_embeds=llm.embed(ids)), llm(input_ids=ids))


def test_matches_megatron_gpt_forward(llm):
    """Our split hidden-states/logits path equals megatron-core's own GPTModel.forward."""
    ids = _ids()
    with torch.no_grad():
        ref = llm.gpt(input_ids=ids, position_ids=None, attention_mask=attention_mask_from_padding(None, ids.shape[1]))
        assert torch.equal(llm(input_ids=ids), ref)


def test_causality(llm):
    ids = _ids(1, 12)
    changed = ids.clone()
    changed[0, 7:] = (changed[0, 7:] + 1) % 256
    with torch.no_grad():
        a, b = llm(input_ids=ids), llm(input_ids=changed)
    assert torch.equal(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_is_exact(llm, side):
    """A padded batch gives each sample the logits it gets alone (no leakage across pad or samples)."""
    lengths = [5, 9, 7]
    seqs = [_ids(1, n, seed=n)[0] for n in lengths]
    t = max(lengths)
    ids = torch.zeros(len(seqs), t, dtype=torch.long)
    mask = torch.zeros(len(seqs), t, dtype=torch.bool)
    for i, s in enumerate(seqs):
        sl = slice(t - len(s), t) if side == "left" else slice(0, len(s))
        ids[i, sl], mask[i, sl] = s, True
    ids[~mask] = 17  # arbitrary pad id: must not matter
    with torch.no_grad():
        batched = llm(input_ids=ids, padding_mask=mask)
        for i, s in enumerate(seqs):
            alone = llm(input_ids=s[None])[0]
            got = batched[i][mask[i]]
            assert torch.allclose(got, alone, atol=1e-5, rtol=0), (side, i, (got - alone).abs().max())
    assert torch.isfinite(batched).all()


def test_gradients_reach_inputs_embeds_with_frozen_weights(llm):
    for p in llm.parameters():
        p.requires_grad_(False)
    emb = llm.embed(_ids()).detach().requires_grad_(True)
    llm(inputs_embeds=emb).logsumexp(-1).sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert all(p.grad is None for p in llm.parameters())
    for p in llm.parameters():
        p.requires_grad_(True)


def test_sdpa_and_local_attention_agree():
    torch.manual_seed(3)
    a = MegatronLLM(LLMConfig.preset("tiny-llama"), attention="sdpa").eval()
    b = MegatronLLM(LLMConfig.preset("tiny-llama"), attention="local").eval()
    b.load_state_dict(a.state_dict())
    ids, mask = _ids(), torch.ones(2, 9, dtype=torch.bool)
    mask[0, :3] = False
    with torch.no_grad():
        out_a, out_b = a(input_ids=ids, padding_mask=mask), b(input_ids=ids, padding_mask=mask)
    assert torch.allclose(out_a[mask], out_b[mask], atol=1e-5)


def test_backward_matches_between_attention_backends():
    torch.manual_seed(4)
    a = MegatronLLM(LLMConfig.preset("tiny-llama"), attention="sdpa")
    b = MegatronLLM(LLMConfig.preset("tiny-llama"), attention="local")
    b.load_state_dict(a.state_dict())
    ids = _ids()
    for m in (a, b):
        m(input_ids=ids).log_softmax(-1)[..., 3].sum().backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(pa.grad, pb.grad, atol=1e-5, rtol=1e-4), n


def test_sequence_longer_than_context_is_rejected(llm):
    with pytest.raises(ValueError, match="exceeds the LLM context max_position_embeddings=512"):
        llm(input_ids=torch.zeros(1, 513, dtype=torch.long))


def test_wrong_embedding_width_is_rejected(llm):
    with pytest.raises(ValueError, match=r"inputs_embeds must be \(B, T, 64\)"):
        llm(inputs_embeds=torch.zeros(1, 4, 32))


def test_attention_mask_lets_pad_rows_attend_to_themselves():
    m = attention_mask_from_padding(torch.tensor([[False, False, True, True]]), 4)[0, 0]
    assert not m.all(-1).any()  # no fully masked row
    assert m[2:, :2].all()  # real tokens never see padding


def test_explicit_positions_equal_default(llm):
    ids = _ids()
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    with torch.no_grad():
        assert torch.allclose(llm(input_ids=ids, position_ids=pos), llm(input_ids=ids), atol=1e-6)


def test_shared_context_packing_matches_separate_sequences(llm):
    """Two continuations packed after one context (tree mask + restarted positions) equal two full forwards."""
    ctx, a, b = _ids(1, 6, 1)[0], _ids(1, 3, 2)[0], _ids(1, 4, 3)[0]
    packed = torch.cat([ctx, a, b])[None]
    n, la, lb = len(ctx), len(a), len(b)
    t = n + la + lb
    allowed = torch.zeros(t, t, dtype=torch.bool)
    allowed[:, :n] = True  # everyone sees the context
    allowed[n:n + la, n:n + la] = True
    allowed[n + la:, n + la:] = True
    allowed &= torch.ones(t, t, dtype=torch.bool).tril()
    pos = torch.cat([torch.arange(n), torch.arange(n, n + la), torch.arange(n, n + lb)])[None]
    with torch.no_grad():
        out = llm(input_ids=packed, attention_mask=~allowed[None, None], position_ids=pos)[0]
        full_a = llm(input_ids=torch.cat([ctx, a])[None])[0]
        full_b = llm(input_ids=torch.cat([ctx, b])[None])[0]
    assert torch.allclose(out[:n + la], full_a, atol=1e-5)
    assert torch.allclose(out[n + la:], full_b[n:], atol=1e-5)


def test_position_ids_shape_is_checked(llm):
    with pytest.raises(ValueError, match=r"position_ids must be \(B, T\) = \(2, 9\)"):
        llm(input_ids=_ids(), position_ids=torch.arange(9)[None])
