"""The shared-context scorer against independent per-option full forwards."""

from __future__ import annotations

import itertools

import pytest
import torch

from nemo_salad.evaluation.scoring import (
    ScoreRequest,
    score_full_forward,
    score_shared_context,
    tree_attention_mask,
    tree_layout,
)

TOL = 2e-5  # fp32 forward; summed log-probs of up to ~10 tokens


def _requests(llm, n: int, seed: int, ctx_range=(1, 40), opt_range=(1, 9), k_range=(1, 6)) -> list[ScoreRequest]:
    g = torch.Generator().manual_seed(seed)

    def rint(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi, (1,), generator=g))

    reqs = []
    for _ in range(n):
        ctx_ids = torch.randint(0, 256, (1, rint(*ctx_range)), generator=g)
        with torch.no_grad():
            ctx = llm.embed(ctx_ids)[0]
        # speech-like context part: arbitrary embeddings, not tokens
        ctx = torch.cat([ctx, 0.02 * torch.randn(rint(0, 5), ctx.shape[1], generator=g)])
        opts = [torch.randint(0, 256, (rint(*opt_range),), generator=g).tolist() for _ in range(rint(*k_range))]
        reqs.append(ScoreRequest(ctx, opts))
    return reqs


def _flat(x):
    return torch.tensor(list(itertools.chain.from_iterable(x)), dtype=torch.float64)


@pytest.mark.parametrize("batch_tokens", [1, 150, 100_000])
def test_shared_context_equals_full_forward_per_option(tiny_llm, batch_tokens):
    """One packed row per item (tree mask, restarted positions, several items per batch with padding) gives the
    log-probabilities of scoring every option by its own full forward."""
    reqs = _requests(tiny_llm, 12, seed=batch_tokens)
    shared = _flat(score_shared_context(tiny_llm, reqs, batch_tokens=batch_tokens))
    full = _flat(score_full_forward(tiny_llm, reqs))
    assert shared.shape == full.shape
    assert torch.allclose(shared, full, atol=TOL, rtol=0), (shared - full).abs().max()
    assert full.std() > 1.0  # the options really differ (a constant output would also "match")


def test_batched_full_forward_baseline_agrees(tiny_llm):
    reqs = _requests(tiny_llm, 6, seed=7)
    a = _flat(score_full_forward(tiny_llm, reqs, batch_options=True))
    b = _flat(score_full_forward(tiny_llm, reqs))
    assert torch.allclose(a, b, atol=TOL, rtol=0)


def test_rows_longer_than_the_model_context_are_split(tiny_llm):
    """Context 300 + 4 options of 60 tokens exceeds max_position_embeddings=512 as one row; the scorer splits the
    options over rows that share the context and still matches the full forwards."""
    reqs = _requests(tiny_llm, 2, seed=3, ctx_range=(300, 301), opt_range=(60, 61), k_range=(4, 5))
    assert all(r.row_length > tiny_llm.cfg.max_position_embeddings for r in reqs)
    shared = _flat(score_shared_context(tiny_llm, reqs))
    full = _flat(score_full_forward(tiny_llm, reqs))
    assert torch.allclose(shared, full, atol=1e-4, rtol=0), (shared - full).abs().max()


def test_tree_mask_semantics():
    seg, _ = tree_layout(3, [2, 2], 8)
    allowed = ~tree_attention_mask(seg[None])[0, 0]
    # option 2's first token (position 5) sees the context and itself, not option 1
    assert allowed[5].tolist() == [True, True, True, False, False, True, False, False]
    # option 1's second token sees the context and option 1
    assert allowed[4].tolist() == [True, True, True, True, True, False, False, False]
    assert not allowed[:, 7].any()  # nobody attends to padding
    assert allowed.any(-1).all()  # no fully masked row (NaN guard)


def test_shared_context_processes_far_fewer_positions_on_fewshot_prompts(tiny_llm, byte_tok):
    """The work saved on real 5-shot ARC-Easy prompts: positions run through the model, shared vs per option."""
    from nemo_salad.evaluation import load_benchmark
    from nemo_salad.evaluation.prompts import choose_shot_candidates, prompt_segments, shots_for, text_token_ids

    bench = load_benchmark("arc_easy", n_items=30)
    cands = choose_shot_candidates(bench.shot_pool, 5)
    shared = full = 0
    for item in bench.items:
        ctx = sum(len(text_token_ids(byte_tok, (" " if s.spoken else "") + s.text))
                  for s, _ in prompt_segments(item, shots_for(item, cands, 5)))
        opts = [len(text_token_ids(byte_tok, o)) for o in item.options]
        shared += ctx + sum(opts)
        full += sum(ctx + m for m in opts)
    assert full / shared >= 2.0, full / shared


def test_bad_requests_are_rejected():
    with pytest.raises(ValueError, match="every option needs at least one token"):
        ScoreRequest(torch.zeros(3, 8), [[1], []])
    with pytest.raises(ValueError, match=r"context must be \(L>=1, H\)"):
        ScoreRequest(torch.zeros(0, 8), [[1]])
