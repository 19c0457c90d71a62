"""LoRA on megatron-core's parallel linear layers, attached without renaming the base weights.

Each adapted layer gets a ``lora`` submodule (``lora.a``: in → r, ``lora.b``: r → out, ``b`` initialised to 0)
and a forward hook that adds ``scale · b(a(x))`` to the layer's output. Base parameter names are unchanged
(``linear_qkv.weight`` stays ``linear_qkv.weight``), so Hugging Face export and the frozen teacher keep working,
and :func:`lora_disabled` gives back the original model exactly — the shared-weights teacher.

Tensor parallelism: for a column-parallel layer ``a`` is replicated and ``b`` holds this rank's output rows;
for a row-parallel layer ``a`` takes this rank's input slice and its output is summed over ranks before ``b``.
Megatron distributed checkpoints record exactly that: each adapted layer's ``sharded_state_dict`` marks ``b``
(column-parallel) or ``a`` (row-parallel) as split over tensor-parallel ranks, and ``b`` of a gated ``linear_fc1``
as ``[gate; up]`` like its base weight, so a checkpoint saved at one tensor-parallel size loads at another.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["LoRA", "apply_lora", "lora_disabled", "lora_parameters", "merge_lora"]

DEFAULT_TARGETS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")


class LoRA(nn.Module):
    """Low-rank update ``scale · b(a(x))`` for one linear layer.

    Args:
        in_features (int): input width seen by this rank.
        out_features (int): output width produced by this rank.
        rank (int): r. alpha (float): scale numerator (scale = alpha / r).
        row_parallel (bool): sum ``a(x)`` over tensor-parallel ranks before ``b``.

    >>> lora = LoRA(4, 6, rank=2, alpha=4.0)
    >>> lora(torch.randn(3, 4)).abs().sum().item()  # b starts at zero
    0.0
    """

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float, row_parallel: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.a = nn.Linear(in_features, rank, bias=False)
        self.b = nn.Linear(rank, out_features, bias=False)
        nn.init.kaiming_uniform_(self.a.weight, a=5 ** 0.5)
        nn.init.zeros_(self.b.weight)
        self.scale = alpha / rank
        self.row_parallel = row_parallel
        self.dropout = nn.Dropout(dropout)
        self.enabled = True
        self.gated = False  # b's rows are [gate; up] (a SwiGLU fc1), for distributed checkpoints

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in) → (..., out)``. Row-parallel: ``a``'s partial outputs are summed over ranks (forward).
        Column-parallel: ``a`` is replicated while ``b`` sees this rank's output rows only, so the gradient of
        ``a(x)`` is summed over ranks (backward) — otherwise ``a`` and everything before the layer would get
        this rank's share of the gradient alone."""
        from megatron.core.tensor_parallel import mappings

        h = self.a(self.dropout(x))
        if self.row_parallel:
            h = mappings.reduce_from_tensor_model_parallel_region(h)
        else:
            h = mappings.copy_to_tensor_model_parallel_region(h)
        return self.b(h) * self.scale


def _hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> Any:
    lora: LoRA = module.lora  # type: ignore[assignment]
    if not lora.enabled:
        return output
    out, bias = output
    return out + lora(inputs[0]).to(out.dtype), bias


def _sharded_state_dict_with_lora(self: nn.Module, prefix: str = "", sharded_offsets: tuple = (),
                                  metadata: dict | None = None) -> dict[str, Any]:
    """The layer's own sharded state dict with its LoRA weights split like the base weight.

    megatron-core's parallel linears mark every tensor other than their own ``weight``/``bias`` as replicated over
    tensor-parallel ranks; the LoRA factor that lives on this rank's output rows (``b``, column-parallel) or input
    columns (``a``, row-parallel) is not, and a replicated entry would silently keep rank 0's shard only.
    """
    from megatron.core.tensor_parallel.layers import RowParallelLinear
    from megatron.core.transformer.mlp import apply_swiglu_sharded_factory
    from megatron.core.utils import make_tp_sharded_tensor_for_checkpoint

    out = type(self).sharded_state_dict(self, prefix, sharded_offsets, metadata)
    lora: LoRA = self.lora  # type: ignore[assignment]
    part, axis = ("a", 1) if isinstance(self, RowParallelLinear) else ("b", 0)
    key = f"{prefix}lora.{part}.weight"
    sharded = make_tp_sharded_tensor_for_checkpoint(getattr(lora, part).weight, key, axis,
                                                    prepend_offsets=sharded_offsets)
    if lora.gated:
        sharded = apply_swiglu_sharded_factory(sharded, sharded_offsets)
    out[key] = sharded
    return out


def apply_lora(model: nn.Module, rank: int = 16, alpha: float = 32.0, targets: tuple[str, ...] = DEFAULT_TARGETS,
               dropout: float = 0.0) -> list[str]:
    """Freeze ``model`` and attach trainable LoRA to every megatron linear whose name ends with a target.

    Returns:
        list[str]: the names of the adapted layers.

    Raises:
        ValueError: if no layer matches ``targets`` (a typo would otherwise train nothing), or sequence
            parallelism is on.
    """
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

    model.requires_grad_(False)
    adapted = []
    for name, module in model.named_modules():
        if name.split(".")[-1] not in targets or not isinstance(module, (ColumnParallelLinear, RowParallelLinear)):
            continue
        if getattr(module.config, "sequence_parallel", False):
            raise ValueError("LoRA does not support sequence parallelism")
        row = isinstance(module, RowParallelLinear)
        in_f = module.input_size_per_partition if row else module.input_size
        out_f = module.output_size if row else module.output_size_per_partition
        module.lora = LoRA(in_f, out_f, rank, alpha, row_parallel=row, dropout=dropout).to(module.weight.device)
        module.lora.gated = name.endswith("linear_fc1") and bool(getattr(module.config, "gated_linear_unit", False))
        module._lora_hook = module.register_forward_hook(_hook)
        module.sharded_state_dict = types.MethodType(_sharded_state_dict_with_lora, module)
        adapted.append(name)
    if not adapted:
        raise ValueError(f"LoRA targets {targets} match no megatron linear layer of {type(model).__name__}")
    return adapted


def lora_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The trainable LoRA parameters of ``model``."""
    for module in model.modules():
        if isinstance(module, LoRA):
            yield from module.parameters()


@contextmanager
def lora_disabled(model: nn.Module) -> Iterator[None]:
    """Run ``model`` without its LoRA updates (the original weights) inside the block."""
    loras = [m for m in model.modules() if isinstance(m, LoRA)]
    states = [m.enabled for m in loras]
    for m in loras:
        m.enabled = False
    try:
        yield
    finally:
        for m, state in zip(loras, states):
            m.enabled = state


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA update into its base weight and remove the adapters (tensor parallel size 1).

    Returns:
        int: number of merged layers.
    """
    merged = 0
    for module in list(model.modules()):
        lora = getattr(module, "lora", None)
        if isinstance(lora, LoRA):
            module.weight += (lora.b.weight @ lora.a.weight * lora.scale).to(module.weight.dtype)
            lora.enabled = False
            module._lora_hook.remove()
            del module.lora, module._lora_hook
            module.__dict__.pop("sharded_state_dict", None)
            merged += 1
    return merged
