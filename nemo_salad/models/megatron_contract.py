"""What NeMo-2's ``MegatronStrategy`` needs from a LightningModule, for :class:`~nemo_salad.models.SaladModel`.

Under ``MegatronStrategy`` the training loop is megatron-core's pipeline schedule, driven by
``nemo.lightning.MegatronParallel``: it pulls a batch with the module's ``data_step``, calls ``training_step``
(or ``validation_step``) with that batch alone, and hands the returned tensor to the module's
``training_loss_reduction`` (a ``MegatronLossReduction``), which yields the loss to back-propagate and the
values to reduce over micro-batches. megatron reads its schedule settings from the module's ``config``.
This is the contract NeMo's ``SpeechToTextLLM`` follows; the same SaladModel also trains with any plain Lightning
strategy, where ``training_step`` gets ``(batch, batch_idx)`` as usual. :class:`MegatronContract` holds the
LightningModule side of it (SaladModel inherits it); whether a run uses it is the model's ``megatron`` flag, set from
the trainer's strategy.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from nemo.lightning.megatron_parallel import MegatronLossReduction
from torch import Tensor

__all__ = ["MegatronContract", "SaladLossReduction", "copy_runtime_settings", "megatron_data_step",
           "uses_megatron_strategy"]

#: TransformerConfig fields that NeMo's MegatronStrategy / mixed-precision plugin set on a model's config.
_RUNTIME_FIELDS = ("fp16", "bf16", "params_dtype", "pipeline_dtype", "autocast_dtype", "timers", "grad_scale_func",
                   "no_sync_func", "grad_sync_func", "param_sync_func", "finalize_model_grads_func")


def uses_megatron_strategy(trainer: Any) -> bool:
    """True when ``trainer`` trains with NeMo-2's ``MegatronStrategy`` (then the model is built in
    ``configure_model``, after megatron's parallel groups exist)."""
    if trainer is None:
        return False
    from nemo.lightning.pytorch.strategies import MegatronStrategy

    return isinstance(trainer.strategy, MegatronStrategy)


def copy_runtime_settings(source: Any, target: Any) -> None:
    """Copy the precision and schedule hooks that NeMo/megatron set on a config (``_RUNTIME_FIELDS``)."""
    for name in _RUNTIME_FIELDS:
        if hasattr(source, name) and hasattr(target, name):
            setattr(target, name, getattr(source, name))


def megatron_data_step(dataloader_iter: Iterator[Any], device: torch.device) -> Any:
    """Next batch from a (possibly Lightning-wrapped) iterator, moved to ``device``."""
    batch = next(dataloader_iter)
    if isinstance(batch, tuple) and len(batch) == 3 and isinstance(batch[1], int):  # (batch, batch_idx, dl_idx)
        batch = batch[0]
    return batch.to(device, non_blocking=True)


class MegatronContract:
    """The LightningModule members NeMo-2's ``MegatronStrategy`` calls (mixed into SaladModel).

    Expects ``_built``, ``_pending_config``, ``llm``, ``network`` and ``device`` on the class it is mixed into.
    """

    @property
    def config(self) -> Any:
        """megatron-core reads schedule settings (precision, overlap hooks, ...) from the module's ``config``: the
        student's ``TransformerConfig`` once built; before that a ``ModelParallelConfig`` collecting what NeMo's
        ``MegatronStrategy`` sets (precision, timers), applied to every megatron block at build time."""
        if self._built:
            return self.llm.gpt.config
        if self._pending_config is None:
            from megatron.core import ModelParallelConfig

            self._pending_config = ModelParallelConfig()
        return self._pending_config

    @config.setter
    def config(self, value: Any) -> None:
        if not self._built:
            self._pending_config = value
            return
        for module in self.megatron_configs():
            copy_runtime_settings(value, module)

    def on_fit_start(self) -> None:
        """NeMo's mixed-precision plugin sets ``fp16``/``bf16`` on ``model.module``'s config (the student's) when it
        wraps the network in ``Float16Module``: give the teacher's and adapter's megatron blocks the same settings."""
        if self._built:
            self.config = self.llm.gpt.config

    def megatron_configs(self) -> list[Any]:
        """The ``TransformerConfig`` of every megatron block (student, teacher, adapter layers), student first."""
        from megatron.core.transformer import TransformerConfig

        seen: dict[int, Any] = {}  # self comes first in modules(), and its config is the student's
        for module in self.modules():
            cfg = getattr(module, "config", None)
            if isinstance(cfg, TransformerConfig):
                seen.setdefault(id(cfg), cfg)
        return list(seen.values())

    @property
    def model_type(self) -> Any:
        """megatron-core's model type (a decoder-only GPT)."""
        from megatron.core.enums import ModelType

        return ModelType.encoder_or_decoder

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None
                           ) -> dict[str, Any]:
        """Megatron distributed-checkpoint view of every weight (student, teacher, encoder, adapter, LoRA), used by
        ``MegatronStrategy`` checkpoints and :mod:`nemo_salad.checkpoint.distributed`."""
        from nemo_salad.checkpoint.distributed import sharded_state_dict

        # the keys of state_dict(): megatron's DistributedDataParallel / Float16Module add no prefix there
        return sharded_state_dict(self, prefix, sharded_offsets, metadata, replace={"module": self.network})

    def data_step(self, dataloader_iter: Any) -> Any:
        return megatron_data_step(dataloader_iter, self.device)

    def training_loss_reduction(self) -> SaladLossReduction:
        return SaladLossReduction()

    def validation_loss_reduction(self) -> SaladLossReduction:
        return SaladLossReduction(validation=True)


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

    def forward(self, batch: Any, forward_out: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
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
