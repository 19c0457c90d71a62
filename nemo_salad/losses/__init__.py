"""Training objectives: NLL, cross-modal distillation (forward/reverse KL, JS; temperature) and their α-mix."""

from nemo_salad.losses.divergence import DIRECTIONS, divergence, divergence_grad
from nemo_salad.losses.fused import DistillationLoss, LossOutput, chunked_divergence, fused_distillation
from nemo_salad.losses.kd import IGNORE_INDEX, InterpolatedLoss, KDLoss, NLLLoss

__all__ = ["DIRECTIONS", "DistillationLoss", "IGNORE_INDEX", "InterpolatedLoss", "KDLoss", "LossOutput", "NLLLoss",
           "chunked_divergence", "divergence", "divergence_grad", "fused_distillation"]
