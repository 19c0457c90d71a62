"""megatron-core parallel state for single-process use (tests, CPU demo) and under Lightning DDP.

megatron-core layers look up their tensor-parallel group at construction and in ``forward``. NeMo's
``MegatronStrategy`` sets this up on GPUs; everywhere else :func:`init_model_parallel` does, reusing the
process group that Lightning (or the caller) created, or a one-process gloo group over an in-memory store.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from nemo_salad.llm.cpu import ensure_cpu_support, seed_model_parallel_rng

__all__ = ["data_parallel_group", "init_model_parallel", "model_parallel_ready"]


def model_parallel_ready() -> bool:
    """True once megatron-core's model-parallel groups exist.

    >>> isinstance(model_parallel_ready(), bool)
    True
    """
    from megatron.core import parallel_state

    return dist.is_initialized() and parallel_state.model_parallel_is_initialized()


def data_parallel_group() -> Any:
    """megatron's data-parallel process group once its parallel state exists, else None (``torch.distributed``'s
    whole world, if any)."""
    from megatron.core import parallel_state

    return parallel_state.get_data_parallel_group() if parallel_state.model_parallel_is_initialized() else None


def init_model_parallel(tensor_model_parallel_size: int = 1, pipeline_model_parallel_size: int = 1,
                        seed: int = 1234) -> None:
    """Create megatron-core's parallel groups if they do not exist yet.

    Uses the existing ``torch.distributed`` process group when there is one (Lightning DDP, torchrun);
    otherwise creates a one-process group (gloo on CPU, nccl on GPU) over an in-memory store, which needs
    no network port.

    Args:
        tensor_model_parallel_size (int): TP size. Default: 1.
        pipeline_model_parallel_size (int): PP size. Default: 1.
        seed (int): seed for megatron's model-parallel RNG. Default: 1234.

    Raises:
        ValueError: if megatron is already initialised with other sizes, or the world size is not a
            multiple of TP × PP.

    >>> init_model_parallel()
    >>> model_parallel_ready()
    True
    """
    from megatron.core import parallel_state

    ensure_cpu_support()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    if parallel_state.model_parallel_is_initialized():
        have = (parallel_state.get_tensor_model_parallel_world_size(),
                parallel_state.get_pipeline_model_parallel_world_size())
        want = (tensor_model_parallel_size, pipeline_model_parallel_size)
        if have != want:
            raise ValueError(
                f"megatron-core parallel state already initialised with (TP, PP) = {have}, asked for {want}; "
                "call megatron.core.parallel_state.destroy_model_parallel() first"
            )
        return
    world = dist.get_world_size()
    if world % (tensor_model_parallel_size * pipeline_model_parallel_size):
        raise ValueError(
            f"world size {world} is not a multiple of tensor_model_parallel_size × pipeline_model_parallel_size "
            f"= {tensor_model_parallel_size} × {pipeline_model_parallel_size}"
        )
    parallel_state.initialize_model_parallel(tensor_model_parallel_size, pipeline_model_parallel_size)
    seed_model_parallel_rng(seed)
