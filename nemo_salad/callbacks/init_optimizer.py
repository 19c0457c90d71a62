"""Start training with another run's optimizer state: Stage II continues the AdamW moments of Stage I's pre-decay
checkpoint (``init_from`` with ``init_optimizer: true``; :func:`nemo_salad.recipes.train.build` adds this callback).

The model's weights were loaded when it was built (``SaladModel.init_from``); the optimizer exists only once the
strategy has set it up, so its state is loaded at ``on_train_start``, before the first step: from a Lightning
checkpoint on the plain path, from a megatron distributed checkpoint (fp32 main parameters, Adam moments and step
count of megatron's distributed optimizer) under ``trainer.strategy: megatron``. The learning-rate schedule, the
global step (0) and the data stream are the new run's own.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

from nemo_salad.checkpoint.init_optimizer import restore_megatron_optimizer_state, restore_optimizer_state

__all__ = ["InitOptimizerState"]


class InitOptimizerState(pl.Callback):
    """Load a checkpoint's optimizer state (moments and step counts) into the fresh optimizer.

    Args:
        path (str): the checkpoint (``<name>-pre-decay.ckpt``); its optimizer's parameter groups must be this
            model's (:func:`~nemo_salad.checkpoint.init_optimizer.restore_optimizer_state` names what differs).
        megatron (bool): the run trains under ``trainer.strategy: megatron`` and ``path`` is a megatron distributed
            checkpoint (:func:`~nemo_salad.checkpoint.init_optimizer.restore_megatron_optimizer_state`).
            Default: False.
    """

    def __init__(self, path: str, megatron: bool = False) -> None:
        self.path = str(path)
        self.megatron = bool(megatron)
        self.restored_step: float | None = None  # the checkpoint's Adam step count, once loaded

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if self.restored_step is not None:  # a second fit() continues its own state
            return
        if self.megatron:
            self.restored_step = restore_megatron_optimizer_state(trainer.strategy, self.path)
            return
        if len(trainer.optimizers) != 1:
            raise ValueError(f"init_optimizer: expected one optimizer, the trainer has {len(trainer.optimizers)}")
        names = {id(p): n for n, p in pl_module.named_parameters()}
        self.restored_step = restore_optimizer_state(trainer.optimizers[0], self.path, names)
