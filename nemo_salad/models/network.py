"""The network a :class:`~nemo_salad.models.SaladModel` trains: encoder, adapter, student LLM and teacher.

It is the model's ``module``, the place where NeMo-2's ``MegatronStrategy`` expects a LightningModule's
network: the strategy's mixed-precision plugin wraps it in megatron's ``Float16Module`` (bf16 weights), megatron's
``DistributedDataParallel`` wraps that (gradient buffers for the distributed optimizer), and the optimizer is built
over ``model.module``. :class:`SaladModel` reaches the parts through those wrappers (``model.llm``, ...), so the
same code runs wrapped or not. Its state-dict keys are ``module.llm.*``, ``module.encoder.*``, ``module.adapter.*``
and ``module.teacher.*`` in every mode.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["SaladNetwork", "unwrap_network"]


class SaladNetwork(nn.Module):
    """Container of the trained parts. It has no ``forward``: :class:`SaladModel` runs the parts itself (the
    splice of speech into text and the fused distillation loss sit between them).

    Args:
        llm (MegatronLLM): the student LLM.
        encoder (nn.Module): the speech encoder (FastConformer).
        adapter (nn.Module): the modality adapter.
        teacher (MegatronLLM | None): a separate frozen teacher (``teacher.mode=copy``), else None.
    """

    def __init__(self, llm: nn.Module, encoder: nn.Module, adapter: nn.Module, teacher: nn.Module | None = None
                 ) -> None:
        super().__init__()
        self.llm, self.encoder, self.adapter, self.teacher = llm, encoder, adapter, teacher

    @property
    def config(self) -> Any:
        """The student's ``TransformerConfig`` (what megatron's wrappers and schedules read)."""
        return self.llm.gpt.config

    def set_input_tensor(self, input_tensor: Any) -> None:
        """megatron's schedule hands the previous pipeline stage's output here; with one stage it is None."""
        tensors = input_tensor if isinstance(input_tensor, list | tuple) else [input_tensor]
        if any(t is not None for t in tensors):
            raise ValueError("SaladModel does not support pipeline parallelism: got an input tensor from a "
                             "previous pipeline stage")

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: dict | None = None
                           ) -> dict[str, Any]:
        """Megatron distributed-checkpoint view (see :mod:`nemo_salad.checkpoint.distributed`)."""
        from nemo_salad.checkpoint.distributed import sharded_state_dict

        return sharded_state_dict(self, prefix, sharded_offsets, metadata)


def unwrap_network(module: nn.Module) -> SaladNetwork:
    """The :class:`SaladNetwork` inside megatron's ``DistributedDataParallel`` / ``Float16Module`` wrappers.

    Raises:
        TypeError: if there is none.
    """
    found = module
    while not isinstance(found, SaladNetwork):
        inner = found._modules.get("module") if isinstance(found, nn.Module) else None
        if inner is None:
            raise TypeError(f"no SaladNetwork inside {type(module).__name__}")
        found = inner
    return found
