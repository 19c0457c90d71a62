"""Make a run resumed from a checkpoint continue exactly as the uninterrupted run would have.

A killed run resumed from its last checkpoint trains on the same batches from the same weights, optimizer moments
and schedule position. Two more things are needed for it to repeat the run that never stopped:

* **Random numbers.** Dropout (encoder, adapter, LoRA, LLM), dither and any other random op draw from global
  generators (torch CPU/CUDA, megatron's CUDA RNG tracker, numpy, Python's ``random``) whose state is not in the
  checkpoint, and what runs between two training steps also draws from or reseeds them (DataLoader iterators,
  validation, the gap report at start, a selection round's speech synthesis). Saving the states would not
  help: the state a step starts from does not exist yet when the checkpoint of the previous step is written.
  :class:`ExactResume` instead reseeds every generator at the start of each training batch from
  ``(seed, data-parallel rank, batch index)``, so a batch's random draws depend on nothing that ran before it
  and the resumed run draws exactly what the uninterrupted one drew. Tensor-parallel ranks of one model replica
  share the seed (megatron's tracker gives their tensor-parallel regions distinct streams, as at start-up).
* **Logged steps.** Lightning counts the batches that stepped the optimizer (the loggers' ``step``) and stores
  the count in the checkpoint, but a checkpoint written at the end of a batch stores it before that batch is
  counted, so a resumed run would log every step one too early (step ``k - 1`` twice, the last step never). At
  the first training batch of each fit the count is set to ``global_step``, the number of optimizer steps done,
  which is what it equals at every batch start of an uninterrupted run.

The data pipeline draws no global random numbers (samplers and layouts are seeded from the data seed and cut
ids, see :mod:`nemo_salad.data`), so DataLoader workers need no per-batch seeding.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

__all__ = ["ExactResume", "batch_seed", "seed_all"]


def batch_seed(seed: int, rank: int, batch: int) -> int:
    """The seed of one training batch: a 62-bit mix of the run's seed, the data-parallel rank and the batch index.

    Args:
        seed (int): the run's seed (``seed`` of the training config).
        rank (int): data-parallel rank.
        batch (int): 0-based index of the training batch since the start of training (not of this process).

    Returns:
        int: a seed in ``[0, 2**62)`` (room for megatron's per-rank offsets).

    >>> batch_seed(1234, 0, 7) == batch_seed(1234, 0, 7) != batch_seed(1234, 0, 8)
    True
    """
    digest = hashlib.blake2b(f"{seed}:{rank}:{batch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2


def seed_all(value: int) -> None:
    """Seed Python's ``random``, numpy's global generator, torch (CPU and every CUDA device) and, on a CUDA machine
    with megatron's parallel state, megatron's CUDA RNG tracker.

    Args:
        value (int): a non-negative seed below ``2**62``.

    >>> seed_all(3); a = torch.rand(2); seed_all(3); bool((a == torch.rand(2)).all())
    True
    """
    random.seed(value)
    np.random.seed(value % 2**32)
    torch.manual_seed(value)
    if torch.cuda.is_available():
        from megatron.core import parallel_state

        if parallel_state.model_parallel_is_initialized():
            from megatron.core.tensor_parallel import model_parallel_cuda_manual_seed

            # reseeds the tracker megatron already uses (same kind), tensor-parallel regions offset by TP rank
            model_parallel_cuda_manual_seed(value)


def _data_parallel_rank(trainer: pl.Trainer) -> int:
    from nemo_salad.models.salad import uses_megatron_strategy

    if uses_megatron_strategy(trainer):
        from megatron.core import parallel_state

        return parallel_state.get_data_parallel_rank()
    return trainer.global_rank


class ExactResume(pl.Callback):
    """Per-batch seeding and the loggers' step count, so that a resumed run repeats the uninterrupted one.

    Args:
        seed (int): the run's seed (``seed`` of the training config).

    >>> callback = ExactResume(seed=1234)
    >>> callback.seed
    1234
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._first_batch = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._first_batch = True

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        loop = trainer.fit_loop.epoch_loop
        if self._first_batch:
            self._first_batch = False
            if pl_module.automatic_optimization and len(trainer.optimizers) == 1:
                loop._batches_that_stepped = trainer.global_step  # see the module docstring (logged steps)
        # batches started since the start of training, this one included; restored from the checkpoint
        index = loop.batch_progress.total.ready - 1
        seed_all(batch_seed(self.seed, _data_parallel_rank(trainer), index))
