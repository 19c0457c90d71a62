"""Split full (unsharded) megatron-core weights for this tensor-parallel rank.

megatron-core marks every sharded parameter with ``tensor_model_parallel`` and ``partition_dim``: column-
parallel weights (QKV, fc1, the vocabulary-parallel embedding and output layer) split along dim 0, row-parallel
weights (attention output, fc2) along dim 1; norms are replicated. Two layouts need care:

* QKV rows are grouped per key/value head, so a contiguous split gives each rank whole groups — valid when the
  number of groups is a multiple of the tensor-parallel size (checked here);
* fc1 is ``[gate; up]``: rank ``r`` holds ``[gate_r; up_r]``, not the ``r``-th slice of the concatenation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["shard_full_state", "tp_rank_and_size"]


def tp_rank_and_size() -> tuple[int, int]:
    """This process's tensor-parallel rank and the group size (0, 1 without megatron parallel state)."""
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return 0, 1
    return parallel_state.get_tensor_model_parallel_rank(), parallel_state.get_tensor_model_parallel_world_size()


def shard_full_state(module: nn.Module, full: dict[str, Tensor], num_query_groups: int) -> dict[str, Tensor]:
    """The slice of each full tensor that this rank's copy of ``module`` holds.

    Args:
        module (nn.Module): the megatron ``GPTModel`` built for this rank.
        full (dict): full tensors under the same names.
        num_query_groups (int): key/value heads of the model (must divide evenly over ranks).

    Raises:
        ValueError: if a tensor does not split evenly, or KV groups do not divide by the tensor-parallel size.
    """
    rank, size = tp_rank_and_size()
    if size == 1:
        return dict(full)
    if num_query_groups % size:
        raise ValueError(f"{num_query_groups} key/value groups cannot be split over tensor_model_parallel_size={size}")
    params = dict(module.named_parameters())
    out = {}
    for name, tensor in full.items():
        param = params.get(name)
        if param is None or not getattr(param, "tensor_model_parallel", False):
            out[name] = tensor
            continue
        dim = param.partition_dim
        if tensor.shape[dim] % size:
            raise ValueError(f"{name}: dimension {dim} of size {tensor.shape[dim]} does not split over {size} ranks")
        if name.endswith("mlp.linear_fc1.weight"):
            gate, up = tensor.chunk(2, dim=0)
            out[name] = torch.cat([gate.chunk(size, dim=0)[rank], up.chunk(size, dim=0)[rank]], dim=0)
        else:
            out[name] = tensor.chunk(size, dim=dim)[rank].contiguous()
        if tuple(out[name].shape) != tuple(param.shape):
            raise ValueError(f"{name}: shard {tuple(out[name].shape)} does not match the parameter "
                             f"{tuple(param.shape)}")
    return out
