"""Save a checkpoint at the step where the warmup–stable–decay schedule starts decaying.

Stage II of SALAD resumes "from the Stage I checkpoint taken before its learning-rate decay"; this callback
writes exactly that checkpoint (``<dirpath>/<name>-pre-decay.ckpt``) so Stage II can start from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from nemo.utils import logging

__all__ = ["PreDecayCheckpoint", "decay_start_step"]


def decay_start_step(max_steps: int, decay_fraction: float) -> int:
    """First step of the linear decay (see :func:`nemo_salad.parts.optim.wsd_factor`).

    >>> decay_start_step(60, 0.2)
    48
    """
    return max_steps - int(round(decay_fraction * max_steps))


class PreDecayCheckpoint(pl.Callback):
    """Write ``<dirpath>/<name>-pre-decay.ckpt`` when ``global_step`` reaches the decay start.

    Args:
        dirpath (str | Path): checkpoint directory.
        name (str): file name prefix.
        decay_fraction (float): the schedule's ``decay_fraction``.
    """

    def __init__(self, dirpath: str | Path, name: str, decay_fraction: float) -> None:
        self.path = Path(dirpath) / f"{name}-pre-decay.ckpt"
        self.decay_fraction = decay_fraction

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if 0.0 < self.decay_fraction < 1.0 and trainer.global_step == decay_start_step(trainer.max_steps,
                                                                                         self.decay_fraction):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(str(self.path))
            logging.info(f"saved the checkpoint before learning-rate decay: {self.path}")
