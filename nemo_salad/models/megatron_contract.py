"""What NeMo-2's ``MegatronStrategy`` needs from a LightningModule, for :class:`~nemo_salad.models.SaladModel`.

Under ``MegatronStrategy`` the training loop is megatron-core's pipeline schedule, driven by
``nemo.lightning.MegatronParallel``: it pulls a batch with the module's ``data_step``, calls ``training_step``
(or ``validation_step``) with that batch alone, and hands the returned tensor to the module's
``training_loss_reduction`` (a ``MegatronLossReduction``), which yields the loss to back-propagate and the
values to reduce over micro-batches. megatron reads its schedule settings from the module's ``config``.
This is the contract NeMo's ``SpeechToTextLLM`` follows; the same SaladModel also trains with any plain Lightning
strategy, where ``training_step`` gets ``(batch, batch_idx)`` as usual.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from nemo.lightning.megatron_parallel import MegatronLossReduction
from torch import Tensor

__all__ = ["SaladLossReduction", "megatron_data_step"]


def megatron_data_step(dataloader_iter: Iterator[Any], device: torch.device) -> dict[str, Any]:
    """Next batch from a (possibly Lightning-wrapped) iterator, with its tensors moved to ``device``."""
    batch = next(dataloader_iter)
    if isinstance(batch, tuple) and len(batch) == 3 and isinstance(batch[1], int):  # (batch, batch_idx, dl_idx)
        batch = batch[0]
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


class SaladLossReduction(MegatronLossReduction):
    """Pass the step's loss through for back-propagation; average it over micro-batches (and data-parallel
    ranks) for logging.

    >>> r = SaladLossReduction()
    >>> loss, out = r.forward({}, torch.tensor(2.0))
    >>> float(r.reduce([out, {"avg": torch.tensor([4.0])}]))
    3.0
    """

    def __init__(self, validation: bool = False) -> None:
        super().__init__()
        self.validation = validation

    def forward(self, batch: dict[str, Any], forward_out: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        # a copy: megatron's schedule divides the returned loss in place by the number of micro-batches
        return forward_out, {"avg": forward_out.detach().clone().reshape(1)}

    def reduce(self, losses_reduced_per_micro_batch: Sequence[dict[str, Tensor]]) -> Tensor:
        if not losses_reduced_per_micro_batch:
            return torch.tensor(0.0)
        loss = torch.cat([x["avg"] for x in losses_reduced_per_micro_batch]).mean()
        from megatron.core import parallel_state

        if torch.distributed.is_initialized() and parallel_state.model_parallel_is_initialized():
            group = parallel_state.get_data_parallel_group()
            if torch.distributed.get_world_size(group) > 1:
                loss = loss.clone()
                torch.distributed.all_reduce(loss, group=group)
                loss /= torch.distributed.get_world_size(group)
        return loss
