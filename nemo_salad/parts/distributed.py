"""Small ``torch.distributed`` helpers that work the same with or without a process group."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["sum_over_ranks"]


def sum_over_ranks(values: list[float], group: Any = None) -> list[float]:
    """``values`` summed over the ranks of ``group`` (float64); unchanged without ``torch.distributed`` or with one
    rank.

    Args:
        values (list[float]): this rank's numbers.
        group: the process group. Default: None (all ranks).

    Returns:
        list[float]: the element-wise sums, the same on every rank.

    >>> sum_over_ranks([1.0, 2.0])
    [1.0, 2.0]
    """
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size(group) == 1:
        return list(values)
    sums = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend(group) == "nccl":
        sums = sums.cuda()
    dist.all_reduce(sums, group=group)
    return sums.tolist()
