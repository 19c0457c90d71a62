"""Logit-level losses with one signature: ``(student_logits, teacher_logits, labels) -> loss``.

These are the direct (unchunked) forms of the objective — readable, differentiable by autograd, and the
reference that the fused chunked loss is tested against:

* :class:`NLLLoss` — next-token negative log-likelihood of the text targets;
* :class:`KDLoss` — ``T² · D(teacher ‖ student)`` on the full next-token distributions;
* :class:`InterpolatedLoss` — ``α · KD + (1 − α) · NLL`` (paper Eq. 4; α = 1 in both SALAD stages).

``labels`` holds the target token id of each position and ``-100`` where no loss is taken; every loss is the
mean over the kept positions and exactly 0 when none is kept. Logits are ``(..., V)``, labels ``(...)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nemo_salad.losses.divergence import DIRECTIONS, Direction, divergence

__all__ = ["IGNORE_INDEX", "InterpolatedLoss", "KDLoss", "NLLLoss"]

IGNORE_INDEX = -100


def _kept(logits: Tensor | None, labels: Tensor) -> tuple[Tensor, Tensor | None]:
    keep = labels.reshape(-1) != IGNORE_INDEX
    return keep, (logits.reshape(-1, logits.shape[-1])[keep] if logits is not None else None)


class NLLLoss(nn.Module):
    """Mean ``−log p_student(label)`` over kept positions; ``teacher_logits`` is ignored.

    >>> NLLLoss()(torch.zeros(2, 4), None, torch.tensor([1, -100])).item() == torch.log(torch.tensor(4.)).item()
    True
    """

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor) -> Tensor:
        keep, s = _kept(student_logits, labels)
        if not bool(keep.any()):
            return student_logits.sum() * 0.0
        return nn.functional.cross_entropy(s.float(), labels.reshape(-1)[keep])


class KDLoss(nn.Module):
    """Mean ``T² · D(softmax(teacher/T) ‖ softmax(student/T))`` over kept positions.

    Args:
        direction (str): ``forward`` KL(teacher‖student) (default), ``reverse`` KL(student‖teacher), ``js``.
        temperature (float): T. Default: 1.0.

    >>> x = torch.randn(3, 5)
    >>> KDLoss()(x, x, torch.tensor([0, 1, 2])).item()
    0.0
    """

    def __init__(self, direction: Direction = "forward", temperature: float = 1.0) -> None:
        super().__init__()
        if direction not in DIRECTIONS:
            raise ValueError(f"direction={direction!r}; expected one of {DIRECTIONS}")
        self.direction, self.temperature = direction, temperature

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        keep, s = _kept(student_logits, labels)
        if not bool(keep.any()):
            return student_logits.sum() * 0.0
        _, t = _kept(teacher_logits, labels)
        t_logp = torch.log_softmax(t.float().detach() / self.temperature, -1)
        s_logp = torch.log_softmax(s.float() / self.temperature, -1)
        return self.temperature ** 2 * divergence(s_logp, t_logp, self.direction).mean()


class InterpolatedLoss(nn.Module):
    """``α · KDLoss + (1 − α) · NLLLoss`` (the teacher is not needed when α = 0).

    >>> x = torch.randn(3, 5)
    >>> InterpolatedLoss(alpha=1.0)(x, x, torch.tensor([0, 1, 2])).item()
    0.0
    """

    def __init__(self, alpha: float = 1.0, direction: Direction = "forward", temperature: float = 1.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha} must be in [0, 1]")
        self.alpha = alpha
        self.kd, self.nll = KDLoss(direction, temperature), NLLLoss()

    def forward(self, student_logits: Tensor, teacher_logits: Tensor | None, labels: Tensor) -> Tensor:
        loss = student_logits.sum() * 0.0
        if self.alpha > 0:
            loss = loss + self.alpha * self.kd(student_logits, teacher_logits, labels)
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * self.nll(student_logits, None, labels)
        return loss
