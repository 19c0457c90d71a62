"""Cross-modal distillation + NLL from hidden states, chunked over positions so no ``(N, V)`` logits persist.

The naive loss computes student and teacher logits for every compared position (``2 · N · V`` floats, plus
the student's kept for backward: with Qwen2.5's V = 151,936 that is ~1.2 GB per 1,000 positions). Here the
output projection is fused into the loss: for each chunk of positions both models' logits are formed in
fp32, the loss and its gradient w.r.t. the student logits are computed in closed form
(:func:`~nemo_salad.losses.divergence.divergence_grad`), and only ``d loss / d hidden`` ``(N, H)`` and
``d loss / d weight`` ``(V, H)`` are kept for backward. Peak extra memory is ``O(chunk · V)``.

Tensor parallelism: with ``tp_group`` the weights are this rank's vocabulary shard (megatron's vocab-parallel
output layer); softmax normalisers, divergences and the target logit are all-reduced over the group, and
``d loss / d hidden`` is summed over ranks, so the full vocabulary is never gathered.

Legend: ``N`` compared positions, ``H`` hidden size, ``V`` vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from nemo_salad.losses.divergence import DIRECTIONS, Direction, divergence, divergence_grad, log_softmax, vocab_sum
from nemo_salad.losses.kd import IGNORE_INDEX

__all__ = ["DistillationLoss", "LossOutput", "chunked_divergence", "fused_distillation"]


@dataclass
class LossOutput:
    """The training loss and its parts (per compared token)."""

    loss: Tensor  # α·KD + (1−α)·NLL, differentiable
    kd: Tensor | None  # T²·divergence per token (detached); None when α = 0 (not computed, no teacher pass)
    nll: Tensor  # NLL per token (detached)
    num_tokens: int


class _FusedLinearDistillation(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s_hidden: Tensor, s_weight: Tensor, t_hidden: Tensor | None, t_weight: Tensor | None,
                targets: Tensor, alpha: float, direction: str, temperature: float, chunk_size: int, group: Any):
        n = s_hidden.shape[0]
        vsum = vocab_sum(group)
        first = _vocab_start(s_weight.shape[0], group)
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        w = s_weight.float()
        grad_h = torch.zeros(s_hidden.shape, dtype=torch.float32, device=s_hidden.device) if need_h else None
        grad_w = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_w else None
        kd_sum = torch.zeros((), dtype=torch.float64, device=s_hidden.device)
        nll_sum = torch.zeros((), dtype=torch.float64, device=s_hidden.device)
        t2 = temperature * temperature
        for start in range(0, n, chunk_size):
            end = min(start + chunk_size, n)
            hs = s_hidden[start:end].float()
            z = hs @ w.T  # (n_c, V)
            logp = log_softmax(z, group)
            y = targets[start:end, None] - first  # index into this rank's vocabulary shard
            mine = (y >= 0) & (y < z.shape[1])
            y_local = y.clamp(0, z.shape[1] - 1)
            target_logp = torch.where(mine, logp.gather(1, y_local), torch.zeros_like(y, dtype=logp.dtype))
            nll_sum += -vsum(target_logp).double().sum()
            grad = None
            if alpha > 0:
                zt = t_hidden[start:end].float() @ t_weight.float().T  # (n_c, V), no grad
                s_logp = logp if temperature == 1.0 else log_softmax(z / temperature, group)
                t_logp = log_softmax(zt / temperature, group)
                kd_sum += t2 * divergence(s_logp, t_logp, direction, vsum).double().sum()
                if need_h or need_w:
                    grad = (alpha * t2) * divergence_grad(s_logp, t_logp, direction, temperature, vsum)
                del zt, t_logp
            if alpha < 1 and (need_h or need_w):
                g_nll = logp.exp()
                g_nll.scatter_add_(1, y_local, torch.where(mine, -1.0, 0.0).to(g_nll.dtype))
                grad = (1 - alpha) * g_nll if grad is None else grad.add_(g_nll, alpha=1 - alpha)
            if grad is not None:
                grad /= n
                if need_h:
                    grad_h[start:end] = grad @ w
                if need_w:
                    grad_w.addmm_(grad.T, hs)
            del z, logp, grad
        if grad_h is not None and group is not None and torch.distributed.get_world_size(group) > 1:
            torch.distributed.all_reduce(grad_h, group=group)  # each rank saw only its vocabulary shard
        kd, nll = (kd_sum / n).float(), (nll_sum / n).float()
        loss = alpha * kd + (1 - alpha) * nll
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (s_hidden.dtype, s_weight.dtype)
        ctx.mark_non_differentiable(kd, nll)
        return loss, kd, nll

    @staticmethod
    def backward(ctx, grad_loss: Tensor, _kd: Tensor, _nll: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        gh = (grad_h * grad_loss).to(ctx.dtypes[0]) if grad_h is not None else None
        gw = (grad_w * grad_loss).to(ctx.dtypes[1]) if grad_w is not None else None
        return gh, gw, None, None, None, None, None, None, None, None


def _vocab_start(shard_size: int, group: Any) -> int:
    """First vocabulary id held by this rank (megatron splits the vocabulary into equal contiguous shards)."""
    if group is None:
        return 0
    return torch.distributed.get_rank(group) * shard_size


def fused_distillation(student_hidden: Tensor, student_weight: Tensor, teacher_hidden: Tensor | None,
                       teacher_weight: Tensor | None, targets: Tensor, alpha: float = 1.0,
                       direction: Direction = "forward", temperature: float = 1.0, chunk_size: int = 1024,
                       tp_group: Any = None) -> LossOutput:
    """``α · T² · D(teacher ‖ student) + (1 − α) · NLL`` averaged over positions, chunked.

    Args:
        student_hidden (Tensor): ``(N, H)`` student final hidden states at the compared positions.
        student_weight (Tensor): ``(V, H)`` student output projection.
        teacher_hidden (Tensor | None): ``(N, H)`` teacher hidden states at the aligned positions (None if α = 0).
        teacher_weight (Tensor | None): ``(V, H)`` teacher output projection.
        targets (Tensor): ``(N,)`` next-token ids; ``-100`` rows are ignored.
        alpha (float): weight of distillation (paper: 1 in both stages). Default: 1.0.
        direction (str): ``forward`` | ``reverse`` | ``js``. Default: "forward".
        temperature (float): softmax temperature T of the distillation term. Default: 1.0.
        chunk_size (int): positions per chunk. Default: 1024.
        tp_group: tensor-parallel process group when the weights are vocabulary shards. Default: None.

    Returns:
        LossOutput: ``loss`` (0, still differentiable, when no position is left).

    >>> h, w = torch.randn(5, 4, requires_grad=True), torch.randn(7, 4)
    >>> out = fused_distillation(h, w, h.detach(), w, torch.tensor([1, 2, 3, 4, 5]))
    >>> round(out.loss.item(), 6)  # student == teacher
    0.0
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r}; expected one of {DIRECTIONS}")
    if temperature <= 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    if alpha > 0 and (teacher_hidden is None or teacher_weight is None):
        raise ValueError("alpha > 0 needs the teacher's hidden states and output weight")
    keep = targets != IGNORE_INDEX
    if not bool(keep.all()):
        student_hidden, targets = student_hidden[keep], targets[keep]
        teacher_hidden = teacher_hidden[keep] if teacher_hidden is not None else None
    n = int(targets.numel())
    if n == 0:
        zero = student_hidden.sum() * 0.0 + student_weight.sum() * 0.0
        return LossOutput(zero, zero.detach() if alpha > 0 else None, zero.detach(), 0)
    loss, kd, nll = _FusedLinearDistillation.apply(student_hidden, student_weight, teacher_hidden, teacher_weight,
                                                  targets, float(alpha), direction, float(temperature),
                                                  int(chunk_size), tp_group)
    return LossOutput(loss, kd if alpha > 0 else None, nll, n)


