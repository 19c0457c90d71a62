"""A training config's token budget: LLM positions per optimizer step and over the run.

The paper states its budget in tokens: batches of ≈1M tokens at a 2048-token context, 24B tokens in Stage I and 1.9B
more in Stage II. With ``data.batch_tokens`` a batch holds that many student positions (speech frames and text tokens,
estimated per cut by :class:`~nemo_salad.data.positions.PositionConstraint`), so::

    tokens per step = batch_tokens × data-parallel ranks × micro-batches per step
    total tokens    = tokens per step × max_steps

with data-parallel ranks = devices × nodes / tensor-parallel size, and micro-batches = ``megatron.num_microbatches``
under the megatron strategy, else ``trainer.accumulate_grad_batches``. These are full batches: real ones fill to
96–99 % of ``batch_tokens`` (:mod:`nemo_salad.data.positions`). :func:`nemo_salad.recipes.train.build` logs it
at start; the model logs each batch's true count (``train/positions``). A config that bounds batches by seconds of
audio (``data.batch_duration``) has no budget known before training: the log says so.

>>> b = token_budget({"data": {"batch_tokens": 8192}, "trainer": {"devices": 8, "num_nodes": 8, "max_steps": 100,
...                   "strategy": "megatron"}, "megatron": {"tensor_model_parallel_size": 2, "num_microbatches": 4}})
>>> b.data_parallel, b.tokens_per_step, b.total_tokens
(32, 1048576, 104857600)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

__all__ = ["TokenBudget", "token_budget"]


@dataclass(frozen=True)
class TokenBudget:
    """Positions per batch, data-parallel ranks, micro-batches per step and steps of one training config."""

    batch_tokens: int | None  # student positions per batch on one data-parallel rank; None: bounded by seconds
    data_parallel: int | None  # None: the device count is not known from the config ("auto")
    micro_batches: int
    max_steps: int

    @property
    def tokens_per_step(self) -> int | None:
        if self.batch_tokens is None or self.data_parallel is None:
            return None
        return self.batch_tokens * self.data_parallel * self.micro_batches

    @property
    def total_tokens(self) -> int | None:
        per_step = self.tokens_per_step
        return None if per_step is None or self.max_steps < 0 else per_step * self.max_steps

    def describe(self) -> str:
        """One log line.

        >>> TokenBudget(16384, 64, 1, 22900).describe()
        "token budget: 16,384 positions per batch × 64 data-parallel ranks × 1 micro-batch(es) = 1.05M tokens per \
step; × 22,900 steps = 24.0B tokens (at full batches; train/positions logs each batch's count)"
        """
        if self.batch_tokens is None:
            return ("token budget: batches are bounded by seconds of audio (data.batch_duration), so tokens per step "
                    "are known only as training runs (train/positions per batch); set data.batch_tokens to fix them")
        if self.data_parallel is None:
            return (f"token budget: {self.batch_tokens:,} positions per batch × {self.micro_batches} micro-batch(es) "
                    "per data-parallel rank (trainer.devices is not a number: the rank count is known at run time)")
        total = self.total_tokens
        steps = f"; × {self.max_steps:,} steps = {total / 1e9:.1f}B tokens" if total is not None else ""
        return (f"token budget: {self.batch_tokens:,} positions per batch × {self.data_parallel} data-parallel ranks × "
                f"{self.micro_batches} micro-batch(es) = {self.tokens_per_step / 1e6:.2f}M tokens per step{steps} "
                "(at full batches; train/positions logs each batch's count)")


def _plain(section: Any) -> dict[str, Any]:
    if isinstance(section, DictConfig):
        return OmegaConf.to_container(section, resolve=True)
    return dict(section) if isinstance(section, Mapping) else {}


def token_budget(cfg: Any) -> TokenBudget:
    """The budget of a composed training config (see the module docstring).

    Args:
        cfg (DictConfig | Mapping): with ``data``, ``trainer`` and, under ``strategy: megatron``, ``megatron``.
    """
    data, trainer = _plain(cfg.get("data")), _plain(cfg.get("trainer"))
    megatron = trainer.get("strategy") == "megatron"
    devices, nodes = trainer.get("devices", 1), int(trainer.get("num_nodes", 1) or 1)
    tp = int(_plain(cfg.get("megatron")).get("tensor_model_parallel_size", 1)) if megatron else 1
    ranks = None
    if isinstance(devices, int) and devices > 0:
        ranks = devices * nodes // tp
    elif isinstance(devices, list | tuple):
        ranks = len(devices) * nodes // tp
    micro = (int(_plain(cfg.get("megatron")).get("num_microbatches", 1)) if megatron
             else int(trainer.get("accumulate_grad_batches", 1) or 1))
    tokens = data.get("batch_tokens")
    return TokenBudget(int(tokens) if tokens else None, ranks, micro, int(trainer.get("max_steps", -1)))
