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
Legend: ``N`` positions, ``V`` vocabulary.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

__all__ = ["DIRECTIONS", "Direction", "divergence", "divergence_grad"]

Direction = Literal["forward", "reverse", "js"]
DIRECTIONS: tuple[str, ...] = ("forward", "reverse", "js")


def _xlogy_diff(p_log: Tensor, a: Tensor) -> Tensor:
    """``Σ_v exp(p_log) · a`` with ``0 · anything = 0`` where the probability is exactly zero."""
    p = p_log.exp()
    return torch.where(p > 0, p * a, torch.zeros_like(a)).sum(-1)


def divergence(student_logp: Tensor, teacher_logp: Tensor, direction: Direction = "forward") -> Tensor:
    """Divergence per position.

    Args:
        student_logp (Tensor): ``(N, V)`` log-probabilities of the student (already temperature-scaled).
        teacher_logp (Tensor): ``(N, V)`` log-probabilities of the teacher.
        direction (str): ``forward`` (KL teacher‖student), ``reverse`` (KL student‖teacher) or ``js``.

    Returns:
        Tensor: ``(N,)`` non-negative divergences.

    >>> lp = torch.log_softmax(torch.tensor([[1.0, 2.0, 3.0]]), -1)
    >>> divergence(lp, lp).item()
    0.0
    """
    if direction == "forward":
        return _xlogy_diff(teacher_logp, teacher_logp - student_logp)
    if direction == "reverse":
        return _xlogy_diff(student_logp, student_logp - teacher_logp)
    if direction == "js":
        log_m = torch.logaddexp(student_logp, teacher_logp) - math.log(2.0)
        return 0.5 * _xlogy_diff(student_logp, student_logp - log_m) + 0.5 * _xlogy_diff(teacher_logp,
                                                                                           teacher_logp - log_m)
    raise ValueError(f"direction={direction!r}; expected one of {DIRECTIONS}")


def divergence_grad(student_logp: Tensor, teacher_logp: Tensor, direction: Direction = "forward",
                    temperature: float = 1.0) -> Tensor:
    """Gradient of :func:`divergence` w.r.t. the student's *unscaled* logits ``z`` (``logp = log_softmax(z/T)``).

    Returns:
        Tensor: ``(N, V)``.
    """
    p = student_logp.exp()
    if direction == "forward":
        g = p - teacher_logp.exp()
    elif direction == "reverse":
        a = torch.where(p > 0, student_logp - teacher_logp, torch.zeros_like(p))
        g = p * (a - (p * a).sum(-1, keepdim=True))
    elif direction == "js":
        log_m = torch.logaddexp(student_logp, teacher_logp) - math.log(2.0)
        h = 0.5 * torch.where(p > 0, student_logp - log_m, torch.zeros_like(p))
        g = p * (h - (p * h).sum(-1, keepdim=True))
    else:
        raise ValueError(f"direction={direction!r}; expected one of {DIRECTIONS}")
    return g / temperature
