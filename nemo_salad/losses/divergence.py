"""Per-position divergences between next-token distributions, and their gradients w.r.t. student logits.

Conventions: ``q`` is the teacher's distribution, ``p`` the student's, both ``softmax(logits / T)``.

========== ========================================= =====================================
direction  divergence per position                    d divergence / d student logits ``z``
========== ========================================= =====================================
forward    KL(q ‖ p) = Σ q (log q − log p)           (p − q) / T
reverse    KL(p ‖ q) = Σ p (log p − log q)           p ⊙ (a − KL) / T,  a = log p − log q
js         ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2   p ⊙ (g − Σ p g) / T,  g = ½ (log p − log m)
========== ========================================= =====================================

The gradients are used by the fused chunked loss (:mod:`nemo_salad.losses.fused`), which never materialises
all logits at once; ``tests/losses`` checks them against autograd in float64.

With tensor parallelism the vocabulary is split over ranks: pass ``vsum`` that sums over the vocabulary shard
and all-reduces across the tensor-parallel group (:func:`vocab_sum`); every other operation is elementwise.
Legend: ``N`` positions, ``V`` vocabulary (this rank's shard under tensor parallelism).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

__all__ = ["DIRECTIONS", "Direction", "divergence", "divergence_grad", "log_softmax", "vocab_sum"]

Direction = Literal["forward", "reverse", "js"]
DIRECTIONS: tuple[str, ...] = ("forward", "reverse", "js")
VocabSum = Callable[[Tensor], Tensor]  # (N, V) -> (N,) sum over the (whole) vocabulary


def _local_sum(x: Tensor) -> Tensor:
    return x.sum(-1)


def vocab_sum(group: Any = None) -> VocabSum:
    """Sum over the last (vocabulary) dimension, all-reduced over ``group`` when it has more than one rank."""
    if group is None or torch.distributed.get_world_size(group) == 1:
        return _local_sum

    def reduce(x: Tensor) -> Tensor:
        out = x.sum(-1)
        torch.distributed.all_reduce(out, group=group)
        return out

    return reduce


def log_softmax(z: Tensor, group: Any = None) -> Tensor:
    """``log_softmax`` over a vocabulary that may be split across the ranks of ``group``: ``(N, V) → (N, V)``.

    >>> z = torch.randn(2, 5)
    >>> torch.allclose(log_softmax(z), torch.log_softmax(z, -1))
    True
    """
    if group is None or torch.distributed.get_world_size(group) == 1:
        return torch.log_softmax(z, dim=-1)
    m = z.max(-1, keepdim=True).values
    torch.distributed.all_reduce(m, op=torch.distributed.ReduceOp.MAX, group=group)
    s = (z - m).exp().sum(-1, keepdim=True)
    torch.distributed.all_reduce(s, group=group)
    return z - m - s.log()


def _xlogy_diff(p_log: Tensor, a: Tensor, vsum: VocabSum) -> Tensor:
    """``Σ_v exp(p_log) · a`` with ``0 · anything = 0`` where the probability is exactly zero."""
    p = p_log.exp()
    return vsum(torch.where(p > 0, p * a, torch.zeros_like(a)))


def divergence(student_logp: Tensor, teacher_logp: Tensor, direction: Direction = "forward",
               vsum: VocabSum = _local_sum) -> Tensor:
    """Divergence per position.

    Args:
        student_logp (Tensor): ``(N, V)`` log-probabilities of the student (already temperature-scaled).
        teacher_logp (Tensor): ``(N, V)`` log-probabilities of the teacher.
        direction (str): ``forward`` (KL teacher‖student), ``reverse`` (KL student‖teacher) or ``js``.
        vsum (Callable): sum over the vocabulary (see :func:`vocab_sum`). Default: a local sum.

    Returns:
        Tensor: ``(N,)`` non-negative divergences.

    >>> lp = torch.log_softmax(torch.tensor([[1.0, 2.0, 3.0]]), -1)
    >>> divergence(lp, lp).item()
    0.0
    """
    if direction == "forward":
        return _xlogy_diff(teacher_logp, teacher_logp - student_logp, vsum)
    if direction == "reverse":
        return _xlogy_diff(student_logp, student_logp - teacher_logp, vsum)
    if direction == "js":
        log_m = torch.logaddexp(student_logp, teacher_logp) - math.log(2.0)
        return 0.5 * _xlogy_diff(student_logp, student_logp - log_m, vsum) + 0.5 * _xlogy_diff(
            teacher_logp, teacher_logp - log_m, vsum)
    raise ValueError(f"direction={direction!r}; expected one of {DIRECTIONS}")


def divergence_grad(student_logp: Tensor, teacher_logp: Tensor, direction: Direction = "forward",
                    temperature: float = 1.0, vsum: VocabSum = _local_sum) -> Tensor:
    """Gradient of :func:`divergence` w.r.t. the student's *unscaled* logits ``z`` (``logp = log_softmax(z/T)``).

    Returns:
        Tensor: ``(N, V)``.
    """
    p = student_logp.exp()
    if direction == "forward":
        g = p - teacher_logp.exp()
    elif direction == "reverse":
        a = torch.where(p > 0, student_logp - teacher_logp, torch.zeros_like(p))
        g = p * (a - vsum(p * a)[:, None])
    elif direction == "js":
        log_m = torch.logaddexp(student_logp, teacher_logp) - math.log(2.0)
        h = 0.5 * torch.where(p > 0, student_logp - log_m, torch.zeros_like(p))
        g = p * (h - vsum(p * h)[:, None])
    else:
        raise ValueError(f"direction={direction!r}; expected one of {DIRECTIONS}")
    return g / temperature