@torch.no_grad()
def chunked_divergence(student_hidden: Tensor, student_weight: Tensor, reference_hidden: Tensor,
                       reference_weight: Tensor, direction: Direction = "forward", chunk_size: int = 1024,
                       tp_group: Any = None) -> Tensor:
    """Per-position divergence ``D(reference ‖ student)`` (forward) without gradients: ``(N,)``.

    Used by the forgetting / misalignment metrics, where the "teacher" side is the reference distribution.
    """
    out, vsum = [], vocab_sum(tp_group)
    for start in range(0, student_hidden.shape[0], chunk_size):
        zs = student_hidden[start:start + chunk_size].float() @ student_weight.float().T
        zr = reference_hidden[start:start + chunk_size].float() @ reference_weight.float().T
        out.append(divergence(log_softmax(zs, tp_group), log_softmax(zr, tp_group), direction, vsum))
    return torch.cat(out) if out else student_hidden.new_zeros(0, dtype=torch.float32)


class DistillationLoss(nn.Module):
    """Module form of :func:`fused_distillation` with its settings from config.

    Args:
        alpha (float): weight of distillation vs NLL. Default: 1.0 (paper).
        direction (str): Default: "forward". temperature (float): Default: 1.0. chunk_size (int): Default: 1024.

    >>> loss = DistillationLoss(alpha=0.0)  # NLL only; the teacher may be omitted
    >>> loss(torch.randn(3, 4), torch.randn(6, 4), None, None, torch.tensor([0, 1, 2])).num_tokens
    3
    """

    def __init__(self, alpha: float = 1.0, direction: Direction = "forward", temperature: float = 1.0,
                 chunk_size: int = 1024) -> None:
        super().__init__()
        self.alpha, self.direction, self.temperature, self.chunk_size = alpha, direction, temperature, chunk_size

    def forward(self, student_hidden: Tensor, student_weight: Tensor, teacher_hidden: Tensor | None,
                teacher_weight: Tensor | None, targets: Tensor, tp_group: Any = None) -> LossOutput:
        return fused_distillation(student_hidden, student_weight, teacher_hidden, teacher_weight, targets,
                                  self.alpha, self.direction, self.temperature, self.chunk_size, tp_group)
