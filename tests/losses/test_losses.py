"""Losses against an independent float64 re-computation; chunked fused loss == naive autograd loss."""

from __future__ import annotations

import math

import pytest
import torch

from nemo_salad.losses import DistillationLoss, InterpolatedLoss, KDLoss, NLLLoss, fused_distillation

V, H = 37, 8


def _f64_divergence(s_logits, t_logits, direction, temperature):
    """Per-row divergence written from the definitions, in float64 with explicit sums."""
    out = []
    for s_row, t_row in zip(s_logits.double().tolist(), t_logits.double().tolist()):
        def softmax(row):
            m = max(row)
            e = [math.exp((x - m) / temperature) for x in row]
            z = sum(e)
            return [x / z for x in e]
        p, q = softmax(s_row), softmax(t_row)
        kl = lambda a, b: sum(ai * math.log(ai / bi) for ai, bi in zip(a, b) if ai > 0)  # noqa: E731
        if direction == "forward":
            d = kl(q, p)
        elif direction == "reverse":
            d = kl(p, q)
        else:
            m = [(a + b) / 2 for a, b in zip(p, q)]
            d = 0.5 * kl(p, m) + 0.5 * kl(q, m)
        out.append(temperature ** 2 * d)
    return torch.tensor(out, dtype=torch.float64)


@pytest.fixture()
def data():
    g = torch.Generator().manual_seed(0)
    return (torch.randn(11, H, generator=g), torch.randn(V, H, generator=g), torch.randn(11, H, generator=g),
            torch.randn(V, H, generator=g), torch.randint(0, V, (11,), generator=g))


@pytest.mark.parametrize("direction", ["forward", "reverse", "js"])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_kd_matches_float64_definition(data, direction, temperature):
    hs, ws, ht, wt, y = data
    s, t = hs @ ws.T, ht @ wt.T
    ref = _f64_divergence(s, t, direction, temperature).mean().item()
    assert KDLoss(direction, temperature)(s, t, y).item() == pytest.approx(ref, rel=1e-5)
    fused = fused_distillation(hs, ws, ht, wt, y, alpha=1.0, direction=direction, temperature=temperature)
    assert fused.loss.item() == pytest.approx(ref, rel=1e-5)


def test_directions_differ_and_forward_is_kl_teacher_student(data):
    hs, ws, ht, wt, y = data
    s, t = hs @ ws.T, ht @ wt.T
    fwd, rev = KDLoss("forward")(s, t, y).item(), KDLoss("reverse")(s, t, y).item()
    assert fwd != pytest.approx(rev, rel=1e-3)
    manual = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), log_target=True, reduction="batchmean")
    assert fwd == pytest.approx(manual.item(), rel=1e-5)


def test_nll_matches_float64_definition(data):
    hs, ws, _, _, y = data
    s = (hs @ ws.T).double()
    ref = -(s.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(s, -1)).mean().item()
    assert NLLLoss()(hs @ ws.T, None, y).item() == pytest.approx(ref, rel=1e-6)
    out = fused_distillation(hs, ws, None, None, y, alpha=0.0)
    assert out.loss.item() == pytest.approx(ref, rel=1e-6)
    assert out.kd is None  # not computed without a teacher: not a zero divergence


@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("direction", ["forward", "reverse", "js"])
@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_chunked_equals_naive_including_gradients(data, alpha, direction, chunk):
    hs, ws, ht, wt, y = data
    y = y.clone()
    y[3] = -100
    a_h, a_w = hs.clone().requires_grad_(), ws.clone().requires_grad_()
    naive = InterpolatedLoss(alpha, direction, temperature=1.5)(a_h @ a_w.T, ht @ wt.T, y)
    naive.backward()
    b_h, b_w = hs.clone().requires_grad_(), ws.clone().requires_grad_()
    out = DistillationLoss(alpha, direction, temperature=1.5, chunk_size=chunk)(b_h, b_w, ht, wt, y)
    out.loss.backward()
    assert out.num_tokens == 10
    assert out.loss.item() == pytest.approx(naive.item(), rel=1e-5, abs=1e-7)
    assert torch.allclose(b_h.grad, a_h.grad, atol=1e-6) and torch.allclose(b_w.grad, a_w.grad, atol=1e-6)


def test_alpha_mix_is_the_weighted_sum(data):
    hs, ws, ht, wt, y = data
    out = fused_distillation(hs, ws, ht, wt, y, alpha=0.3)
    assert out.loss.item() == pytest.approx(0.3 * out.kd.item() + 0.7 * out.nll.item(), rel=1e-6)
    s, t = hs @ ws.T, ht @ wt.T
    assert out.kd.item() == pytest.approx(KDLoss()(s, t, y).item(), rel=1e-5)
    assert out.nll.item() == pytest.approx(NLLLoss()(s, None, y).item(), rel=1e-5)


def test_everything_masked_gives_zero_and_a_graph(data):
    hs, ws, ht, wt, _ = data
    h = hs.clone().requires_grad_()
    y = torch.full((11,), -100)
    out = fused_distillation(h, ws, ht, wt, y)
    assert out.loss.item() == 0.0 and out.num_tokens == 0
    out.loss.backward()
    assert torch.equal(h.grad, torch.zeros_like(h))
    for loss in (KDLoss(), NLLLoss(), InterpolatedLoss(0.5)):
        assert loss(hs @ ws.T, ht @ wt.T, y).item() == 0.0


def test_identical_student_and_teacher_give_zero_kd(data):
    hs, ws, _, _, y = data
    h = hs.clone().requires_grad_()
    out = fused_distillation(h, ws, hs, ws, y, direction="js")
    out.loss.backward()
    assert out.loss.item() == pytest.approx(0.0, abs=1e-7) and h.grad.abs().max() < 1e-6


def test_bf16_hidden_states_get_bf16_gradients(data):
    hs, ws, ht, wt, y = data
    h = hs.to(torch.bfloat16).requires_grad_()
    fused_distillation(h, ws, ht, wt, y).loss.backward()
    assert h.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("kwargs,message", [({"alpha": 1.5}, "alpha=1.5"), ({"direction": "kl"}, "direction='kl'"),
                                            ({"temperature": 0}, "temperature=0")])
def test_invalid_settings_are_named(data, kwargs, message):
    hs, ws, ht, wt, y = data
    with pytest.raises(ValueError, match=message):
        fused_distillation(hs, ws, ht, wt, y, **kwargs)
